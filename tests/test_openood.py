"""OpenOOD v1.5's protocol: `table --protocol openood-v1.5` computes every cell as OpenOOD's
evaluator does (checked against a copy of its formulas, ties included) with its rows, columns,
file names and cell format; the presets take OpenOOD's postprocessor settings and fit splits,
and a setting that cannot work is refused by name."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from oodbench import plugins
from oodbench.check import check_benchmark, load_benchmark, load_config
from oodbench.cli import main
from oodbench.config import ConfigError
from oodbench.errors import DataError, OutputError
from oodbench.fileio import record_files
from oodbench.metrics import COLUMNS, OOD_METRICS, ood_metrics
from oodbench.openood import (
    ACC,
    LONG_FILE,
    MANIFEST_KEY,
    METRICS,
    OPENOOD_V15,
    POSTPROCESSORS,
    openood_cells,
    openood_frame,
    openood_long,
    openood_metrics,
    openood_table,
    seed_frames,
    write_openood_csvs,
)
from oodbench.pipeline import ablate_benchmark
from oodbench.report import check_results, export_protocol, read_metrics
from tests.conftest import write_tiny_bench

SETS = {"cifar10": "near", "tin": "near", "mnist": "far", "svhn": "far", "noise": "sanity",
        "imagenet_c": "csid"}
ROWS = ["cifar10", "tin", "nearood", "mnist", "svhn", "farood"]
# two tied groups of 2 ID + 1 OOD on top: sklearn's default drop_intermediate drops the ROC
# point at TPR 0.95 (OpenOOD's FPR@95: 1.0), which oodbench's fpr95_oodpos keeps (0.5)
TIED_ID = np.array([4.0, 4.0, 5.0, 5.0])
TIED_OOD = np.array([0.0] * 18 + [4.0, 5.0])


# ---------------------------------------------------------------- OpenOOD's code, copied


def _auc_and_fpr_recall(conf: np.ndarray, label: np.ndarray,
                        tpr_th: float) -> tuple[float, float, float, float]:
    """openood/evaluators/metrics.py (v1.5), as it is there."""
    ood_indicator = np.zeros_like(label)
    ood_indicator[label == -1] = 1
    fpr_list, tpr_list, _ = metrics.roc_curve(ood_indicator, -conf)
    fpr = fpr_list[np.argmax(tpr_list >= tpr_th)]
    precision_in, recall_in, _ = metrics.precision_recall_curve(1 - ood_indicator, conf)
    precision_out, recall_out, _ = metrics.precision_recall_curve(ood_indicator, -conf)
    auroc = metrics.auc(fpr_list, tpr_list)
    aupr_in = metrics.auc(recall_in, precision_in)
    aupr_out = metrics.auc(recall_out, precision_out)
    return auroc, aupr_in, aupr_out, fpr


def _compute_all_metrics(id_conf: np.ndarray, ood_conf: np.ndarray) -> list[float]:
    """``compute_all_metrics`` on ID (labels 0) and OOD (labels -1) confidences, as
    ``Evaluator._eval_ood`` calls it; accuracy is overwritten by the ID accuracy there."""
    conf = np.concatenate([id_conf, ood_conf])
    label = np.concatenate([np.zeros(len(id_conf), dtype=int), -np.ones(len(ood_conf), dtype=int)])
    auroc, aupr_in, aupr_out, fpr = _auc_and_fpr_recall(conf, label, 0.95)
    return [fpr, auroc, aupr_in, aupr_out, 0.0]


def _eval_ood(id_conf: np.ndarray, oods: list[np.ndarray]) -> np.ndarray:
    """``Evaluator._eval_ood``: per set, then the mean row, then everything x 100."""
    metrics_list = np.array([_compute_all_metrics(id_conf, o) for o in oods])
    metrics_mean = np.mean(metrics_list, axis=0, keepdims=True)
    return np.concatenate([metrics_list, metrics_mean], axis=0) * 100


def _openood_csv(per_seed: list[tuple[np.ndarray, list[np.ndarray], list[np.ndarray], float]]
                 ) -> list[list[str]]:
    """``Evaluator.eval_ood`` per seed (near rows, far rows, ACC in every row), then
    ``scripts/eval_ood.py``'s mean and std over seeds, formatted."""
    tables = []
    for id_conf, near, far, acc in per_seed:
        near_metrics, far_metrics = _eval_ood(id_conf, near), _eval_ood(id_conf, far)
        near_metrics[:, -1] = np.array([acc] * len(near_metrics))
        far_metrics[:, -1] = np.array([acc] * len(far_metrics))
        tables.append(np.concatenate([near_metrics, far_metrics], axis=0))
    all_metrics = np.stack(tables, axis=0)
    mean, std = np.mean(all_metrics, axis=0), np.std(all_metrics, axis=0)
    return [[f"{mean[i, j]:.2f} \u00b1 {std[i, j]:.2f}" for j in range(mean.shape[1])]
            for i in range(len(mean))]


