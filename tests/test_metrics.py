"""Metrics: hand-computed cases, ties, extremes and brute-force cross-checks."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from oodbench.metrics import (
    DEGENERATE_FRACTION,
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    degenerate_note,
    fpr95,
    fpr95_oodpos,
    ood_metrics,
)

KEYS = {"fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out"}


def brute_fpr95(ids: np.ndarray, oods: np.ndarray) -> float:
    """Strictest threshold t with mean(ids >= t) >= 0.95; return mean(oods >= t)."""
    ok = [t for t in np.unique(np.concatenate([ids, oods])) if (ids >= t).mean() >= 0.95]
    return float((oods >= max(ok)).mean())


def brute_fpr95_oodpos(ids: np.ndarray, oods: np.ndarray) -> float:
    """Strictest t with mean(oods <= t) >= 0.95 (flag score <= t as OOD); return mean(ids <= t)."""
    ok = [t for t in np.unique(np.concatenate([ids, oods])) if (oods <= t).mean() >= 0.95]
    return float((ids <= min(ok)).mean())


def brute_auroc(ids: np.ndarray, oods: np.ndarray) -> float:
    """P(id > ood) + P(id == ood) / 2 over all pairs."""
    diff = ids[:, None] - oods[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def test_hand_computed_small() -> None:
    ids = [0.9, 0.8, 0.7, 0.6]
    oods = [0.75, 0.5, 0.4]
    # fpr95: 95% of 4 ID needs all 4 -> t = 0.6; OOD >= 0.6: {0.75} -> 1/3
    assert fpr95(ids, oods) == pytest.approx(1 / 3)
    # fpr95_oodpos: 95% of 3 OOD needs all 3 -> flag score <= 0.75; ID flagged {0.7, 0.6} -> 2/4
    assert fpr95_oodpos(ids, oods) == pytest.approx(0.5)
    # auroc: ID>OOD pairs: 0.9->3, 0.8->3, 0.7->2, 0.6->2 = 10 of 4*3 = 12
    assert auroc(ids, oods) == pytest.approx(10 / 12)
    # aupr_in: ranking I I O I I O O; precision at each ID hit 1/1, 2/2, 3/4, 4/5
    #   AP = (1 + 1 + 0.75 + 0.8) / 4 = 0.8875
    assert aupr_in(ids, oods) == pytest.approx(0.8875)
    # aupr_out: ranking by -score: O(0.4) O(0.5) I I O(0.75) I I; precision at OOD hits 1, 1, 3/5
    #   AP = (1 + 1 + 0.6) / 3 = 2.6 / 3
    assert aupr_out(ids, oods) == pytest.approx(2.6 / 3)
    expected = dict(fpr95=1 / 3, fpr95_oodpos=0.5, auroc=10 / 12, aupr_in=0.8875, aupr_out=2.6 / 3)
    assert ood_metrics(ids, oods) == pytest.approx(expected)


def test_hand_computed_95_percent_with_tie() -> None:
    ids = np.arange(1, 21, dtype=float)  # 1, 2, ..., 20
    oods = [0.0, 1.5, 2.0, 3.0, 25.0]
    # fpr95: 19 of 20 ID (0.95) have score >= 2 -> t = 2; OOD >= 2: {2 (tied), 3, 25} -> 3/5
    assert fpr95(ids, oods) == pytest.approx(0.6)
    # fpr95_oodpos: 4 of 5 OOD is only 0.8, so all 5 -> flag score <= 25: every ID -> 20/20
    assert fpr95_oodpos(ids, oods) == pytest.approx(1.0)
    # auroc: ID above 0 -> 20, above 1.5 -> 19, above 2 -> 18 + tie 0.5, above 3 -> 17 + tie
    #   0.5, above 25 -> 0; (20 + 19 + 18.5 + 17.5 + 0) / (20 * 5) = 0.75
    assert auroc(ids, oods) == pytest.approx(0.75)


def test_all_tied() -> None:
    ids, oods = np.full(10, 3.0), np.full(7, 3.0)
    m = ood_metrics(ids, oods)
    assert set(m) == KEYS
    assert m["fpr95"] == 1.0 and m["fpr95_oodpos"] == 1.0 and m["auroc"] == 0.5
    assert m["aupr_in"] == pytest.approx(10 / 17) and m["aupr_out"] == pytest.approx(7 / 17)


def test_perfect_separation() -> None:
    m = ood_metrics([2.0, 3.0, 4.0], [0.0, 1.0])
    assert m == {"fpr95": 0.0, "fpr95_oodpos": 0.0, "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0}


def test_reversed() -> None:
    m = ood_metrics([0.0, 1.0], [2.0, 3.0, 4.0])
    assert m["fpr95"] == 1.0 and m["fpr95_oodpos"] == 1.0 and m["auroc"] == 0.0
    # aupr_in: ranking O O O I I -> precision at ID hits 1/4, 2/5 -> (0.25 + 0.4) / 2 = 0.325
    assert m["aupr_in"] == pytest.approx(0.325)
    # aupr_out: ranking by -score I I O O O -> precision at OOD hits 1/3, 2/4, 3/5
    assert m["aupr_out"] == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)


@pytest.mark.parametrize("seed", range(5))
def test_random_continuous_vs_sklearn_and_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.normal(1.0, 1.0, size=rng.integers(20, 200))
    oods = rng.normal(0.0, 1.0, size=rng.integers(20, 200))
    y = np.r_[np.ones(ids.size), np.zeros(oods.size)]
    s = np.r_[ids, oods]
    m = ood_metrics(ids, oods)
    assert m["auroc"] == pytest.approx(brute_auroc(ids, oods))
    assert m["auroc"] == pytest.approx(roc_auc_score(1 - y, -s))  # OOD positive, negated
    assert m["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    assert m["fpr95"] == pytest.approx(brute_fpr95(ids, oods))
    assert m["fpr95_oodpos"] == pytest.approx(brute_fpr95_oodpos(ids, oods))


@pytest.mark.parametrize("seed", range(20))
def test_random_integer_ties_vs_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    ids = rng.integers(0, 8, size=rng.integers(1, 60)).astype(float)
    oods = rng.integers(-3, 5, size=rng.integers(1, 60)).astype(float)
    assert fpr95(ids, oods) == pytest.approx(brute_fpr95(ids, oods))
    assert fpr95_oodpos(ids, oods) == pytest.approx(brute_fpr95_oodpos(ids, oods))
    assert auroc(ids, oods) == pytest.approx(brute_auroc(ids, oods))


def test_accepts_torch_and_lists() -> None:
    ids, oods = torch.tensor([0.9, 0.8]), [0.1, 0.85]
    assert auroc(ids, oods) == pytest.approx(0.75)  # 0.9 beats both, 0.8 beats 0.1: 3/4


@pytest.mark.parametrize(
    ("ids", "oods", "match"),
    [
        ([], [1.0], "id_scores is empty"),
        ([1.0], np.array([]), "ood_scores is empty"),
        ([1.0, np.nan], [0.0], "id_scores has 1 non-finite"),
        ([1.0], [np.inf, -np.inf], "ood_scores has 2 non-finite"),
        ([[1.0]], [0.0], "must be 1-D"),
    ],
)
def test_invalid_scores(ids: object, oods: object, match: str) -> None:
    for fn in (fpr95, fpr95_oodpos, auroc, aupr_in, aupr_out, ood_metrics):
        with pytest.raises(ValueError, match=match):
            fn(ids, oods)


def test_degenerate_scores_are_flagged_above_the_threshold() -> None:
    assert degenerate_note(np.full(60, 2.5), np.full(40, 2.5)) == (
        "warning: 100.0% of scores equal (constant)")
    n = 1000
    at = int(n * DEGENERATE_FRACTION)  # exactly at the threshold: not flagged
    ids, oods = np.zeros(n // 2), np.r_[np.zeros(at - n // 2), np.arange(1.0, n - at + 1)]
    assert degenerate_note(ids, oods) == ""
    oods[-1] = 0.0
    assert degenerate_note(ids, oods) == "warning: 99.1% of scores equal (near-constant)"
    assert degenerate_note(np.arange(50.0), np.arange(50.0)) == ""


def test_accuracy() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    # argmax -> [0, 1, 2, 0]; correct 3 of 4
    assert accuracy(logits, labels) == 0.75
    assert accuracy(np.array([0, 1, 2, 0]), [0, 1, 1, 0]) == 0.75
    with pytest.raises(ValueError, match="no samples"):
        accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="unknown"):
        accuracy(logits, torch.tensor([0, 1, -1, 0]))
    with pytest.raises(ValueError, match="shapes"):
        accuracy(logits, labels[:3])
