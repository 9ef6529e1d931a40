"""End to end on a tiny config: train, extract (cached), score, metrics, reports, CLI."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from oodbench import scoring
from oodbench.check import load_benchmark
from oodbench.checkpoint import load_checkpoint
from oodbench.cli import main
from oodbench.train import Trainer
from oodbench.weights import read_checkpoint


def _run(tb: SimpleNamespace, *extra: str) -> int:
    return main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                 str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), *extra])


def test_bgnorm_lowers_the_background_norm(tiny_bench: SimpleNamespace) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
    ce = read_checkpoint(trainer.ensure("ce", 0))[1]
    bg = read_checkpoint(trainer.ensure("bgnorm", 0))[1]
    assert ce["test_acc"] > 0.5 and bg["test_acc"] > 0.5
    assert bg["diagnostics"]["bg_norm_test"] < 0.8 * ce["diagnostics"]["bg_norm_test"]


def test_training_is_deterministic_and_reused(tiny_bench: SimpleNamespace) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    a = Trainer(bench, tiny_bench.runs / "a", tiny_bench.root, "cpu").ensure("ce", 0)
    b = Trainer(bench, tiny_bench.runs / "b", tiny_bench.root, "cpu").ensure("ce", 0)
    sa, sb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    mtime = a.stat().st_mtime_ns
    assert Trainer(bench, tiny_bench.runs / "a", tiny_bench.root, "cpu").ensure("ce", 0) == a
    assert a.stat().st_mtime_ns == mtime


def test_run_writes_results_and_reuses_the_cache(tiny_bench: SimpleNamespace) -> None:
    assert _run(tiny_bench) == 0
    out = tiny_bench.out / "tiny"
    df = pd.read_csv(out / "metrics.csv")
    assert list(df.columns[:8]) == ["benchmark", "training", "seed", "scorer", "ood_set",
                                    "group", "metric", "value"]
    acc = df[df.metric == "id_acc"]
    assert len(acc) == 2 and acc.scorer.isna().all() and acc.ood_set.isna().all()
    assert set(df.scorer.dropna()) == {"msp", "energy", "react", "ash", "knn", "mahalanobis"}
    assert set(df.ood_set.dropna()) == {"mnist", "uniform-noise"}
    for name in ("compat.md", "compat_fpr95.tex", "compat_auroc.tex", "manifest.json"):
        assert (out / name).is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "cifar10-gray" in manifest["skipped_ood_sets"]
    assert manifest["cache"]["misses"] > 0

    # every AUROC in metrics.csv is recomputable from the saved per-sample scores
    for training in ("ce", "bgnorm"):
        with np.load(out / "scores" / f"{training}-s0.npz") as z:
            for _, row in df[(df.training == training) & (df.metric == "auroc")].iterrows():
                id_s, ood_s = z[f"{row.scorer}/fashion-mnist"], z[f"{row.scorer}/{row.ood_set}"]
                y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
                assert roc_auc_score(y, np.r_[id_s, ood_s]) == pytest.approx(row.value, abs=1e-6)

    # the feature geometry: per-sample diagnostics beside the scores, geometry.csv, its plots
    geo = pd.read_csv(out / "geometry.csv")
    assert list(geo.columns) == ["benchmark", "training", "seed", "quantity", "set", "value"]
    assert "geometry.csv" in manifest["files"]
    for training in ("ce", "bgnorm"):
        cell = geo[geo.training == training].set_index(["quantity", "set"]).value
        assert cell["scatter_ratio", "fashion-mnist"] == pytest.approx(
            cell["within_scatter", "fashion-mnist"] / cell["between_scatter", "fashion-mnist"])
        assert 1 <= cell["effective_rank", "fashion-mnist"] <= 64
        with np.load(out / "scores" / f"{training}-s0.npz") as z:
            for name in ("fashion-mnist", "mnist", "uniform-noise"):
                nn = z[f"_nn_dist/{name}"]
                assert (nn <= -z[f"knn/{name}"] + 1e-5).all()  # k = 1 in knn's space
                assert cell["nn_dist_median", name] == pytest.approx(np.median(nn))
                assert cell["logit_norm_q95", name] == pytest.approx(
                    np.quantile(z[f"_logit_norm/{name}"], 0.95))
    assert {"geometry.png", "geometry_summary.png"} <= {p.name for p in (out / "plots").iterdir()}

    # second run: nothing retrained or re-scored (every train and eval job is done), no
    # forward pass
    assert _run(tiny_bench) == 0
    manifest2 = json.loads((out / "manifest.json").read_text())
    assert manifest2["cache"] == {"hits": 0, "misses": 0}
    assert len(manifest2["jobs"]) == 4 and not any(j["ran"] for j in manifest2["jobs"])
    df2 = pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(df, df2)
    pd.testing.assert_frame_equal(geo, pd.read_csv(out / "geometry.csv"))

    # tables re-render from results/ alone
    for fmt in ("md", "latex", "csv", "terminal"):
        assert main(["table", "--benchmark", "tiny", "--results", str(tiny_bench.out),
                     "--format", fmt]) == 0


def test_a_failing_scorer_does_not_stop_the_run(
    tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scoring.SCORERS.scoped():

        @scoring.register_scorer("always-nan")
        class AlwaysNaN(scoring.Scorer):
            def score(self, data: scoring.Features) -> np.ndarray:
                return np.full(len(data), np.nan)

        assert _run(tiny_bench, "--scorers", "energy,always-nan") == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    bad = df[df.scorer == "always-nan"]
    assert bad.value.isna().all() and bad.note.str.contains("NaN").all()
    assert df[df.scorer == "energy"].value.notna().all()
    assert "failed" in (tiny_bench.out / "tiny" / "compat.md").read_text()


def test_eval_scores_a_plain_state_dict(tiny_bench: SimpleNamespace) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    path = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu").ensure("ce", 0)
    model, _ = load_checkpoint(path)
    plain = tiny_bench.runs / "plain.pt"
    torch.save(model.state_dict(), plain)
    out = tiny_bench.out / "eval"
    assert main(["eval", "--benchmark", "tiny", "--config", str(tiny_bench.config),
                 "--checkpoint", str(plain), "--arch", "resnet8", "--num-classes", "10",
                 "--data-root", str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs),
                 "--out", str(out), "--scorers", "msp,knn"]) == 0
    df = pd.read_csv(out / "eval-plain" / "metrics.csv")
    assert set(df.scorer.dropna()) == {"msp", "knn"}
    assert df.value.notna().all()


def test_extra_ood_folder_gets_its_own_rows(
    tiny_bench: SimpleNamespace, tmp_path: Path
) -> None:
    from tests.conftest import random_images, write_image_folder

    folder = tmp_path / "mine"
    write_image_folder(folder, {"a": random_images(12, 28, 28, 3, 3)})
    assert _run(tiny_bench, "--scorers", "msp", "--extra-ood", f"mine={folder}") == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    assert set(df[df.ood_set == "mine"].group) == {"extra"}


def test_cli_reports_errors_clearly(tiny_bench: SimpleNamespace, capsys) -> None:
    assert main(["run", "--benchmark", "nope", "--config", str(tiny_bench.config)]) == 1
    assert "available: tiny" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert _run(tiny_bench, "--device", "cuda") == 1
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_extra_ood_from_the_config_table(tiny_bench: SimpleNamespace, tmp_path: Path) -> None:
    from tests.conftest import random_images, write_npz

    write_npz(tmp_path / "mine.npz", images=random_images(10, 28, 28, 1, 4))
    tiny_bench.config.write_text(tiny_bench.config.read_text() + (
        '\n[[benchmarks.tiny.extra_ood]]\nname = "mine"\npath = "mine.npz"\ngroup = "far"\n'))
    assert _run(tiny_bench, "--scorers", "energy") == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    assert set(df[df.ood_set == "mine"].group) == {"far"}
