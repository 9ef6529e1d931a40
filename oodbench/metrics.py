"""OOD-detection metrics on scores where HIGHER = MORE in-distribution.

Every function takes ``id_scores`` and ``ood_scores`` (1-D, finite, non-empty). Curves come
from scikit-learn; tied scores share one threshold, so tied samples are always counted
together.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.metrics import auc, average_precision_score, roc_curve

__all__ = [
    "BOUNDS",
    "COLUMNS",
    "DEGENERATE_FRACTION",
    "ID_ACC",
    "LOWER_IS_BETTER",
    "METRIC_LABELS",
    "OOD_METRICS",
    "WARNING",
    "accuracy",
    "aupr_in",
    "aupr_out",
    "auroc",
    "degenerate_note",
    "fpr95",
    "fpr95_oodpos",
    "nonfinite_note",
    "ood_metrics",
    "roc_points",
]

RECALL = 0.95

# every metric name, its display label and its direction: the one place that defines them
FPR95, FPR95_OODPOS, AUROC, AUPR_IN, AUPR_OUT = (
    "fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out")
OOD_METRICS = (FPR95, FPR95_OODPOS, AUROC, AUPR_IN, AUPR_OUT)
ID_ACC = "id_acc"
HEADLINE = (FPR95, AUROC)  # the metrics the summary tables and exports show
# the bounds of each headline metric's bootstrap interval over the test samples of a cell
# (oodbench.uncertainty): rows of their own, beside the metrics
FPR95_LO, FPR95_HI, AUROC_LO, AUROC_HI = "fpr95_lo", "fpr95_hi", "auroc_lo", "auroc_hi"
BOUNDS: dict[str, tuple[str, str]] = {FPR95: (FPR95_LO, FPR95_HI), AUROC: (AUROC_LO, AUROC_HI)}
METRIC_LABELS: dict[str, str] = {
    FPR95: "FPR95 ↓",
    FPR95_OODPOS: "FPR95 (OOD positive) ↓",
    AUROC: "AUROC ↑",
    AUPR_IN: "AUPR-In ↑",
    AUPR_OUT: "AUPR-Out ↑",
    ID_ACC: "ID acc. ↑",
}
LOWER_IS_BETTER = frozenset({FPR95, FPR95_OODPOS, FPR95_LO, FPR95_HI})
# the columns of metrics.csv, one row per (training, seed, scorer, OOD set, metric)
COLUMNS = ("benchmark", "training", "seed", "scorer", "ood_set", "group", "metric", "value",
           "note")
# a ``note`` that starts so flags a cell whose value stands (a failed cell's value is NaN)
WARNING = "warning: "
# the text of a table cell (report's tables, the OpenOOD export) whose value failed / is missing
FAILED, MISSING = "failed", "—"
# scores that give one value to more than this share of ID test + OOD samples are degenerate
DEGENERATE_FRACTION = 0.99


def _as_scores(values: ArrayLike | torch.Tensor, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{what} has {bad} non-finite (NaN/inf) values")
    return arr


def _id_positive(
    id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels with ID = 1, scores) for ID-positive curves."""
    ids = _as_scores(id_scores, "id_scores")
    oods = _as_scores(ood_scores, "ood_scores")
    labels = np.concatenate([np.ones(ids.size, dtype=np.int64), np.zeros(oods.size, np.int64)])
    return labels, np.concatenate([ids, oods])


