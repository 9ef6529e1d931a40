"""Verdicts: whether a training is better or worse than the baseline training, per scorer and
metric, by a stated test.

For each (training other than the baseline, scorer) cell of a metric, the paired differences
treatment − baseline, one per (seed, OOD set) over the OOD sets outside the excluded groups
(the noise sets), go to a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
``zero_method="wilcox"``: zero differences are dropped). A pair where either value failed
(NaN) is left out, and ``n`` counts the pairs that are left. The p-values of every cell of one
metric are then corrected together (Holm's step-down, or none), and a cell whose corrected p
is at most ``alpha`` is better or worse by the sign of W+ − W− (the sum of the ranks of the
positive differences minus that of the negative ones): better is lower for a lower-is-better
metric (FPR95), higher otherwise. Any other cell is "no evidence".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata, wilcoxon

from oodbench.metrics import LOWER_IS_BETTER

__all__ = [
    "BETTER",
    "CORRECTIONS",
    "MARKS",
    "NO_EVIDENCE",
    "WORSE",
    "Verdict",
    "cell_verdicts",
    "describe",
    "holm",
    "min_attainable_p",
]

BETTER, NO_EVIDENCE, WORSE = "better", "no evidence", "worse"
MARKS = {BETTER: "▲", NO_EVIDENCE: "", WORSE: "▼"}  # shown after a table's Δ
CORRECTIONS = ("holm", "none")
TEST = ("two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, zero_method 'wilcox': "
        "zero differences dropped) on the paired differences treatment − baseline")
PAIRING = "(seed, OOD set)"


@dataclass(frozen=True)
class Verdict:
    """One cell's test: ``n`` pairs (failed ones left out), the mean difference ``delta``
    (treatment − baseline, metric units), ``statistic`` W+ − W−, the raw and corrected p
    (NaN without a pair) and the verdict (:data:`BETTER`, :data:`NO_EVIDENCE`,
    :data:`WORSE`)."""

    training: str
    scorer: str
    metric: str
    n: int
    delta: float
    statistic: float
    p: float
    p_adjusted: float
    verdict: str

    def record(self) -> dict[str, Any]:
        """JSON-ready: NaN as ``None``."""
        return {k: None if isinstance(v, float) and np.isnan(v) else v
                for k, v in asdict(self).items()}


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are not tested: they stay NaN and do
    not count): the i-th smallest of k is ``max_{j <= i} min(1, (k - j + 1) p_(j))``."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = (len(order) - np.arange(len(order))) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def min_attainable_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with ``n`` non-zero
    differences (every one of the same sign): ``2 / 2**n``, at most 1."""
    return min(1.0, 2.0 ** (1 - n))


def _signed_rank(diffs: np.ndarray) -> tuple[float, float]:
    """(W+ − W−, two-sided p) of the differences; with no non-zero difference, (0, 1)."""
    nonzero = diffs[diffs != 0]
    if not nonzero.size:
        return 0.0, 1.0
    ranks = rankdata(np.abs(nonzero))
    statistic = float(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum())
    return statistic, float(wilcoxon(diffs, zero_method="wilcox").pvalue)


def _verdict(metric: str, statistic: float, p_adjusted: float, alpha: float) -> str:
    if np.isnan(p_adjusted) or p_adjusted > alpha or statistic == 0:
        return NO_EVIDENCE
    lower = statistic < 0
    return BETTER if lower == (metric in LOWER_IS_BETTER) else WORSE


def cell_verdicts(df: pd.DataFrame, metric: str, baseline: str, alpha: float,
                  correction: str, exclude: Collection[str]) -> list[Verdict]:
    """The verdict of every (training other than ``baseline``, scorer) cell of ``metric`` in
    the metrics frame ``df`` (text columns as ``str``), the sets of the groups in ``exclude``
    left out, in order of appearance; ``correction`` (:data:`CORRECTIONS`) over them all."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction {correction!r} is none of {', '.join(CORRECTIONS)}")
    rows = df[(df["metric"] == metric) & (df["scorer"] != "") & ~df["group"].isin(exclude)]
    values = rows.pivot(index=["scorer", "seed", "ood_set"], columns="training", values="value")
    cells = []
    for training in (t for t in rows["training"].unique() if t != baseline):
        for scorer in rows["scorer"].unique():
            if baseline not in values or scorer not in values.index.get_level_values(0):
                pairs = np.empty(0)
            else:
                pairs = (values.loc[scorer, training] - values.loc[scorer, baseline]).dropna()
            diffs = np.asarray(pairs, dtype=np.float64)
            statistic, p = _signed_rank(diffs) if diffs.size else (np.nan, np.nan)
            cells.append((training, scorer, diffs, statistic, p))
    raw = np.array([c[4] for c in cells], dtype=np.float64)
    adjusted = holm(raw) if correction == "holm" else raw
    return [Verdict(training, scorer, metric, int(diffs.size),
                    float(diffs.mean()) if diffs.size else np.nan, statistic, p, float(q),
                    _verdict(metric, statistic, q, alpha))
            for (training, scorer, diffs, statistic, p), q in zip(cells, adjusted, strict=True)]


def describe(alpha: float, correction: str, exclude: Collection[str]) -> dict[str, Any]:
    """The test, its pairing, α and correction, for a manifest."""
    return {"test": TEST, "pairing": f"{PAIRING}, over the OOD sets outside the groups "
            f"{', '.join(sorted(exclude))}; a failed value leaves its pair out",
            "alpha": alpha, "correction": correction,
            "family": "every (training, scorer) cell of one metric",
            "direction": "the sign of W+ − W−: lower is better for FPR95, higher for AUROC"}
