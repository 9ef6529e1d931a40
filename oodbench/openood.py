"""OpenOOD v1.5's result format, so oodbench numbers can sit beside its leaderboard.

The one place that names OpenOOD's rows and columns. What is matched, and where it was read
(github.com/Jingkang50/OpenOOD; the files as stored in a public code index):

- ``scripts/eval_ood.py`` (commit 0ad2b93): one evaluation per checkpoint folder ``<root>/s*``
  (the training seeds, sorted); the per-seed tables are stacked, and each cell becomes
  ``"{mean:.2f} ± {std:.2f}"`` with ``np.mean`` / ``np.std`` over seeds (population std,
  ddof=0; a single seed reads ``"± 0.00"``). With ``--save-csv`` the table is written by
  ``DataFrame.to_csv`` to ``<root>/ood/<postprocessor>.csv``: the index (dataset names) is the
  first column and has no label, so the header starts with an empty cell.
- ``openood/evaluation_api/evaluator.py``, ``Evaluator.eval_ood`` / ``_eval_ood``: rows are
  the near-OOD datasets in the benchmark's order, then ``nearood``, the far-OOD datasets,
  then ``farood``; each mean row is the plain ``np.mean`` over that group's datasets of the
  per-seed metrics (before the seed mean); all values are multiplied by 100; ``ACC`` is the
  ID test accuracy (in percent) written into every row, the mean rows included. Columns:
  ``FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC``. Some stored commits of this file (0ad2b93,
  e7a568b) carry four classification-rate columns ``CCR_4 ... CCR_1`` before ``ACC``; the
  v1.5 metrics code (``openood/evaluators/metrics.py``, commit a59cdac, whose
  ``compute_all_metrics`` returns ``[fpr, auroc, aupr_in, aupr_out, accuracy]``) and the
  leaderboard have the five above, which is what is written here (oodbench has no CCR).
- ``openood/evaluators/metrics.py`` (commit a59cdac), ``auc_and_fpr_recall``: OOD is the
  positive class and the confidence is negated; ``FPR@95`` is the FPR at the first ROC
  point with TPR >= 0.95, i.e. the share of ID samples flagged as OOD when 95% of OOD
  samples are: :data:`~oodbench.metrics.FPR95_OODPOS`, not oodbench's headline
  (ID-positive) ``fpr95``. (An older stored commit, 00611f1, computed the ID-positive one.)
  AUROC (trapezoids under the ROC curve) is oodbench's ``auroc``. AUPR_IN / AUPR_OUT are
  ``sklearn.metrics.auc(recall, precision)`` there (trapezoids under the PR curve, ID resp.
  OOD positive); oodbench's ``aupr_in`` / ``aupr_out`` are average precision (step sums),
  written as they are: the two interpolations can differ slightly.

oodbench's choices where OpenOOD has nothing to match: only the OOD groups ``near`` and
``far`` enter, in the order of the metrics frame (the benchmark's order of its OOD sets);
other groups (``sanity``, ``extra``, ``csid``, none) are oodbench's own rows and are left out.
A failed cell (NaN in ``metrics.csv``) reads ``"failed"`` and a cell some seed lacks reads
``"—"`` (OpenOOD would print ``nan``); a mean row is failed or missing when any of its sets
is. Besides the per-scorer files, one long CSV (:data:`LONG_FILE`) holds every number plain.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.errors import DataError
from oodbench.fileio import atomic_write_text, inside
from oodbench.manifest import MANIFEST_FILE
from oodbench.metrics import AUPR_IN, AUPR_OUT, AUROC, FPR95_OODPOS, ID_ACC

OPENOOD_V15 = "openood-v1.5"
PROTOCOLS = (OPENOOD_V15,)
# OpenOOD's column -> oodbench's metric, in OpenOOD's order; ACC (ID accuracy) comes last
COLUMNS = {"FPR@95": FPR95_OODPOS, "AUROC": AUROC, "AUPR_IN": AUPR_IN, "AUPR_OUT": AUPR_OUT}
ACC = "ACC"
GROUPS = {"near": "nearood", "far": "farood"}  # oodbench group -> OpenOOD's mean row
FAILED = "failed"
MISSING = "—"
LONG_FILE = "openood-v1.5-long.csv"  # every (training, scorer) table in one long CSV
LONG_COLUMNS = ("training", "scorer", "dataset", "group", "column", "mean", "std", "n_seeds")


def _layout(cells: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(group, mean row, sets in order) for each of ``GROUPS`` that `cells` have."""
    out = []
    for group, mean_row in GROUPS.items():
        sets = list(dict.fromkeys(cells.loc[cells["group"] == group, "ood_set"]))
        if sets:
            out.append((group, mean_row, sets))
    return out


