"""Verdicts: whether a training is better or worse than the baseline training, per scorer and
metric, by a stated test.

For each (training other than the baseline, scorer) cell of a metric, the paired differences
treatment − baseline, one per (seed, OOD set) over the OOD sets outside the excluded groups
(the noise sets), go to a two-sided paired test: a one-sample t-test of the differences
against 0 (``scipy.stats.ttest_1samp``; the default), or the Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, ``zero_method="wilcox"``: zero differences are dropped). A pair where
either value failed (NaN) is left out, and ``n`` counts the pairs that are left. The p-values
of every cell of one metric are then corrected together (Holm's step-down, or none), and a
cell whose corrected p is at most ``alpha`` is better or worse by the sign of the statistic
(t, or W+ − W−: the sum of the ranks of the positive differences minus that of the negative
ones): better is lower for a lower-is-better metric (FPR95), higher otherwise. Any other cell
is "no evidence".

The t-test is the default because the exact signed-rank test cannot go below p = 2 / 2**n: with
the 9 pairs of 3 seeds × 3 OOD sets that is 0.0039, above any Holm threshold over a matrix's
cells, so no cell could ever get a verdict. The pairs of one seed share a model, so the test
treats the OOD sets as replicates: a verdict says a difference holds across these seeds and
sets, not across OOD sets in general.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata, ttest_1samp, wilcoxon

from oodbench.metrics import LOWER_IS_BETTER

__all__ = [
    "BETTER",
    "CORRECTIONS",
    "MARKS",
    "NO_EVIDENCE",
    "TESTS",
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


class Test(NamedTuple):
    """A verdict test: its name in a footnote, what it is (for a manifest), its statistic."""

    name: str
    what: str
    statistic: str


TESTS = {
    "t": Test("paired t-test", "two-sided one-sample t-test (scipy.stats.ttest_1samp) of the "
              "paired differences treatment − baseline against 0", "t"),
    "wilcoxon": Test("Wilcoxon signed-rank test", "two-sided Wilcoxon signed-rank test "
                     "(scipy.stats.wilcoxon, zero_method 'wilcox': zero differences dropped) "
                     "on the paired differences treatment − baseline", "W+ − W−"),
}
PAIRING = "(seed, OOD set)"


@dataclass(frozen=True)
class Verdict:
    """One cell's test: ``n`` pairs (failed ones left out), the mean difference ``delta``
    (treatment − baseline, metric units), the test's ``statistic`` (t, or W+ − W−), the raw
    and corrected p
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


def min_attainable_p(n: int, test: str = "wilcoxon") -> float:
    """The smallest two-sided p ``test`` can give with ``n`` non-zero differences: for the
    exact signed-rank test (every one of the same sign) ``2 / 2**n``, at most 1; for the
    t-test 0 (a large enough t), given n >= 2."""
    if test == "t":
        return 0.0 if n >= 2 else 1.0
    return min(1.0, 2.0 ** (1 - n))


def _paired_t(diffs: np.ndarray) -> tuple[float, float]:
    """(t, two-sided p) of the differences against 0; (0, NaN), untested, for fewer than 2
    differences or ones without spread (equal to 1e-12 relative: t is undefined there)."""
    if diffs.size < 2 or np.allclose(diffs, diffs[0], rtol=1e-12, atol=0.0):
        return 0.0, float("nan")
    result = ttest_1samp(diffs, 0.0)
    return float(result.statistic), float(result.pvalue)


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
                  correction: str, exclude: Collection[str], test: str = "t") -> list[Verdict]:
    """The verdict of every (training other than ``baseline``, scorer) cell of ``metric`` in
    the metrics frame ``df`` (text columns as ``str``), the sets of the groups in ``exclude``
    left out, in order of appearance, by ``test`` (:data:`TESTS`); ``correction``
    (:data:`CORRECTIONS`) over them all."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction {correction!r} is none of {', '.join(CORRECTIONS)}")
    if test not in TESTS:
        raise ValueError(f"test {test!r} is none of {', '.join(TESTS)}")
    paired = _paired_t if test == "t" else _signed_rank
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
            statistic, p = paired(diffs) if diffs.size else (np.nan, np.nan)
            cells.append((training, scorer, diffs, statistic, p))
    raw = np.array([c[4] for c in cells], dtype=np.float64)
    adjusted = holm(raw) if correction == "holm" else raw
    return [Verdict(training, scorer, metric, int(diffs.size),
                    float(diffs.mean()) if diffs.size else np.nan, statistic, p, float(q),
                    _verdict(metric, statistic, q, alpha))
            for (training, scorer, diffs, statistic, p), q in zip(cells, adjusted, strict=True)]


def describe(alpha: float, correction: str, exclude: Collection[str],
             test: str = "t") -> dict[str, Any]:
    """The test, its pairing, α and correction, for a manifest."""
    what, statistic = TESTS[test].what, TESTS[test].statistic
    return {"test": what, "pairing": f"{PAIRING}, over the OOD sets outside the groups "
            f"{', '.join(sorted(exclude))}; a failed value leaves its pair out",
            "alpha": alpha, "correction": correction,
            "family": "every (training, scorer) cell of one metric",
            "direction": f"the sign of {statistic}: lower is better for FPR95, higher for AUROC"}
