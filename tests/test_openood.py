"""`table --protocol openood-v1.5`: OpenOOD's rows, columns, means and cell format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench.cli import main
from oodbench.errors import ConfigError, DataError, OutputError
from oodbench.fileio import record_files
from oodbench.metrics import COLUMNS
from oodbench.openood import (
    LONG_FILE,
    OPENOOD_V15,
    openood_frame,
    openood_long,
    openood_table,
    seed_frames,
    write_openood_csvs,
)
from oodbench.report import check_results, export_protocol, read_metrics

SETS = {"cifar10": "near", "tin": "near", "mnist": "far", "svhn": "far", "noise": "sanity",
        "imagenet_c": "csid"}
METRICS = ("fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out")
ROWS = ["cifar10", "tin", "nearood", "mnist", "svhn", "farood"]


def _frame(seeds: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        for training in ("ce", "bgnorm"):
            rows.append(("b", training, seed, "", "", "", "id_acc", 0.9 + 0.01 * seed, ""))
            for scorer in ("msp", "knn"):
                for name, group in SETS.items():
                    for metric in METRICS:
                        rows.append(("b", training, seed, scorer, name, group, metric,
                                     float(rng.uniform(0.1, 0.9)), ""))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _folder(tmp_path: Path, df: pd.DataFrame, manifest: dict | None = None) -> Path:
    """A results folder ``tmp_path/results/b`` holding `df` and a manifest hashing it."""
    folder = tmp_path / "results" / "b"
    folder.mkdir(parents=True)
    df.to_csv(folder / "metrics.csv", index=False)
    manifest = {**(manifest or {}), "files": record_files(folder, ["metrics.csv"])}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_rows_columns_and_means_follow_openood() -> None:
    df = _frame()
    frames = seed_frames(df, "ce", "msp")
    table = frames[0]
    assert list(table.index) == ROWS
    assert list(table.columns) == ["FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC"]
    cells = df[(df.training == "ce") & (df.seed == 0) & (df.scorer == "msp")]

    def value(name: str, metric: str) -> float:
        return float(cells[(cells.ood_set == name) & (cells.metric == metric)].value.iloc[0])

    # percent, and FPR@95 is the OOD-positive FPR, not the ID-positive headline
    assert table.loc["tin", "FPR@95"] == pytest.approx(100 * value("tin", "fpr95_oodpos"))
    assert table.loc["tin", "FPR@95"] != pytest.approx(100 * value("tin", "fpr95"))
    assert table.loc["mnist", "AUPR_IN"] == pytest.approx(100 * value("mnist", "aupr_in"))
    # the mean rows are the plain mean of their group's rows
    assert table.loc["nearood", "AUROC"] == pytest.approx(
        50 * (value("cifar10", "auroc") + value("tin", "auroc")))
    assert table.loc["farood", "AUPR_OUT"] == pytest.approx(
        50 * (value("mnist", "aupr_out") + value("svhn", "aupr_out")))
    for mean_row, sets in (("nearood", ["cifar10", "tin"]), ("farood", ["mnist", "svhn"])):
        assert np.allclose(table.loc[mean_row], table.loc[sets].mean())
    # ACC is the ID accuracy in every row, mean rows included
    assert (table["ACC"] == 90.0).all() and np.allclose(frames[1]["ACC"], 91.0)
    text = openood_table(df, "ce", "msp")
    both = np.array([frames[0].loc["svhn", "AUROC"], frames[1].loc["svhn", "AUROC"]])
    assert text.loc["svhn", "AUROC"] == f"{both.mean():.2f} \u00b1 {both.std():.2f}"
    assert text.loc["svhn", "ACC"] == "90.50 \u00b1 0.50"


def test_openood_frame_is_one_seed_or_the_seed_mean() -> None:
    df = _frame(3)
    frames = seed_frames(df, "bgnorm", "knn")
    stacked = np.stack([f.to_numpy() for f in frames.values()])
    mean = openood_frame(df, "bgnorm", "knn")
    assert list(mean.index) == ROWS
    assert np.allclose(mean.to_numpy(), stacked.mean(axis=0))
    assert np.allclose(openood_frame(df, "bgnorm", "knn", std=True).to_numpy(),
                       stacked.std(axis=0))  # population std, as OpenOOD's np.std
    assert np.allclose(openood_frame(df, "bgnorm", "knn", seed=2).to_numpy(), stacked[2])
    with pytest.raises(DataError, match="no seed 7"):
        openood_frame(df, "bgnorm", "knn", seed=7)


def test_a_failed_cell_reads_failed_and_a_missing_one_a_dash() -> None:
    df = _frame(2)
    df.loc[(df.scorer == "knn") & (df.ood_set == "mnist") & (df.metric == "auroc"),
           "value"] = np.nan
    text = openood_table(df, "ce", "knn")
    assert text.loc["mnist", "AUROC"] == "failed" and text.loc["farood", "AUROC"] == "failed"
    assert text.loc["svhn", "AUROC"] != "failed"
    # seed 1 of ce lacks svhn for msp: its cells and the far mean are missing, not failed
    gone = (df.training == "ce") & (df.seed == 1) & (df.scorer == "msp") & (df.ood_set == "svhn")
    text = openood_table(df[~gone], "ce", "msp")
    assert list(text.index) == ROWS
    assert (text.loc[["svhn", "farood"], "AUROC"] == "\u2014").all()
    assert text.loc["mnist", "AUROC"] not in ("failed", "\u2014")


def test_only_near_and_far_enter() -> None:
    df = _frame(1)
    assert not set(openood_frame(df, "ce", "msp").index) & {"noise", "imagenet_c"}
    only_sanity = df[~df.group.isin(["near", "far"])]
    with pytest.raises(DataError, match="near- or far-OOD"):
        write_openood_csvs(only_sanity, Path("unused"))
    far_only = df[df.group != "near"]
    assert list(openood_frame(far_only, "ce", "msp").index) == ["mnist", "svhn", "farood"]


def test_long_csv_holds_every_table(tmp_path: Path) -> None:
    df = _frame(2)
    long = openood_long(df)
    assert len(long) == 2 * 2 * len(ROWS) * 5  # trainings x scorers x rows x columns
    row = long[(long.training == "bgnorm") & (long.scorer == "msp") &
               (long.dataset == "farood") & (long.column == "AUROC")]
    assert row["group"].item() == "far" and row["n_seeds"].item() == 2
    assert row["mean"].item() == pytest.approx(openood_frame(df, "bgnorm", "msp").at[
        "farood", "AUROC"])
    paths = write_openood_csvs(df, tmp_path / "o")
    assert paths[-1] == tmp_path / "o" / LONG_FILE
    read = pd.read_csv(paths[-1])
    assert np.allclose(read["mean"], long["mean"], rtol=1e-5)


def test_cli_writes_one_csv_per_training_and_scorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path, _frame())
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "b",
                 "--protocol", OPENOOD_V15, "--json"]) == 0
    paths = [Path(p) for p in json.loads(capsys.readouterr().out)]
    assert sorted(p.relative_to(folder / "openood").as_posix() for p in paths) == [
        "bgnorm/ood/knn.csv", "bgnorm/ood/msp.csv", "ce/ood/knn.csv", "ce/ood/msp.csv",
        LONG_FILE]
    assert all(p.is_file() for p in paths)
    raw = (folder / "openood" / "ce" / "ood" / "msp.csv").read_text(encoding="utf-8")
    assert raw.splitlines()[0] == ",FPR@95,AUROC,AUPR_IN,AUPR_OUT,ACC"  # no index label
    read = pd.read_csv(folder / "openood" / "ce" / "ood" / "msp.csv", index_col=0)
    assert list(read.index) == ROWS
    assert read.loc["nearood", "ACC"] == "90.50 \u00b1 0.50"
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
    folder = _folder(tmp_path, _frame(1))
    with (folder / "metrics.csv").open("a") as f:
        f.write("b,ce,0,msp,tin,near,auroc,0.5,\n")
    with pytest.raises(OutputError, match="differs"):
        export_protocol(folder, OPENOOD_V15)
    assert not (folder / "openood").exists()


def test_a_skipped_near_set_is_warned_about(tmp_path: Path) -> None:
    df = _frame(1)
    df = df[df.ood_set != "tin"]
    manifest = {"config": {"ood": [{"name": n, "group": g} for n, g in SETS.items()]},
                "skipped_ood_sets": {"tin": "not found"}}
    folder = _folder(tmp_path, df, manifest)
    with pytest.warns(UserWarning, match=r"tin \(near\) were skipped"):
        paths = export_protocol(folder, OPENOOD_V15)
    assert pd.read_csv(paths[0], index_col=0).index[:2].tolist() == ["cifar10", "nearood"]