def _stack(df: pd.DataFrame, training: str,
           scorer: str) -> tuple[list[int], list[str], list[str], np.ndarray, np.ndarray]:
    """Seeds, row labels, row groups, values (seed x row x column, percent; NaN where failed
    or missing) and presence (False where missing) of one training and scorer."""
    part = df[df["training"] == training]
    cells = part[(part["scorer"] == scorer) & part["group"].isin(list(GROUPS))]
    layout = _layout(cells)
    if not layout:
        raise DataError(f"no near or far OOD rows for training {training!r}, scorer "
                        f"{scorer!r}", "OpenOOD's table has only near- and far-OOD sets: "
                        "give the benchmark's OOD sets group = \"near\" or \"far\"")
    labels = [x for _, mean_row, sets in layout for x in (*sets, mean_row)]
    groups = [group for group, _, sets in layout for _ in range(len(sets) + 1)]
    seeds = sorted(int(s) for s in part["seed"].unique())
    names = [*COLUMNS, ACC]
    values = np.full((len(seeds), len(labels), len(names)), np.nan)
    present = np.zeros(values.shape, dtype=bool)
    for i, seed in enumerate(seeds):
        here = cells[cells["seed"] == seed].drop_duplicates(["ood_set", "metric"], keep="last")
        table = here.pivot(index="ood_set", columns="metric", values="value")
        have = set(zip(here["ood_set"], here["metric"], strict=True))
        row = 0
        for _, _, sets in layout:
            block = table.reindex(index=sets, columns=list(COLUMNS.values()))
            mask = np.array([[(s, m) in have for m in COLUMNS.values()] for s in sets])
            n = len(sets)
            values[i, row:row + n, :-1] = block.to_numpy(dtype=float) * 100
            present[i, row:row + n, :-1] = mask
            values[i, row + n, :-1] = values[i, row:row + n, :-1].mean(axis=0)
            present[i, row + n, :-1] = mask.all(axis=0)
            row += n + 1
        acc = part.loc[(part["seed"] == seed) & (part["metric"] == ID_ACC), "value"]
        if len(acc):
            values[i, :, -1], present[i, :, -1] = float(acc.iloc[-1]) * 100, True
    return seeds, labels, groups, values, present


def seed_frames(df: pd.DataFrame, training: str, scorer: str) -> dict[int, pd.DataFrame]:
    """Per seed, OpenOOD's numeric table (percent) of one training and scorer of a metrics
    frame (``metrics.csv``); NaN where a cell failed or the seed lacks it."""
    seeds, labels, _, values, _ = _stack(df, training, scorer)
    return {s: pd.DataFrame(values[i], index=labels, columns=[*COLUMNS, ACC])
            for i, s in enumerate(seeds)}


def openood_frame(df: pd.DataFrame, training: str, scorer: str, seed: int | None = None,
                  std: bool = False) -> pd.DataFrame:
    """OpenOOD's numeric table (percent) of one training and scorer: one `seed`'s, or (None)
    the mean over seeds (`std`: the population std, as OpenOOD's). NaN where a cell failed
    or some seed lacks it."""
    seeds, labels, _, values, present = _stack(df, training, scorer)
    if seed is not None:
        if seed not in seeds:
            raise DataError(f"training {training!r} has no seed {seed}",
                            f"its seeds: {', '.join(map(str, seeds))}")
        values, present = values[[seeds.index(seed)]], present[[seeds.index(seed)]]
    stat = values.std(axis=0) if std else values.mean(axis=0)
    return pd.DataFrame(np.where(present.all(axis=0), stat, np.nan), index=labels,
                        columns=[*COLUMNS, ACC])


