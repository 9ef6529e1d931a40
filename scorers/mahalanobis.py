"""Mahalanobis: minimum class-conditional Mahalanobis distance under a tied covariance.

mu_c = mean of ID-train features of class c;  Sigma = (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T
score(x) = -min_c (f(x) - mu_c)^T Sigma^+ (f(x) - mu_c)

Sigma^+ is the Moore-Penrose pseudo-inverse (torch.linalg.pinv, hermitian), as sklearn's
EmpiricalCovariance used by OpenOOD: it equals the inverse when Sigma is well conditioned and
stays finite when it is singular (dead ReLU units, D > N). Everything is computed in float64,
in chunks of chunk_size samples (:mod:`oodbench.stats`): the fit holds no N x D copy of the
features, only the class sums and the D x D scatter.

Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples
and Adversarial Attacks", NeurIPS 2018, arXiv:1807.03888. As OpenOOD v1.5's "mds": the final
penultimate features only, no input perturbation, no feature ensemble.
"""

from typing import Self

import numpy as np
import torch

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores
from oodbench.stats import min_mahalanobis, pinv_covariance, within_class


@register_scorer("mahalanobis")
class Mahalanobis(Scorer):
    """Negative minimum Mahalanobis distance to the ID-train class means."""

    group = "features"

    means_: torch.Tensor | None = None
    precision_: torch.Tensor | None = None

    def __init__(self, chunk_size: int = 1024) -> None:
        if chunk_size < 1:
            raise ValueError(f"mahalanobis: chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def fit(self, train: Features, head: Head) -> Self:
        """Estimate class means and the pseudo-inverse of the tied covariance."""
        labels = train.labels
        if len(train) == 0 or bool((labels < 0).any()):
            raise ValueError("mahalanobis: needs a non-empty ID-train set with known labels")
        means, _, cov = within_class(train.features, labels, self.chunk_size)
        self.means_ = means
        self.precision_ = pinv_covariance(cov, len(train))
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return -min_c (f - mu_c)^T Sigma^+ (f - mu_c) per sample."""
        dists = min_mahalanobis(data.features, self._fitted(self.means_),
                                self._fitted(self.precision_), self.chunk_size)
        return to_scores(-dists.clamp(min=0))
