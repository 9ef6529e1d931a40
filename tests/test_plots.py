"""Tests for oodbench.plots: PNG figures from a results folder."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oodbench.errors import DataError, OutputError
from oodbench.metrics import ood_metrics
from oodbench.plots import (
    _delta_matrices,
    _geometry_figure,
    _geometry_summary_figure,
    _heatmap_figure,
    _load_scores,
    _norm_figure,
    _ood_sets,
    _score_figure,
    plot_results,
)
from oodbench.report import per_ood_table, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REAL = Path(__file__).resolve().parents[1] / "results" / "fmnist"
ID_SET = "toy-id"
OOD = {"near-set": "near", "far-set": "far"}
SCORERS = ["msp", "energy"]
TRAININGS = ["ce", "bgnorm"]


def make_results(
    root: Path, failed: dict[tuple[str, str], str] | None = None, trainings: list[str] = TRAININGS,
    featnorm: bool = True,
) -> Path:
    """Results folder with metrics.csv and scores/<training>-s<seed>.npz of random scores.

    `failed` maps (training, scorer) to a failure note: NaN metrics and no arrays in the npz.
    With `featnorm`, the npz also holds ``_featnorm/<set>`` norms (OOD smaller after bgnorm).
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
            if featnorm:
                shrink = 0.5 if training == "bgnorm" else 1.0
                arrays |= {f"_featnorm/{ID_SET}": rng.gamma(20.0, 0.5, 300).astype(np.float32)}
                arrays |= {f"_featnorm/{name}": rng.gamma(20.0, 0.4 * shrink, 200)
                           .astype(np.float32) for name in OOD}
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


DELTA_NAMES = ["delta_fpr95.png", "delta_fpr95_heatmap.png"]


def test_plot_results_writes_one_hist_and_roc_per_scorer_and_delta(tmp_path):
    results = make_results(tmp_path / "toy")
    paths = plot_results(results)
    names = sorted(p.name for p in paths)
    expected = [f"{k}_{s}.png" for k in ("hist", "roc") for s in SCORERS]
    assert names == sorted([*expected, *DELTA_NAMES, "feature_norms.png"])
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
    assert names == sorted([*DELTA_NAMES, "feature_norms.png", "hist_msp.png", "roc_msp.png"])
    for p in out.iterdir():
        assert_png(p)


def test_single_training_has_no_delta_and_missing_seed_raises(tmp_path):
    results = make_results(tmp_path / "toy", trainings=["ce"])
    names = {p.name for p in plot_results(results, tmp_path / "figs")}
    assert not names & set(DELTA_NAMES) and {"roc_msp.png", "feature_norms.png"} <= names
    with pytest.raises(DataError, match="seed 7"):
        plot_results(results, tmp_path / "figs", seed=7)


def test_roc_legend_auroc_matches_metrics_csv(tmp_path):
    results = make_results(tmp_path / "toy")
    df = read_metrics(results)
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


def test_without_featnorm_keys_no_feature_norm_figure(tmp_path):
    results = make_results(tmp_path / "toy", featnorm=False)
    names = {p.name for p in plot_results(results)}
    assert "feature_norms.png" not in names and set(DELTA_NAMES) <= names
    assert not (results / "plots" / "feature_norms.png").exists()


def test_feature_norm_panels_share_x_and_list_means(tmp_path):
    results = make_results(tmp_path / "toy")
    files = {t: results / "scores" / f"{t}-s0.npz" for t in TRAININGS}
    norms = {t: _load_scores(f, ["_featnorm"], OOD)["_featnorm"] for t, f in files.items()}
    fig = _norm_figure(norms, TRAININGS, OOD, "title")
    for ax, training in zip(fig.axes, TRAININGS, strict=True):
        with np.load(files[training]) as z:
            raw = {name: z[f"_featnorm/{name}"] for name in [ID_SET, *OOD]}
        want = [f"ID test: mean {raw[ID_SET].mean():.2f}"] + [
            f"{name} ({group}): mean {raw[name].mean():.2f}" for name, group in OOD.items()
        ]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == want
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()


def add_geometry(root: Path, trainings: list[str] = TRAININGS) -> pd.DataFrame:
    """Add ``_nn_dist/<set>`` and ``_logit_norm/<set>`` arrays to every scores file of
    :func:`make_results` (logit norms 10x larger under ce) and write its geometry.csv (scatter
    ratio and effective rank of two seeds); returns that frame."""
    rng = np.random.default_rng(1)
    sizes = {ID_SET: 300} | dict.fromkeys(OOD, 200)
    rows = []
    for training in trainings:
        for seed in range(2):
            path = root / "scores" / f"{training}-s{seed}.npz"
            with np.load(path) as z:
                arrays = dict(z)
            arrays |= {f"_nn_dist/{n}": rng.uniform(0.1, 0.6 if n == ID_SET else 0.9, size)
                       for n, size in sizes.items()}
            arrays |= {f"_logit_norm/{n}": rng.gamma(5.0, 10.0 if training == "ce" else 1.0,
                                                     size) for n, size in sizes.items()}
            np.savez(path, **arrays)
            rows += [{"benchmark": "toy", "training": training, "seed": seed, "quantity": q,
                      "set": ID_SET, "value": v}
                     for q, v in (("scatter_ratio", 0.5 + 0.1 * seed + (training == "ce")),
                                  ("effective_rank", 10.0 + seed))]
    geometry = pd.DataFrame(rows)
    geometry.to_csv(root / "geometry.csv", index=False)
    return geometry