def openood_table(df: pd.DataFrame, training: str, scorer: str) -> pd.DataFrame:
    """OpenOOD's CSV table of one training and scorer: ``"mean ± std"`` over seeds, two
    decimals (``"failed"`` / ``"—"`` for a failed / missing cell)."""
    _, labels, _, values, present = _stack(df, training, scorer)
    mean, std = values.mean(axis=0), values.std(axis=0)
    text = np.char.add(np.char.add(np.char.mod("%.2f", mean), " \u00b1 "),
                       np.char.mod("%.2f", std)).astype(object)
    text[np.isnan(mean)] = FAILED
    text[~present.all(axis=0)] = MISSING
    return pd.DataFrame(text, index=labels, columns=[*COLUMNS, ACC])


def _pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(training, scorer) with near or far rows, trainings and scorers in order of appearance."""
    ood = df[df["group"].isin(list(GROUPS))]
    scorers = [s for s in dict.fromkeys(ood["scorer"]) if s]
    have = set(zip(ood["training"], ood["scorer"], strict=True))
    return [(t, s) for t in dict.fromkeys(df["training"]) for s in scorers if (t, s) in have]


def openood_long(df: pd.DataFrame) -> pd.DataFrame:
    """Every (training, scorer) table as one long frame (:data:`LONG_COLUMNS`): one row per
    dataset or mean row and OpenOOD column, mean and population std over seeds in percent."""
    records = []
    for training, scorer in _pairs(df):
        seeds, labels, groups, values, present = _stack(df, training, scorer)
        ok = present.all(axis=0)
        mean = np.where(ok, values.mean(axis=0), np.nan)
        std = np.where(ok, values.std(axis=0), np.nan)
        for r, (label, group) in enumerate(zip(labels, groups, strict=True)):
            for c, column in enumerate([*COLUMNS, ACC]):
                records.append((training, scorer, label, group, column, mean[r, c], std[r, c],
                                len(seeds)))
    return pd.DataFrame(records, columns=list(LONG_COLUMNS))


def _warn_skipped(folder: Path) -> None:
    """Warn when a results folder's manifest lists near or far sets that were skipped: its
    nearood / farood rows then average other sets than OpenOOD's."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    sets = manifest.get("config", {}).get("ood", [])
    skipped = manifest.get("skipped_ood_sets", {})
    lost = [f"{s['name']} ({s['group']})" for s in sets
            if s.get("group") in GROUPS and s.get("name") in skipped]
    if lost:
        warnings.warn(f"{folder}: the OOD set(s) {', '.join(lost)} were skipped in this run, "
                      "so its nearood / farood rows are means over fewer sets than "
                      "OpenOOD's", stacklevel=3)


def write_openood_csvs(source: pd.DataFrame | Path | str, out: Path | str) -> list[Path]:
    """Write every (training, scorer) table of a metrics frame, or of a results folder (read
    and checked by :func:`~oodbench.report.read_metrics`), as ``out/<training>/ood/<scorer>.csv``
    (OpenOOD's ``<root>/ood/<postprocessor>.csv``), then ``out/`` :data:`LONG_FILE`; returns
    the files written, in that order."""
    if isinstance(source, pd.DataFrame):
        df = source
    else:
        from oodbench.report import read_metrics

        df = read_metrics(Path(source))
        _warn_skipped(Path(source))
    df = df.assign(scorer=df["scorer"].astype(object).fillna("").astype(str),
                   group=df["group"].astype(object).fillna("").astype(str),
                   training=df["training"].astype(str))
    pairs = _pairs(df)
    if not pairs:
        raise DataError("the metrics hold no near- or far-OOD rows",
                        "OpenOOD's table has only near- and far-OOD sets: give the "
                        "benchmark's OOD sets group = \"near\" or \"far\"")
    written = []
    for training, scorer in pairs:
        path = inside(out, training, "ood", f"{scorer}.csv")
        atomic_write_text(path, openood_table(df, training, scorer).to_csv())
        written.append(path)
    path = inside(out, LONG_FILE)
    atomic_write_text(path, openood_long(df).to_csv(index=False, float_format="%.6g"))
    return [*written, path]
