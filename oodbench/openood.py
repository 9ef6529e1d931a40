"""OpenOOD v1.5's result format, so oodbench numbers can sit beside its leaderboard.

OpenOOD's ``scripts/eval_ood.py --save-csv`` writes one CSV per postprocessor (scorer),
``<run>/ood/<postprocessor>.csv``. Its rows are the near-OOD sets, then ``nearood`` (the plain
mean of each metric over the near sets, per checkpoint), the far-OOD sets, then ``farood``;
its columns ``FPR@95, AUROC, AUPR_IN, AUPR_OUT, ACC``, in percent, each cell ``"mean ± std"``
over the training seeds (two decimals, population std), ``ACC`` being the ID test accuracy in
every row (``openood/evaluation_api/evaluator.py``: ``Evaluator.eval_ood``). Its ``FPR@95`` is
the OOD-positive one (:data:`~oodbench.metrics.FPR95_OODPOS`). Later OpenOOD commits add
classification-rate columns ``CCR_4`` ... ``CCR_1``; oodbench does not compute them.

Only the groups ``near`` and ``far`` enter, in the benchmark's order of its OOD sets; other
groups (``csid``, ``sanity``, ``extra``) are oodbench's own rows and are left out here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oodbench.fileio import atomic_write_bytes, inside
from oodbench.metrics import AUPR_IN, AUPR_OUT, AUROC, FPR95_OODPOS, ID_ACC

OPENOOD_V15 = "openood-v1.5"
PROTOCOLS = (OPENOOD_V15,)
COLUMNS = {"FPR@95": FPR95_OODPOS, "AUROC": AUROC, "AUPR_IN": AUPR_IN, "AUPR_OUT": AUPR_OUT}
ACC = "ACC"
GROUPS = {"near": "nearood", "far": "farood"}  # oodbench group -> OpenOOD's mean row


def seed_frames(df: pd.DataFrame, training: str, scorer: str) -> dict[int, pd.DataFrame]:
    """Per seed, OpenOOD's numeric table (percent) of one training and scorer of a metrics
    frame (``metrics.csv``)."""
    rows = df[(df.training == training)]
    out = {}
    for seed, part in rows.groupby("seed", sort=True):
        acc = part.loc[part.metric == ID_ACC, "value"]
        cells = part[(part.scorer == scorer) & part.group.isin(list(GROUPS))]
        table = []
        for group, mean_row in GROUPS.items():
            sets = list(dict.fromkeys(cells.loc[cells.group == group, "ood_set"]))
            if not sets:
                continue
            block = pd.DataFrame(
                {col: [_value(cells, name, metric) for name in sets]
                 for col, metric in COLUMNS.items()}, index=sets)
            block.loc[mean_row] = block.mean(axis=0, skipna=False)
            table.append(block)
        frame = pd.concat(table) * 100 if table else pd.DataFrame(columns=[*COLUMNS])
        frame[ACC] = float(acc.iloc[0]) * 100 if len(acc) else np.nan
        out[int(seed)] = frame
    return out


def _value(cells: pd.DataFrame, name: str, metric: str) -> float:
    hit = cells.loc[(cells.ood_set == name) & (cells.metric == metric), "value"]
    return float(hit.iloc[0]) if len(hit) else np.nan


def openood_table(df: pd.DataFrame, training: str, scorer: str) -> pd.DataFrame:
    """OpenOOD's table of one training and scorer: ``"mean ± std"`` over seeds (a failed
    cell: ``"failed"``)."""
    frames = list(seed_frames(df, training, scorer).values())
    stacked = np.stack([f.to_numpy(dtype=float) for f in frames])
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    text = np.where(np.isnan(mean), "failed",
                    np.char.add(np.char.add(np.char.mod("%.2f", mean), " \u00b1 "),
                                np.char.mod("%.2f", std)))
    return pd.DataFrame(text, index=frames[0].index, columns=frames[0].columns)


def write_openood_csvs(df: pd.DataFrame, out: Path) -> list[Path]:
    """Every (training, scorer) table as ``out/<training>/ood/<scorer>.csv``, OpenOOD's
    layout; returns the files written."""
    written = []
    scorers = [s for s in dict.fromkeys(df.scorer.dropna()) if s]
    for training in dict.fromkeys(df.training):
        for scorer in scorers:
            if df[(df.training == training) & (df.scorer == scorer)].empty:
                continue
            path = inside(out, training, "ood", f"{scorer}.csv")
            atomic_write_bytes(path, openood_table(df, training, scorer).to_csv().encode())
            written.append(path)
    return written