def test_geometry_figures(tmp_path):
    results = make_results(tmp_path / "toy")
    geometry = add_geometry(results)
    names = {p.name for p in plot_results(results)}
    assert {"geometry.png", "geometry_summary.png", "feature_norms.png"} <= names
    files = {t: results / "scores" / f"{t}-s0.npz" for t in TRAININGS}
    loaded = {t: _load_scores(f, ["_nn_dist", "_logit_norm"], OOD) for t, f in files.items()}
    fig = _geometry_figure({t: s["_nn_dist"] for t, s in loaded.items()},
                           {t: s["_logit_norm"] for t, s in loaded.items()}, TRAININGS, OOD, "t")
    top, bottom = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in top] == ["CE", "BG-norm"]
    assert top[0].get_xlim() == top[1].get_xlim()  # one normalised space
    assert bottom[0].get_xlim()[1] > 5 * bottom[1].get_xlim()[1]  # each its own range
    # the summary: per training, the bar is the mean over seeds and the points the seeds
    fig = _geometry_summary_figure(geometry, TRAININGS, "t")
    for ax, quantity in zip(fig.axes, ["scatter_ratio", "effective_rank"], strict=True):
        for i, training in enumerate(TRAININGS):
            want = geometry[(geometry.quantity == quantity) & (geometry.training == training)]
            assert ax.patches[i].get_height() == pytest.approx(want.value.mean())
            points = ax.collections[i].get_offsets()[:, 1]
            np.testing.assert_allclose(points, want.sort_values("seed").value)


def test_heatmap_numbers_match_per_ood_table(tmp_path):
    failed = {("bgnorm", "energy"): "ScorerFailed: singular covariance"}
    results = make_results(tmp_path / "toy", failed, trainings=["ce", "bgnorm", "logitnorm"])
    df = read_metrics(results)
    table = per_ood_table(df, "fpr95")
    assert table.attrs["baseline"] == "ce"  # the first training
    deltas = _delta_matrices(table)
    assert list(deltas) == ["BG-norm", "LogitNorm"]
    for label, matrix in deltas.items():
        assert list(matrix.index) == SCORERS and list(matrix.columns) == list(OOD)
        for name in OOD:
            want = table.attrs["mean"][(name, f"Δ {label}")] * 100
            np.testing.assert_array_equal(matrix[name].to_numpy(), want.to_numpy())
    assert deltas["BG-norm"].loc["energy"].isna().all()
    assert deltas["LogitNorm"].notna().all().all()
    fig = _heatmap_figure(df, "toy", _ood_sets(df))
    panels = [ax for ax in fig.axes if ax.get_title()]  # the colorbar axis has no title
    assert [ax.get_title() for ax in panels] == ["BG-norm − CE", "LogitNorm − CE"]
    for ax, matrix in zip(panels, deltas.values(), strict=True):
        shown = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
                 for t in ax.texts}
        for (i, j), v in np.ndenumerate(matrix.to_numpy()):
            want = "failed" if np.isnan(v) else f"{v:+.1f}".replace("-", "−")
            assert shown[(i, j)] == want
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [f"{n} ({g})" for n, g in OOD.items()]


@pytest.mark.skipif(not (REAL / "metrics.csv").is_file(), reason="no real results/fmnist")
def test_real_results_copy(tmp_path):
    results = tmp_path / "fmnist"
    shutil.copytree(REAL, results, ignore=shutil.ignore_patterns("plots"))
    paths = plot_results(results)
    scorers = pd.read_csv(results / "metrics.csv")["scorer"].dropna().unique()
    with np.load(results / "scores" / "ce-s0.npz") as z:
        has_norms = any(k.startswith("_featnorm/") for k in z.files)
        has_geometry = any(k.startswith("_nn_dist/") for k in z.files)
    # geometry.png and geometry_summary.png where the run measured the feature geometry
    assert len(paths) == 2 * len(scorers) + 2 + has_norms + 2 * has_geometry
    for p in paths:
        assert_png(p)


def test_a_plots_folder_is_replaced_whole(tmp_path: Path) -> None:
    results = make_results(tmp_path / "r", trainings=["ce"])
    out = tmp_path / "figs"
    out.mkdir()
    (out / "hist_gone.png").write_bytes(b"an earlier call's figure")
    written = plot_results(results, out)
    assert not (out / "hist_gone.png").exists()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in written)
    with pytest.raises(OutputError, match="contains the results folder"):
        plot_results(results, tmp_path)
    with pytest.raises(OutputError, match=r"did not write there \(ce-s0.npz"):
        plot_results(results, results / "scores")
