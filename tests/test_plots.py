"""Tests for oodbench.plots: PNG figures from a results folder."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oodbench.metrics import ood_metrics
from oodbench.plots import _load_scores, _read_metrics, _score_figure, plot_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REAL = Path(__file__).resolve().parents[1] / "results" / "fmnist"
ID_SET = "toy-id"
OOD = {"near-set": "near", "far-set": "far"}
SCORERS = ["msp", "energy"]
TRAININGS = ["ce", "bgnorm"]


def make_results(
    root: Path, failed: dict[tuple[str, str], str] | None = None, trainings: list[str] = TRAININGS
) -> Path:
    """Results folder with metrics.csv and scores/<training>-s<seed>.npz of random scores.

    `failed` maps (training, scorer) to a failure note: NaN metrics and no arrays in the npz.
    """
    failed = failed or {}
    rng = np.random.default_rng(0)
    rows = []
    for training in trainings:
        for seed in range(2):
            rows.append({"benchmark": "toy", "training": training, "seed": seed, "scorer": "",
                         "ood_set": "", "group": "", "metric": "id_acc", "value": 0.9,
                         "note": ""})
            arrays = {}
            for scorer in SCORERS:
                note = failed.get((training, scorer), "")
                sets = {ID_SET: rng.normal(1.0, 1.0, 300)} | {
                    name: rng.normal(-0.5 * (i + 1), 1.0, 200) for i, name in enumerate(OOD)
                }
                sets = {k: v.astype(np.float32) for k, v in sets.items()}
                if not note:
                    arrays |= {f"{scorer}/{k}": v for k, v in sets.items()}
                for name, group in OOD.items():
                    values = ood_metrics(sets[ID_SET], sets[name])
                    rows += [{"benchmark": "toy", "training": training, "seed": seed,
                              "scorer": scorer, "ood_set": name, "group": group, "metric": m,
                              "value": np.nan if note else v, "note": note}
                             for m, v in values.items()]
            (root / "scores").mkdir(parents=True, exist_ok=True)
            np.savez(root / "scores" / f"{training}-s{seed}.npz", **arrays)
    pd.DataFrame(rows).to_csv(root / "metrics.csv", index=False)
    return root


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= 400 and img.height >= 300


def test_plot_results_writes_one_hist_and_roc_per_scorer_and_delta(tmp_path):
    results = make_results(tmp_path / "toy")
    paths = plot_results(results)
    names = sorted(p.name for p in paths)
    expected = [f"{k}_{s}.png" for k in ("hist", "roc") for s in SCORERS] + ["delta_fpr95.png"]
    assert names == sorted(expected)
    assert all(p.parent == results / "plots" for p in paths)
    for p in paths:
        assert_png(p)
    assert not list((results / "plots").glob(".*.tmp"))


def test_failed_scorer_is_skipped(tmp_path):
    failed = {(t, "energy"): "ScorerFailed: singular covariance" for t in TRAININGS}
    failed[("bgnorm", "msp")] = "no logits"
    results = make_results(tmp_path / "toy", failed)
    out = tmp_path / "figs"
    names = sorted(p.name for p in plot_results(results, out, seed=1))
    # msp failed on one training only: its figures stay, with a note in that panel
    assert names == ["delta_fpr95.png", "hist_msp.png", "roc_msp.png"]
    for p in out.iterdir():
        assert_png(p)


def test_single_training_has_no_delta_and_missing_seed_raises(tmp_path):
    results = make_results(tmp_path / "toy", trainings=["ce"])
    names = {p.name for p in plot_results(results, tmp_path / "figs")}
    assert "delta_fpr95.png" not in names and "roc_msp.png" in names
    with pytest.raises(FileNotFoundError, match="seed 7"):
        plot_results(results, tmp_path / "figs", seed=7)


def test_roc_legend_auroc_matches_metrics_csv(tmp_path):
    results = make_results(tmp_path / "toy")
    df = _read_metrics(results / "metrics.csv")
    scores = {t: _load_scores(results / "scores" / f"{t}-s0.npz", SCORERS, OOD)
              for t in TRAININGS}
    fig = _score_figure("roc", "energy", scores, df, OOD, "title")
    for ax, training in zip(fig.axes, TRAININGS, strict=True):
        labels = ax.get_legend_handles_labels()[1]
        cell = df[(df["training"] == training) & (df["seed"] == 0) & (df["scorer"] == "energy")]
        for name in OOD:
            want = cell.loc[(cell["ood_set"] == name) & (cell["metric"] == "auroc"), "value"].item()
            label = next(lb for lb in labels if lb.startswith(name))
            assert label.endswith(f"AUROC {want * 100:.2f}")


@pytest.mark.skipif(not (REAL / "metrics.csv").is_file(), reason="no real results/fmnist")
def test_real_results_copy(tmp_path):
    results = tmp_path / "fmnist"
    shutil.copytree(REAL, results, ignore=shutil.ignore_patterns("plots"))
    paths = plot_results(results)
    scorers = pd.read_csv(results / "metrics.csv")["scorer"].dropna().unique()
    assert len(paths) == 2 * len(scorers) + 1
    for p in paths:
        assert_png(p)
