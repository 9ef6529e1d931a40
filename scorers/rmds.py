"""RMDS: relative Mahalanobis distance, class-conditional minus background.

mu_k = mean of ID-train features of class k;  Sigma = (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T
mu_0 = mean of all ID-train features;         Sigma_0 = (1/N) sum_i (f_i - mu_0)(f_i - mu_0)^T
MD_k(x) = (f(x) - mu_k)^T Sigma^+ (f(x) - mu_k),  MD_0(x) = (f(x) - mu_0)^T Sigma_0^+ (f(x) - mu_0)
score(x) = -min_k (MD_k(x) - MD_0(x)) = MD_0(x) - min_k MD_k(x)

The class means and tied covariance are exactly those of the "mahalanobis" scorer (the same
chunked pass, :func:`oodbench.stats.within_class`); the background Gaussian is estimated the
same way: divide by N and the hermitian pseudo-inverse, as sklearn's EmpiricalCovariance used
by OpenOOD. Its scatter comes without a second pass over the features, from the within-class
one: sum_i (f_i - mu_0)(f_i - mu_0)^T = within + sum_k n_k (mu_k - mu_0)(mu_k - mu_0)^T (exact:
the cross terms vanish). Everything is computed in float64, in chunks of chunk_size samples.

Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, "A Simple Fix to Mahalanobis Distance for
Improving Near-OOD Detection", arXiv:2106.09022 (ICML 2021 UDL workshop). As OpenOOD v1.5's
"rmds" (no hyper-parameters), on the final penultimate features. OpenOOD loops over
range(num_classes); here the classes are those present in ID-train (as "mahalanobis").
"""

from typing import Self

import numpy as np
import torch

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores
from oodbench.stats import mahalanobis, min_mahalanobis, pinv_covariance, within_class


@register_scorer("rmds")
class RMDS(Scorer):
    """Negative minimum class Mahalanobis distance relative to the background distance."""

    group = "features"

    means_: torch.Tensor | None = None
    precision_: torch.Tensor | None = None
    background_mean_: torch.Tensor | None = None
    background_precision_: torch.Tensor | None = None

    def __init__(self, chunk_size: int = 1024) -> None:
        if chunk_size < 1:
            raise ValueError(f"rmds: chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def fit(self, train: Features, head: Head) -> Self:
        """Fit the class Gaussians (tied covariance) and the background Gaussian."""
        if len(train) == 0 or bool((train.labels < 0).any()):
            n_unknown = int((train.labels < 0).sum())
            raise ValueError(
                "rmds: needs a non-empty ID-train set with known labels, got "
                f"{len(train)} samples of which {n_unknown} unlabelled"
            )
        means, counts, within = within_class(train.features, train.labels, self.chunk_size)
        mean = (means * counts.unsqueeze(1)).sum(dim=0) / len(train)
        offsets = means - mean
        total = within + offsets.T @ (offsets * counts.unsqueeze(1))
        self.means_ = means
        self.precision_ = pinv_covariance(within, len(train))
        self.background_mean_ = mean
        self.background_precision_ = pinv_covariance(total, len(train))
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return MD_0 - min_k MD_k per sample."""
        background = mahalanobis(data.features, self._fitted(self.background_mean_),
                                 self._fitted(self.background_precision_), self.chunk_size)
        nearest = min_mahalanobis(data.features, self._fitted(self.means_),
                                  self._fitted(self.precision_), self.chunk_size)
        return to_scores(background - nearest)