def roc_points(labels: np.ndarray, scores: np.ndarray,
               drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of scikit-learn's ROC curve, every point unless ``drop_intermediate``.
    Finite scores near ±float64 max overflow the differences it takes between sorted scores
    to ±inf, which still tell distinct scores apart: that overflow is expected, not warned
    about."""
    with np.errstate(over="ignore"):
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=drop_intermediate)
    return fpr, tpr


def _fpr_at_recall(labels: np.ndarray, scores: np.ndarray) -> float:
    """FPR at the first ROC operating point whose TPR reaches ``RECALL``."""
    fpr, tpr = roc_points(labels, scores)
    return float(fpr[np.argmax(tpr >= RECALL)])


def fpr95(id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor) -> float:
    """FPR at 95% TPR, ID positive (headline; as in the ReAct, ASH and KNN papers).

    The threshold t is the strictest one with at least 95% of ID scores >= t; the result is the
    fraction of OOD scores >= t (OOD accepted as ID). Lower is better.
    """
    return _fpr_at_recall(*_id_positive(id_scores, ood_scores))


def fpr95_oodpos(
    id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor
) -> float:
    """FPR at 95% TPR, OOD positive (OpenOOD v1.5's positive class).

    OOD-ness is -score; the threshold is the strictest one flagging at least 95% of OOD
    samples, and the result is the fraction of ID samples flagged as OOD. Lower is better.
    Every ROC point is kept, so under ties this can differ from OpenOOD's own FPR@95
    (scikit-learn's ``drop_intermediate``; :func:`oodbench.openood.openood_metrics`).
    """
    labels, scores = _id_positive(id_scores, ood_scores)
    return _fpr_at_recall(1 - labels, -scores)


def auroc(id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor) -> float:
    """Area under the ROC curve with ID positive.

    Identical to the AUROC with OOD positive on negated scores (OpenOOD v1.5). Ties count 1/2.
    Computed as :func:`ood_metrics` does (trapezoids under scikit-learn's full ROC curve), so
    the two agree to the last bit; scikit-learn's ``roc_auc_score`` agrees to ~1e-15.
    """
    fpr, tpr = roc_points(*_id_positive(id_scores, ood_scores))
    return float(auc(fpr, tpr))


def aupr_in(id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor) -> float:
    """Area under the precision-recall curve with ID positive (average precision)."""
    return _ap(*_id_positive(id_scores, ood_scores))


def aupr_out(id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor) -> float:
    """Area under the precision-recall curve with OOD positive on negated scores (AP)."""
    labels, scores = _id_positive(id_scores, ood_scores)
    return _ap(1 - labels, -scores)


def _ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's average precision, clipped to [0, 1]: its float sum can overshoot 1 by
    an ulp (found by tests/test_fuzz.py)."""
    with np.errstate(over="ignore"):  # as in roc_points
        return min(1.0, max(0.0, float(average_precision_score(labels, scores))))


def _curve_metrics(tps: np.ndarray, fps: np.ndarray) -> tuple[float, float]:
    """(FPR at 95% TPR, average precision) from cumulative true / false positive counts at
    decreasing thresholds, starting at (0, 0), as scikit-learn's curves define them."""
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    precision = tps[1:] / (tps[1:] + fps[1:])
    ap = float(np.sum(np.diff(tpr) * precision))
    return float(fpr[np.argmax(tpr >= RECALL)]), min(1.0, max(0.0, ap))


def ood_metrics(
    id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor
) -> dict[str, float]:
    """All five metrics: fpr95, fpr95_oodpos, auroc, aupr_in, aupr_out.

    One scikit-learn ROC curve (one sort) serves all five: the OOD-positive curve on negated
    scores visits the same thresholds in reverse, with the complementary counts. Equal to the
    single-metric functions above (tests/test_metrics.py, tests/test_fuzz.py).
    """
    labels, scores = _id_positive(id_scores, ood_scores)
    fpr, tpr = roc_points(labels, scores)
    n_id, n_ood = int(labels.sum()), int(labels.size - labels.sum())
    tps, fps = np.rint(tpr * n_id), np.rint(fpr * n_ood)
    fpr95_in, ap_in = _curve_metrics(tps, fps)
    fpr95_out, ap_out = _curve_metrics(n_ood - fps[::-1], n_id - tps[::-1])
    return dict(zip(OOD_METRICS, (fpr95_in, fpr95_out, float(auc(fpr, tpr)), ap_in, ap_out),
                    strict=True))


def degenerate_note(
    id_scores: ArrayLike | torch.Tensor, ood_scores: ArrayLike | torch.Tensor
) -> str:
    """A ``WARNING`` note when more than ``DEGENERATE_FRACTION`` of the ID and OOD scores
    together share one value (the metrics then mostly measure tie-breaking), else ``""``."""
    _, scores = _id_positive(id_scores, ood_scores)
    _, counts = np.unique(scores, return_counts=True)
    share = counts.max() / scores.size
    if share <= DEGENERATE_FRACTION:
        return ""
    kind = "constant" if counts.size == 1 else "near-constant"
    return f"{WARNING}{share:.1%} of scores equal ({kind})"


def nonfinite_note(logits: ArrayLike | torch.Tensor, what: str) -> str:
    """Why N x K ``logits`` (of ``what``) give no accuracy: how many rows hold a NaN or
    infinite value (argmax would take a NaN for the largest); ``""`` when all are finite."""
    values = _numpy(logits)
    if values.ndim != 2 or values.dtype.kind not in "fc":
        return ""
    bad = int((~np.isfinite(values)).any(axis=1).sum())
    if not bad:
        return ""
    return (f"{bad} of {len(values)} samples of {what} have non-finite (NaN/inf) logits, which "
            "have no argmax: the model's outputs are broken")


def _numpy(values: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def accuracy(logits_or_preds: ArrayLike | torch.Tensor, labels: ArrayLike | torch.Tensor) -> float:
    """Top-1 accuracy from N x K logits (argmax) or N predicted class indices.

    Every label must be known (>= 0), and every logit finite (:func:`nonfinite_note`).
    """
    values = _numpy(logits_or_preds)
    targets = _numpy(labels)
    broken = nonfinite_note(values, "the logits")
    if broken:
        raise ValueError(f"accuracy: {broken}")
    preds = values.argmax(axis=1) if values.ndim == 2 else values
    if preds.ndim != 1 or targets.ndim != 1 or preds.shape != targets.shape:
        raise ValueError(
            f"accuracy needs N x K logits or N predictions and N labels; got shapes "
            f"{values.shape} and {targets.shape}"
        )
    if targets.size == 0:
        raise ValueError("accuracy: no samples")
    if (targets < 0).any():
        raise ValueError("accuracy: labels contain unknown (-1) entries")
    return float((preds == targets).mean())