# ---------------------------------------------------------------- the formulas


def test_each_metric_is_openoods_on_tied_scores() -> None:
    rng = np.random.default_rng(3)
    cases = [(TIED_ID, TIED_OOD),
             (rng.integers(0, 6, 50).astype(float), rng.integers(0, 4, 70).astype(float)),
             (rng.normal(1, 1, 300), rng.normal(0, 1, 200))]
    for ids, oods in cases:
        auroc, aupr_in, aupr_out, fpr = _auc_and_fpr_recall(
            np.concatenate([ids, oods]),
            np.concatenate([np.zeros(len(ids), dtype=int), -np.ones(len(oods), dtype=int)]),
            0.95)
        got = openood_metrics(ids, oods)
        assert list(got) == list(METRICS)
        assert list(got.values()) == [fpr, auroc, aupr_in, aupr_out]  # to the last bit
    # the ties make OpenOOD's numbers differ from oodbench's own conventions
    ours, theirs = ood_metrics(TIED_ID, TIED_OOD), openood_metrics(TIED_ID, TIED_OOD)
    assert (theirs["FPR@95"], ours["fpr95_oodpos"]) == (1.0, 0.5)
    assert theirs["AUPR_IN"] == 0.75 and ours["aupr_in"] == pytest.approx(2 / 3)
    assert theirs["AUPR_OUT"] != pytest.approx(ours["aupr_out"], abs=1e-4)


# ---------------------------------------------------------------- a results folder


