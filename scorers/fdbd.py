"""fDBD: mean distance to the decision boundaries, normalised by the distance to the ID mean.

c = argmax_k (w_k . f + b_k)   (the predicted class)
d_k(x) = |(w_c - w_k) . f(x) + (b_c - b_k)| / ||w_c - w_k||_2      for every k != c
score(x) = (1/(K-1)) sum_{k != c} d_k(x) / max(||f(x) - mu||_2, eps)

mu is the mean ID-train feature (distance_as_normalizer=True, the paper's default) or 0, i.e.
the feature norm (distance_as_normalizer=False, OpenOOD's alternative); eps = 1e-12.

Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector", ICML 2024,
arXiv:2312.11536. Default distance_as_normalizer = True (paper; OpenOOD v1.5's configured
default, which OpenOOD may switch on the ID validation set; here it is fixed). Deliberate
differences from OpenOOD, none changing the ranking beyond rounding: the mean over the K-1
other classes instead of OpenOOD's sum (a constant factor), and the logits recomputed in
float64 from the head and the cached features (OpenOOD uses the network's logits), so that
numerator and denominator describe the same boundary exactly.
"""

from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores

_EPS = 1e-12


@register_scorer("fdbd")
class FDBD(Scorer):
    """Mean feature-space distance to the other classes' decision boundaries, normalised."""

    group = "features"

    centre_: torch.Tensor | None = None
    boundary_norms_: torch.Tensor | None = None

    def __init__(self, distance_as_normalizer: bool = True) -> None:
        if not isinstance(distance_as_normalizer, bool):
            raise ValueError(
                f"fdbd: distance_as_normalizer must be a bool, got {distance_as_normalizer!r}"
            )
        self.distance_as_normalizer = distance_as_normalizer

    def fit(self, train: Features, head: Head) -> Self:
        """Compute the pairwise ||w_c - w_k|| and the centre mu (ID-train mean or 0)."""
        n_classes, n_dims = head.weight.shape
        if n_classes < 2:
            raise ValueError(f"fdbd: needs a head with >= 2 classes, got {n_classes}")
        weight = head.weight.double()
        norms = torch.cdist(weight, weight, compute_mode="donot_use_mm_for_euclid_dist")
        off_diagonal = ~torch.eye(n_classes, dtype=torch.bool)
        if bool((norms[off_diagonal] == 0).any()):
            pairs = (norms == 0).logical_and(off_diagonal).nonzero().tolist()
            raise ValueError(f"fdbd: classes with identical head weights, got pairs {pairs}")
        if self.distance_as_normalizer:
            if len(train) == 0:
                raise ValueError("fdbd: needs a non-empty ID-train set, got 0 samples")
            self.centre_ = train.features.sum(dim=0, dtype=torch.float64) / len(train)
        else:
            self.centre_ = weight.new_zeros(n_dims)
        self.boundary_norms_ = norms.fill_diagonal_(1.0)
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return the mean boundary distance over ||f - mu|| per sample."""
        head = self._fitted(self.head_)
        centre = self._fitted(self.centre_)
        boundary_norms = self._fitted(self.boundary_norms_)
        f = data.features.double()
        logits = F.linear(f, head.weight.double(), head.bias.double())
        top, pred = logits.max(dim=1)
        # top - logits >= 0 and is 0 at k = c, whose norm is set to 1: the sum skips c
        dists = (top.unsqueeze(1) - logits) / boundary_norms[pred]
        mean_dist = dists.sum(dim=1) / (logits.shape[1] - 1)
        return to_scores(mean_dist / (f - centre).norm(dim=1).clamp(min=_EPS))
