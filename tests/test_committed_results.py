"""The committed results folders recompute from what they store: every metric of every cell
from its saved scores (exactly), the bootstrap bounds of a fixed sample of cells from the same
scores and the manifest's settings (exactly), and the checkpoints they rest on are the files
their manifest hashed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oodbench.fileio import file_hash
from oodbench.manifest import MANIFEST_FILE, scores_file
from oodbench.metrics import OOD_METRICS, ood_metrics
from oodbench.report import check_results, read_metrics
from oodbench.uncertainty import BOUND_METRICS, bootstrap_bounds, cell_rng

RESULTS = Path(__file__).resolve().parent.parent / "results"
FOLDERS = [RESULTS / name for name in ("fmnist", "cifar10")]
SAMPLED = 12  # cells whose bootstrap is recomputed, per folder (0.25 s each)


def _bootstrapped(folder: Path) -> bool:
    return (folder / "metrics.csv").is_file() and "fpr95_lo" in set(
        pd.read_csv(folder / "metrics.csv", usecols=["metric"])["metric"])


def _cells(folder: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """metrics.csv's OOD rows as one row per cell (a column per metric), and the manifest."""
    df = read_metrics(folder)
    rows = df[df["scorer"] != ""]
    cells = rows.pivot_table(index=["training", "seed", "scorer", "ood_set"], columns="metric",
                             values="value", aggfunc="first", dropna=False)
    return cells, json.loads((folder / MANIFEST_FILE).read_text())


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_a_committed_folder_recomputes_from_its_scores(folder: Path) -> None:
    if not _bootstrapped(folder):
        pytest.skip(f"{folder.name} was made before the bootstrap rows (an earlier run)")
    check_results(folder)  # every file the manifest hashed, checkpoints included
    cells, manifest = _cells(folder)
    stats = manifest["config"]["stats"]
    scores: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for (training, seed), _ in cells.groupby(level=[0, 1]):
        with np.load(scores_file(folder, training, int(seed))) as z:
            scores[training, int(seed)] = {k: z[k] for k in z.files}
    # the ID test set: the one set every scorer scored that is no OOD set
    oods = set(cells.index.get_level_values("ood_set"))
    (id_set,) = {k.split("/", 1)[1] for k in next(iter(scores.values()))
                 if not k.startswith("_")} - oods
    failed = 0
    for (training, seed, scorer, ood_set), row in cells.iterrows():
        stored = scores[training, int(seed)]
        if np.isnan(row[OOD_METRICS[0]]):
            failed += 1
            continue
        got = ood_metrics(stored[f"{scorer}/{id_set}"], stored[f"{scorer}/{ood_set}"])
        assert {m: row[m] for m in OOD_METRICS} == got, (training, seed, scorer, ood_set)
    assert failed < len(cells)
    # the bootstrap of a fixed sample of cells: every len(cells) // SAMPLED-th
    benchmark = manifest["benchmark"]
    for (training, seed, scorer, ood_set), row in cells.iloc[::max(1, len(cells) // SAMPLED)
                                                             ].iterrows():
        if np.isnan(row[OOD_METRICS[0]]):
            continue
        stored = scores[training, int(seed)]
        rng = cell_rng(stats["bootstrap_seed"], [benchmark, training, int(seed), scorer, ood_set])
        got = bootstrap_bounds(stored[f"{scorer}/{id_set}"], stored[f"{scorer}/{ood_set}"],
                               stats["bootstrap_resamples"], stats["level"], rng)
        assert {m: row[m] for m in BOUND_METRICS} == got, (training, seed, scorer, ood_set)
    # the checkpoints the numbers rest on
    for cell, summary in manifest["checkpoints"].items():
        path = folder / summary["path"]
        assert path.is_file(), f"{cell}: {path} is not committed"
        assert file_hash(path) == summary["sha256"]