def _scores(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    """Scores rounded to one decimal: plenty of ties."""
    return np.round(rng.normal(shift, 1.0, n), 1)


def _results(tmp_path: Path, seeds: int = 2, trainings: tuple[str, ...] = ("ce",),
             scorers: tuple[str, ...] = ("energy", "mahalanobis", "maxlogit", "ash-map"),
             manifest: dict | None = None) -> tuple[Path, dict]:
    """A results folder ``tmp_path/results/b`` (metrics.csv: oodbench's metrics of its scores
    files; a manifest hashing both). ``energy`` has the tied scores on ``tin``;
    ``mahalanobis`` failed on ``svhn`` in seed 1 (NaN rows, no scores). Returns the folder
    and, by (training, seed), the scores and the ID accuracy."""
    folder = tmp_path / "results" / "b"
    (folder / "scores").mkdir(parents=True)
    rng = np.random.default_rng(7)
    rows, kept = [], {}
    for training in trainings:
        for seed in range(seeds):
            acc = 0.9 + 0.0123 * seed
            rows.append(("b", training, seed, "", "", "", "id_acc", acc, ""))
            scores = {}
            for scorer in scorers:
                tied = scorer == "energy"
                id_scores = TIED_ID if tied else _scores(rng, 80, 1.0)
                scores[f"{scorer}/fashion-mnist"] = id_scores
                for name, group in SETS.items():
                    if scorer == "mahalanobis" and name == "svhn" and seed == 1:
                        values, note = dict.fromkeys(OOD_METRICS, np.nan), "failed: no"
                    else:
                        ood = TIED_OOD if tied and name == "tin" else _scores(
                            rng, 60 + 10 * seed, 0.0)
                        scores[f"{scorer}/{name}"] = ood
                        values, note = ood_metrics(id_scores, ood), ""
                    rows += [("b", training, seed, scorer, name, group, m, v, note)
                             for m, v in values.items()]
            np.savez(folder / "scores" / f"{training}-s{seed}.npz", **scores)
            kept[training, seed] = (scores, acc)
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(folder / "metrics.csv", index=False)
    files = ["metrics.csv", *sorted(f"scores/{p.name}" for p in (folder / "scores").iterdir())]
    (folder / "manifest.json").write_text(json.dumps(
        {**(manifest or {}), "files": record_files(folder, files)}))
    return folder, kept


def _expected(kept: dict, training: str, scorer: str, seeds: int = 2) -> list[list[str]]:
    """OpenOOD's CSV cells of one training and scorer of :func:`_results` (every seed has
    every set)."""
    near = [n for n, g in SETS.items() if g == "near"]
    far = [n for n, g in SETS.items() if g == "far"]
    per_seed = []
    for seed in range(seeds):
        scores, acc = kept[training, seed]
        per_seed.append((scores[f"{scorer}/fashion-mnist"],
                         [scores[f"{scorer}/{n}"] for n in near],
                         [scores[f"{scorer}/{n}"] for n in far], acc * 100))
    return _openood_csv(per_seed)


def test_the_csvs_are_openoods_evaluator_cell_for_cell(tmp_path: Path) -> None:
    folder, kept = _results(tmp_path)
    with pytest.warns(UserWarning, match=r"no postprocessor for ash-map: their files keep"):
        paths = export_protocol(folder, OPENOOD_V15)
    out = folder / "openood"
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "ce/ood/ash-map.csv", "ce/ood/ebo.csv", "ce/ood/mds.csv", "ce/ood/mls.csv", LONG_FILE]
    for scorer, name in (("energy", "ebo"), ("maxlogit", "mls"), ("ash-map", "ash-map")):
        raw = (out / "ce" / "ood" / f"{name}.csv").read_text(encoding="utf-8")
        assert raw.splitlines()[0] == ",FPR@95,AUROC,AUPR_IN,AUPR_OUT,ACC"
        table = pd.read_csv(out / "ce" / "ood" / f"{name}.csv", index_col=0, dtype=str)
        assert list(table.index) == ROWS
        assert table.to_numpy().tolist() == _expected(kept, "ce", scorer)
    ebo = pd.read_csv(out / "ce" / "ood" / "ebo.csv", index_col=0)
    assert ebo.loc["tin", "FPR@95"] == "100.00 ± 0.00"  # the tie, as OpenOOD counts it
    mds = pd.read_csv(out / "ce" / "ood" / "mds.csv", index_col=0)
    assert (mds.loc[["svhn", "farood"], "AUROC"] == "failed").all()
    long = pd.read_csv(paths[-1])
    assert set(long.loc[long.scorer == "energy", "postprocessor"]) == {"ebo"}
    assert long.loc[long.scorer == "ash-map", "postprocessor"].isna().all()


def test_means_are_taken_before_the_x100(tmp_path: Path) -> None:
    """OpenOOD averages the fractions, then multiplies by 100: the frame equals that to the
    last bit, and the other order differs in some cell."""
    folder, kept = _results(tmp_path, seeds=1, scorers=("maxlogit",))
    cells = openood_cells(read_metrics(folder), folder)
    frame = seed_frames(cells, "ce", "maxlogit")[0]
    scores, acc = kept["ce", 0]
    near = [scores[f"maxlogit/{n}"] for n in ("cifar10", "tin")]
    far = [scores[f"maxlogit/{n}"] for n in ("mnist", "svhn")]
    expected = np.concatenate([_eval_ood(scores["maxlogit/fashion-mnist"], near),
                               _eval_ood(scores["maxlogit/fashion-mnist"], far)])
    assert (frame.to_numpy()[:, :-1] == expected[:, :-1]).all()
    assert (frame["ACC"] == acc * 100).all()
    per_set = frame.drop(index=["nearood", "farood"]).to_numpy()[:, :-1]
    other_order = np.concatenate([per_set[:2].mean(axis=0), per_set[2:].mean(axis=0)])
    assert (other_order != frame.loc[["nearood", "farood"]].to_numpy()[:, :-1].ravel()).any()


