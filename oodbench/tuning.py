"""Per-scorer hyper-parameter search, on the validation side only.

A benchmark's ``scorer_grids`` maps a scorer to lists of candidate values, e.g.
``react = { percentile = [80, 85, 90, 95] }`` (OpenOOD v1.5 sweeps the same way). Every
combination is fitted on ID-train and scored on ID-validation (held out from ID-train) against
the ``val_ood`` sets; the one with the lowest mean FPR95 (ties: highest mean AUROC) is used on
the test sets. The test OOD sets are never looked at.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from oodbench.metrics import AUROC, FPR95, ood_metrics
from oodbench.scoring import ScorerFailed

VAL_ID = "_val_id"


def candidates(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid, in the order the values are listed."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def _rank(trial: dict[str, Any]) -> tuple[float, float]:
    """Lowest mean validation FPR95 first, ties by highest mean AUROC."""
    return trial["val_fpr95"], -trial["val_auroc"]


def select_params(
    grid: Mapping[str, list[Any]],
    evaluate: Callable[[dict[str, Any]], dict[str, np.ndarray]],
    val_ood: list[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Pick the grid point with the lowest mean validation FPR95.

    ``evaluate(params)`` returns scores for ``VAL_ID`` and each name in ``val_ood``; it may
    raise :class:`ScorerFailed` for a candidate (recorded, skipped). Returns the chosen values
    and one record per candidate.
    """
    trials: list[dict[str, Any]] = []
    for params in candidates(grid):
        try:
            scores = evaluate(params)
        except ScorerFailed as e:
            trials.append({"params": params, "error": e.reason})
            continue
        metrics = [ood_metrics(scores[VAL_ID], scores[name]) for name in val_ood]
        trials.append({"params": params,
                       "val_fpr95": float(np.mean([m[FPR95] for m in metrics])),
                       "val_auroc": float(np.mean([m[AUROC] for m in metrics]))})
    scored = [t for t in trials if "error" not in t and not math.isnan(t["val_fpr95"])]
    if not scored:
        reasons = "; ".join(f"{t['params']}: {t.get('error', 'NaN')}" for t in trials)
        raise ScorerFailed(f"every grid point failed on the validation side ({reasons})")
    best = min(scored, key=_rank)
    return dict(best["params"]), trials
