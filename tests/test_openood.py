"""`table --protocol openood-v1.5`: OpenOOD's rows, columns, means and cell format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench.cli import main
from oodbench.errors import ConfigError
from oodbench.metrics import COLUMNS
from oodbench.openood import openood_table, seed_frames
from oodbench.report import export_protocol

SETS = {"cifar10": "near", "tin": "near", "mnist": "far", "svhn": "far", "noise": "sanity",
        "imagenet_c": "csid"}
METRICS = ("fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out")


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


def test_rows_columns_and_means_follow_openood() -> None:
    df = _frame()
    frames = seed_frames(df, "ce", "msp")
    table = frames[0]
    assert list(table.index) == ["cifar10", "tin", "nearood", "mnist", "svhn", "farood"]
    assert list(table.columns) == ["FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT", "ACC"]
    cells = df[(df.training == "ce") & (df.seed == 0) & (df.scorer == "msp")]

    def value(name: str, metric: str) -> float:
        return float(cells[(cells.ood_set == name) & (cells.metric == metric)].value.iloc[0])

    assert table.loc["tin", "FPR@95"] == pytest.approx(100 * value("tin", "fpr95_oodpos"))
    assert table.loc["tin", "FPR@95"] != pytest.approx(100 * value("tin", "fpr95"))
    assert table.loc["nearood", "AUROC"] == pytest.approx(
        50 * (value("cifar10", "auroc") + value("tin", "auroc")))
    assert table.loc["farood", "AUPR_OUT"] == pytest.approx(
        50 * (value("mnist", "aupr_out") + value("svhn", "aupr_out")))
    assert (table["ACC"] == 90.0).all() and np.allclose(frames[1]["ACC"], 91.0)
    text = openood_table(df, "ce", "msp")
    both = np.array([frames[0].loc["svhn", "AUROC"], frames[1].loc["svhn", "AUROC"]])
    assert text.loc["svhn", "AUROC"] == f"{both.mean():.2f} \u00b1 {both.std():.2f}"
    assert text.loc["svhn", "ACC"] == "90.50 \u00b1 0.50"


def test_a_failed_cell_reads_failed() -> None:
    df = _frame(1)
    df.loc[(df.scorer == "knn") & (df.ood_set == "mnist") & (df.metric == "auroc"),
           "value"] = np.nan
    text = openood_table(df, "ce", "knn")
    assert text.loc["mnist", "AUROC"] == "failed" and text.loc["farood", "AUROC"] == "failed"
    assert text.loc["svhn", "AUROC"] != "failed"


def test_cli_writes_one_csv_per_training_and_scorer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "results" / "b"
    folder.mkdir(parents=True)
    _frame().to_csv(folder / "metrics.csv", index=False)
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "b",
                 "--protocol", "openood-v1.5", "--json"]) == 0
    paths = [Path(p) for p in json.loads(capsys.readouterr().out)]
    assert sorted(p.relative_to(folder / "openood").as_posix() for p in paths) == [
        "bgnorm/ood/knn.csv", "bgnorm/ood/msp.csv", "ce/ood/knn.csv", "ce/ood/msp.csv"]
    read = pd.read_csv(folder / "openood" / "ce" / "ood" / "msp.csv", index_col=0)
    assert list(read.index) == ["cifar10", "tin", "nearood", "mnist", "svhn", "farood"]
    with pytest.raises(ConfigError, match="unknown protocol"):
        export_protocol(folder, "openood-v2")