def test_a_folder_without_its_scores_is_refused(tmp_path: Path) -> None:
    folder, _ = _results(tmp_path, seeds=1, scorers=("msp",))
    (folder / "scores" / "ce-s0.npz").unlink()
    (folder / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"ce-s0\.npz not found: OpenOOD's metrics are computed"):
        write_openood_csvs(read_metrics(folder), folder, tmp_path / "o")


def test_other_settings_than_openoods_are_warned_about(tmp_path: Path) -> None:
    manifest = {"config": {"scorer_fit": {}},
                "scorer_params": {"ce-s0": {"energy": {"temperature": 1.0},
                                            "mahalanobis": {"chunk_size": 1024}}}}
    folder, _ = _results(tmp_path, seeds=1, scorers=("energy", "mahalanobis"),
                         manifest=manifest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_protocol(folder, OPENOOD_V15)
    assert not caught, [str(w.message) for w in caught]
    manifest["scorer_params"]["ce-s0"] = {"ash": {"variant": "s", "percentile": 90.0},
                                          "react": {"percentile": 90.0}}
    folder, _ = _results(tmp_path / "2", seeds=1, scorers=("ash", "react"), manifest=manifest)
    with pytest.warns(UserWarning, match=r"ash: variant = 's' \(OpenOOD: 'b'\); react: "
                      r"fitted on ID-train \(OpenOOD: ID-val\)"):
        export_protocol(folder, OPENOOD_V15)


# ---------------------------------------------------------------- rows, columns, format


def _cells(seeds: int = 2) -> pd.DataFrame:
    """An :func:`~oodbench.openood.openood_cells` frame of random fractions."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for training in ("ce", "bgnorm"):
            rows.append(("b", training, seed, "", "", "", ACC, 0.9 + 0.01 * seed, ""))
            for scorer in ("msp", "knn"):
                for name, group in SETS.items():
                    for metric in METRICS:
                        rows.append(("b", training, seed, scorer, name, group, metric,
                                     float(rng.uniform(0.1, 0.9)), ""))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_rows_columns_and_means_follow_openood() -> None:
    cells = _cells()
    frames = seed_frames(cells, "ce", "msp")
    table = frames[0]
    assert list(table.index) == ROWS
    assert list(table.columns) == ["FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC"]
    here = cells[(cells.training == "ce") & (cells.seed == 0) & (cells.scorer == "msp")]

    def value(name: str, metric: str) -> float:
        return float(here[(here.ood_set == name) & (here.metric == metric)].value.iloc[0])

    assert table.loc["tin", "FPR@95"] == 100 * value("tin", "FPR@95")
    assert table.loc["nearood", "AUROC"] == (value("cifar10", "AUROC")
                                             + value("tin", "AUROC")) / 2 * 100
    assert table.loc["farood", "AUPR_OUT"] == pytest.approx(
        50 * (value("mnist", "AUPR_OUT") + value("svhn", "AUPR_OUT")))
    # ACC is the ID accuracy in every row, mean rows included
    assert (table["ACC"] == 90.0).all() and np.allclose(frames[1]["ACC"], 91.0)
    text = openood_table(cells, "ce", "msp")
    both = np.array([frames[0].loc["svhn", "AUROC"], frames[1].loc["svhn", "AUROC"]])
    assert text.loc["svhn", "AUROC"] == f"{both.mean():.2f} \u00b1 {both.std():.2f}"
    assert text.loc["svhn", "ACC"] == "90.50 \u00b1 0.50"


def test_openood_frame_is_one_seed_or_the_seed_mean() -> None:
    cells = _cells(3)
    frames = seed_frames(cells, "bgnorm", "knn")
    stacked = np.stack([f.to_numpy() for f in frames.values()])
    mean = openood_frame(cells, "bgnorm", "knn")
    assert list(mean.index) == ROWS
    assert np.allclose(mean.to_numpy(), stacked.mean(axis=0))
    assert np.allclose(openood_frame(cells, "bgnorm", "knn", std=True).to_numpy(),
                       stacked.std(axis=0))  # population std, as OpenOOD's np.std
    assert np.allclose(openood_frame(cells, "bgnorm", "knn", seed=2).to_numpy(), stacked[2])
    with pytest.raises(DataError, match="no seed 7"):
        openood_frame(cells, "bgnorm", "knn", seed=7)


def test_a_failed_cell_reads_failed_and_a_missing_one_a_dash() -> None:
    cells = _cells(2)
    cells.loc[(cells.scorer == "knn") & (cells.ood_set == "mnist") & (cells.metric == "AUROC"),
              "value"] = np.nan
    text = openood_table(cells, "ce", "knn")
    assert text.loc["mnist", "AUROC"] == "failed" and text.loc["farood", "AUROC"] == "failed"
    assert text.loc["svhn", "AUROC"] != "failed"
    # seed 1 of ce lacks svhn for msp: its cells and the far mean are missing, not failed
    gone = ((cells.training == "ce") & (cells.seed == 1) & (cells.scorer == "msp")
            & (cells.ood_set == "svhn"))
    text = openood_table(cells[~gone], "ce", "msp")
    assert list(text.index) == ROWS
    assert (text.loc[["svhn", "farood"], "AUROC"] == "\u2014").all()
    assert text.loc["mnist", "AUROC"] not in ("failed", "\u2014")


def test_only_near_and_far_enter(tmp_path: Path) -> None:
    cells = _cells(1)
    assert not set(openood_frame(cells, "ce", "msp").index) & {"noise", "imagenet_c"}
    far_only = cells[cells.group != "near"]
    assert list(openood_frame(far_only, "ce", "msp").index) == ["mnist", "svhn", "farood"]
    folder, _ = _results(tmp_path, seeds=1, scorers=("msp",))
    df = pd.read_csv(folder / "metrics.csv")
    df.loc[df.group.isin(["near", "far"]), "group"] = "extra"
    df.to_csv(folder / "metrics.csv", index=False)
    (folder / "manifest.json").unlink()
    with pytest.raises(DataError, match="near- or far-OOD"):
        write_openood_csvs(read_metrics(folder), folder, tmp_path / "unused")


def test_long_csv_holds_every_table() -> None:
    cells = _cells(2)
    long = openood_long(cells)
    assert len(long) == 2 * 2 * len(ROWS) * 5  # trainings x scorers x rows x columns
    row = long[(long.training == "bgnorm") & (long.scorer == "msp") &
               (long.dataset == "farood") & (long.column == "AUROC")]
    assert row["group"].item() == "far" and row["n_seeds"].item() == 2
    assert row["postprocessor"].item() == "msp"
    assert row["mean"].item() == openood_frame(cells, "bgnorm", "msp").at["farood", "AUROC"]


def test_cli_writes_one_csv_per_training_and_scorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = _results(tmp_path, trainings=("ce", "bgnorm"), scorers=("msp", "knn"))
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "b",
                 "--protocol", OPENOOD_V15, "--json"]) == 0
    paths = [Path(p) for p in json.loads(capsys.readouterr().out)]
    assert sorted(p.relative_to(folder / "openood").as_posix() for p in paths) == [
        "bgnorm/ood/knn.csv", "bgnorm/ood/msp.csv", "ce/ood/knn.csv", "ce/ood/msp.csv",
        LONG_FILE]
    assert all(p.is_file() for p in paths)
    read = pd.read_csv(folder / "openood" / "ce" / "ood" / "msp.csv", index_col=0)
    assert list(read.index) == ROWS
    assert read.loc["nearood", "ACC"] == "90.62 \u00b1 0.62"
    # the folder still passes its manifest check: the new files are not recorded ones
    check_results(folder)
    read_metrics(folder)
    # plain output: one path per line; --out elsewhere
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "b",
                 "--protocol", OPENOOD_V15, "--out", str(tmp_path / "elsewhere")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(Path(p).is_file() for p in lines)
    assert all(Path(p).is_relative_to(tmp_path / "elsewhere") for p in lines)
    with pytest.raises(ConfigError, match="not a known protocol"):
        export_protocol(folder, "openood-v2")
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "b",
                 "--protocol", "openood-v2"]) == 1
    assert "--protocol openood-v2" in capsys.readouterr().err


def test_a_folder_not_matching_its_manifest_is_refused(tmp_path: Path) -> None:
    folder, _ = _results(tmp_path, seeds=1, scorers=("msp",))
    with (folder / "metrics.csv").open("a") as f:
        f.write("b,ce,0,msp,tin,near,auroc,0.5,\n")
    with pytest.raises(OutputError, match="differs"):
        export_protocol(folder, OPENOOD_V15)
    assert not (folder / "openood").exists()


def test_a_skipped_near_set_is_warned_about(tmp_path: Path) -> None:
    manifest = {"config": {"ood": [{"name": n, "group": g} for n, g in SETS.items()]},
                "skipped_ood_sets": {"tin": "not found"}}
    folder, _ = _results(tmp_path, seeds=1, scorers=("msp",), manifest=manifest)
    df = pd.read_csv(folder / "metrics.csv")
    df[df.ood_set != "tin"].to_csv(folder / "metrics.csv", index=False)
    with np.load(folder / "scores" / "ce-s0.npz") as z:
        kept = {k: z[k] for k in z.files if k != "msp/tin"}
    np.savez(folder / "scores" / "ce-s0.npz", **kept)
    manifest["files"] = record_files(folder, ["metrics.csv", "scores/ce-s0.npz"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=r"tin \(near\) were skipped"):
        paths = export_protocol(folder, OPENOOD_V15)
    assert pd.read_csv(paths[0], index_col=0).index[:2].tolist() == ["cifar10", "nearood"]


# ---------------------------------------------------------------- OpenOOD's settings


def test_the_openood_presets_take_openoods_settings() -> None:
    benches = load_config()
    for name in ("cifar100", "cifar100-gpu", "imagenet200", "imagenet1k"):
        bench = benches[name]
        assert bench.protocol == OPENOOD_V15
        params = bench.scorer_params
        assert params["ash"]["variant"] == "b" and params["nnguide"]["alpha"] == 0.01
        assert params["knn"]["alpha"] == 1.0  # OpenOOD searches the whole ID-train set
        assert {n: bench.fit_split(n) for n in bench.scorers if bench.fit_split(n) != "train"
                } == {"klm": "val", "react": "val"}
        assert params["vim"]["dim"] == (64 if name == "cifar100" else 256)
    for name in ("fmnist", "cifar10", "cifar10-gpu"):  # their committed results rest on these
        bench = benches[name]
        assert bench.protocol == "" and bench.scorer_fit == {}
        assert not set(bench.scorer_params) & {"ash", "vim", "nnguide", "react", "klm"}


OWN = """
[benchmarks.o]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
widths = [{widths}]
val_fraction = {val}
scorers = [{scorers}]
{extra}

[[benchmarks.o.trainings]]
name = "ce"
objective = "ce"
"""


def _own(tmp_path: Path, widths: str = "16, 32, 64", scorers: str = '"vim", "nnguide"',
         extra: str = 'protocol = "openood-v1.5"', val: float = 0.1) -> Path:
    path = tmp_path / "o.toml"
    path.write_text(OWN.format(widths=widths, scorers=scorers, extra=extra, val=val))
    return path


def test_vim_dim_above_the_feature_size_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_benchmark("o", _own(tmp_path))
    text = str(err.value)
    assert "[benchmarks.o.scorer_params] vim = {'dim': 256} (OpenOOD's setting, from " \
           "protocol = 'openood-v1.5') on model 'resnet8'" in text
    assert "dim = 256 must be below the feature size D = 64" in text
    assert "set vim = { dim = N } in scorer_params with N < 64, e.g. D // 2 = 32" in text
    # wide enough features, or an override, or no ViM in the matrix: accepted
    assert load_benchmark("o", _own(tmp_path, widths="64, 128, 512")).scorer_params["vim"] == {
        "dim": 256}
    own = load_benchmark("o", _own(tmp_path, extra='protocol = "openood-v1.5"\n'
                                   'scorer_params = { vim = { dim = 32 }, nnguide = { k = 5 } }'))
    assert own.scorer_params["vim"] == {"dim": 32}
    assert own.scorer_params["nnguide"] == {"k": 5, "alpha": 0.01}  # the file's value wins
    # a checked benchmark narrowed to ViM afterwards: check_benchmark (not the bare
    # dataclass, which knows no registry) refuses it
    vim_only = dataclasses.replace(load_benchmark("o", _own(tmp_path, scorers='"nnguide"')),
                                   scorers=("vim",))
    with pytest.raises(ConfigError, match="feature size D = 64"):
        check_benchmark(vim_only)
    # an explicit dim of the benchmark's own is checked the same, without the protocol note
    with pytest.raises(ConfigError, match=r"vim = \{'dim': 64\} on model 'resnet8': vim: dim "):
        load_benchmark("o", _own(tmp_path, extra="scorer_params = { vim = { dim = 64 } }"))


def test_protocol_and_scorer_fit_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"protocol = 'openood-v2' is not accepted;.* "
                       r"accepted values: openood-v1.5"):
        load_benchmark("o", _own(tmp_path, extra='protocol = "openood-v2"'))
    with pytest.raises(ConfigError, match=r"\[benchmarks\.o\.scorer_fit\] vim = 'test' is not "
                       r"accepted; accepted values: train, val"):
        load_benchmark("o", _own(tmp_path, extra='scorer_fit = { vim = "test" }'))
    with pytest.raises(ConfigError, match=r"scorer_fit.*vimm"):
        load_benchmark("o", _own(tmp_path, extra='scorer_fit = { vimm = "val" }'))
    with pytest.raises(ConfigError, match=r"vim = \"val\" fits on ID-validation images, but "
                       r"val_fraction = 0 holds none out"):
        load_benchmark("o", _own(tmp_path, extra='scorer_fit = { vim = "val" }', val=0.0))
    with pytest.raises(ConfigError, match=r"would fit vim on the ID-validation images that its "
                       r"scorer_grids entry selects on"):
        load_benchmark("o", _own(tmp_path, extra='scorer_fit = { vim = "val" }\n'
                                 'val_ood = ["mnist"]\nscorer_grids = { vim = { dim = [8] } }'))


PLUGIN = '''
from oodbench.scoring import Scorer, register_scorer, to_scores


@register_scorer("fitcount")
class FitCount(Scorer):
    """Records how many samples it was fitted on; scores the max logit."""

    def fit(self, train, head):
        self.head_, self.n_ = head, len(train)
        return self

    def fit_summary(self):
        return {"n_fit": self.n_}

    def score(self, data):
        return to_scores(data.logits.amax(dim=1))
'''


def test_a_scorer_is_fitted_on_its_split_and_the_manifest_says_so(
    tmp_path: Path, isolated_data: SimpleNamespace
) -> None:
    tb = write_tiny_bench(tmp_path, noise=False)
    text = tb.config.read_text()
    text = text.replace('scorers = ["msp", "energy", "react", "ash", "knn", "mahalanobis"]',
                        'scorers = ["react", "fitcount", "vim"]\nprotocol = "openood-v1.5"\n'
                        'scorer_fit = { fitcount = "val" }')
    text = text.replace("scorer_params = { knn = { k = 5 } }",
                        "scorer_params = { vim = { dim = 8 } }")
    text = text.replace("epochs = 8", "epochs = 1\nchannels_last = false")
    text = text[:text.index("[[benchmarks.tiny.trainings]]\nname = \"bgnorm\"")]
    tb.config.write_text(text + '\n[[benchmarks.tiny.ood]]\nname = "mnist"\ngroup = "near"\n')
    plugin = tmp_path / "fitcount.py"
    plugin.write_text(PLUGIN)
    with plugins.scoped():  # the plugin scorer does not outlive the test
        _run_and_check(tb, plugin)


def _run_and_check(tb: SimpleNamespace, plugin: Path) -> None:
    """Run the tiny benchmark with the plugin scorer; check its manifest, table and ablate."""
    assert main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                 str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out),
                 "--plugin", str(plugin)]) == 0
    manifest = json.loads((tb.out / "tiny" / "manifest.json").read_text())
    params = manifest["scorer_params"]["ce-s0"]
    assert params["fitcount"]["n_fit"] == 64 and params["fitcount"]["fit_split"] == "val"
    assert params["react"]["fit_split"] == "val" and params["vim"]["fit_split"] == "train"
    assert manifest["config"]["protocol"] == OPENOOD_V15
    record = manifest[MANIFEST_KEY]
    assert record["name"] == OPENOOD_V15
    assert record["scorers"]["react"] == {
        "postprocessor": "react", "openood": {"percentile": 90.0, "fit_split": "val"},
        "note": "as OpenOOD v1.5"}
    assert record["scorers"]["vim"]["note"] == "dim = 8 (OpenOOD: 256)"
    assert record["scorers"]["fitcount"] == {
        "postprocessor": None, "note": "OpenOOD v1.5 has no such postprocessor"}
    with pytest.warns(UserWarning, match=r"vim: dim = 8 \(OpenOOD: 256\)"):
        export_protocol(tb.out / "tiny", OPENOOD_V15)
    # ablate scores ID-val, which these scorers are fitted on: refused before any training
    bench = load_benchmark("tiny", tb.config)
    with pytest.raises(ConfigError, match=r"react, fitcount would be fitted on \(scorer_fit\)"):
        ablate_benchmark(bench, runs_dir=tb.runs, data_root=tb.root, out_dir=tb.out / "abl")


def test_the_postprocessor_names_are_oodbench_scorers() -> None:
    from oodbench.scoring import list_scorers

    assert set(POSTPROCESSORS) <= set(list_scorers())
    assert {s: p.name for s, p in POSTPROCESSORS.items() if p.name != s} == {
        "maxlogit": "mls", "energy": "ebo", "mahalanobis": "mds"}


def test_an_openood_export_is_replaced_whole(tmp_path: Path) -> None:
    folder, _ = _results(tmp_path, seeds=1, scorers=("energy", "maxlogit"))
    out = tmp_path / "E"
    first = export_protocol(folder, "openood-v1.5", out)
    assert {p.name for p in first} == {"ebo.csv", "mls.csv", LONG_FILE}
    assert all(p.is_file() for p in first)
    again, _ = _results(tmp_path / "again", seeds=1, scorers=("energy",))
    second = export_protocol(again, "openood-v1.5", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                  and not p.name.startswith(".")) == ["ce/ood/ebo.csv", LONG_FILE]
    assert set(pd.read_csv(out / LONG_FILE)["scorer"]) == {"energy"} and len(second) == 2
    with pytest.raises(OutputError, match="contains the results folder"):
        export_protocol(folder, "openood-v1.5", tmp_path / "results")
    user = tmp_path / "paper"
    user.mkdir()
    (user / "table.tex").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files that oodbench did not write"):
        export_protocol(folder, "openood-v1.5", user)
    assert (user / "table.tex").read_text() == "mine"
