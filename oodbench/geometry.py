"""Feature-geometry diagnostics of one checkpoint, from the passes its scoring already made
(no model pass of their own): why a training helps the logit- and activation-based scorers and
hurts the distance-based ones (knn, mahalanobis, rmds, vim).

Per sample, stored beside the scores (``scores.npz`` keys ``<prefix>/<dataset>``, float64,
NaN where the inputs are not finite), for the ID test set and every OOD set:

- ``_featnorm``: the L2 norm of the penultimate feature;
- ``_nn_dist``: the distance to the nearest ID-train feature in the L2-normalised feature
  space, the knn scorer's (k = 1, every ID-train sample in the bank), found by the same
  search (:func:`oodbench.neighbours.topk_inner`, float32 inner products);
- ``_logit_norm``: the L2 norm of the logit vector.

Per checkpoint (``geometry.csv``: one row per quantity and set), on the ID test features with
their true labels (unknown ones, -1, left out), in float64: the traces of the within- and
between-class scatter per sample, ``S_W = 1/N sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T`` and
``S_B = 1/N sum_k n_k (mu_k - mu)(mu_k - mu)^T`` (their sum is the features' covariance),
their ratio ``tr(S_W) / tr(S_B)``, and the effective rank of the centred features (Roy &
Vetterli, EUSIPCO 2007: exp of the Shannon entropy of the singular values normalised to sum
1); and for every per-sample quantity and set, its median and 5% / 95% quantiles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.neighbours import topk_inner
from oodbench.scoring import Features, to_scores
from oodbench.stats import within_class

# npz key prefixes of the per-sample diagnostics, which may hold NaN (scores may not)
FEATNORM = "_featnorm"
NN_DIST = "_nn_dist"
LOGIT_NORM = "_logit_norm"
PER_SAMPLE = (FEATNORM, NN_DIST, LOGIT_NORM)

# the per-checkpoint quantities of the ID test set, and the quantiles of each per-sample one
WITHIN, BETWEEN = "within_scatter", "between_scatter"  # tr(S_W), tr(S_B)
RATIO, ERANK = "scatter_ratio", "effective_rank"
QUANTILES = {"q05": 0.05, "median": 0.5, "q95": 0.95}
GEOMETRY_COLUMNS = ("benchmark", "training", "seed", "quantity", "set", "value")


def class_scatter(features: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 within- and between-class scatter matrices per sample (D x D each) of the
    rows whose label is known (>= 0), from chunked class statistics (:mod:`oodbench.stats`)."""
    known = labels >= 0
    if not bool(known.all()):
        features, labels = features[known], labels[known]
    means, counts, within = within_class(features, labels)
    n = len(features)
    offsets = means - counts.double() @ means / n  # class means about the global mean
    between = (offsets.T * counts) @ offsets
    return within / n, between / n


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp of the Shannon entropy of ``singular_values`` normalised to sum 1 (0 log 0 = 0):
    k for k equal non-zero values; NaN when none is positive or one is not finite."""
    s = singular_values.double()
    total = s.sum()
    if not bool(torch.isfinite(s).all()) or total <= 0:
        return math.nan
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def class_geometry(features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """tr(S_W), tr(S_B), their ratio (NaN where tr(S_B) is 0) and the effective rank of the
    centred ``features`` (from the eigenvalues of their covariance, S_W + S_B: no N x D float64
    copy), by quantity name."""
    within, between = class_scatter(features, labels)
    tr_w, tr_b = float(within.trace()), float(between.trace())
    total = within + between
    erank = (effective_rank(torch.linalg.eigvalsh(total).clamp(min=0).sqrt())
             if bool(torch.isfinite(total).all()) else math.nan)
    return {WITHIN: tr_w, BETWEEN: tr_b, RATIO: tr_w / tr_b if tr_b > 0 else math.nan,
            ERANK: erank}


def nn_distances(sets: Mapping[str, torch.Tensor],
                 bank: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each set's float64 L2 distances (one per row) to its nearest ``bank`` row, rows and bank
    L2-normalised as the knn scorer does: ``sqrt(2 - 2 max_j z.b_j)``."""
    normed = F.normalize(bank, dim=1)
    return {name: (2 - 2 * topk_inner(F.normalize(rows, dim=1), normed, 1)[:, 0].double())
            .clamp(min=0).sqrt() for name, rows in sets.items()}


def per_sample(train: Features, sets: Mapping[str, Features]) -> dict[str, np.ndarray]:
    """``<prefix>/<set>`` -> the float64 per-sample diagnostics of every set (one search of
    each against ``train``'s features)."""
    dists = nn_distances({n: f.features for n, f in sets.items()}, train.features)
    return ({f"{FEATNORM}/{n}": to_scores(f.features.double().norm(dim=1))
             for n, f in sets.items()}
            | {f"{NN_DIST}/{n}": to_scores(d) for n, d in dists.items()}
            | {f"{LOGIT_NORM}/{n}": to_scores(f.logits.double().norm(dim=1))
               for n, f in sets.items()})


def summary(samples: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Rows (quantity, set, value) of the :data:`QUANTILES` of every ``<prefix>/<set>`` array
    (quantity ``<prefix>_<quantile>``, e.g. ``nn_dist_median``; NaN for an empty set)."""
    rows = []
    for key, values in samples.items():
        prefix, _, name = key.partition("/")
        rows += [{"quantity": f"{prefix.lstrip('_')}_{q}", "set": name,
                  "value": float(np.quantile(values, p)) if values.size else math.nan}
                 for q, p in QUANTILES.items()]
    return rows


def diagnose(train: Features, sets: Mapping[str, Features],
             id_name: str) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The per-sample diagnostics of ``sets`` (:func:`per_sample`) and the per-checkpoint rows
    (quantity, set, value): :func:`class_geometry` of the ID test set ``sets[id_name]``, then
    the :func:`summary` of the per-sample ones."""
    samples = per_sample(train, sets)
    test = sets[id_name]
    rows = [{"quantity": q, "set": id_name, "value": v}
            for q, v in class_geometry(test.features, test.labels).items()]
    return samples, rows + summary(samples)
