"""DICE: directed sparsification of the classifier head, then the energy score.

m = mean of the ID-train penultimate features (D);  V = W * m (elementwise, K x D: the
contribution of weight W_cd to logit c on an average ID sample);  t = p-th percentile of all
K x D entries of V;  W' = W * [V > t]
score(x) = logsumexp_c(f(x) @ W'^T + b)_c

Sun & Li, "DICE: Leveraging Sparsification for Out-of-Distribution Detection", ECCV 2022,
arXiv:2111.09805. Default sparsity p = 90 (OpenOOD v1.5 for CIFAR). As OpenOOD: m is taken on
ID-train, t with linear interpolation (np.percentile's default) and ties at t are pruned.
"""

from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores

from .energy import energy


@register_scorer("dice")
class DICE(Scorer):
    """Energy of a head whose weights are pruned by their mean ID-train contribution."""

    group = "activations"

    weight_: torch.Tensor | None = None

    def __init__(self, p: float = 90.0) -> None:
        if not 0 <= p < 100:
            raise ValueError(f"dice: p must be in [0, 100), got {p}")
        self.p = p

    def fit(self, train: Features, head: Head) -> Self:
        """Keep the head weights whose mean ID-train contribution exceeds the p-th percentile."""
        if len(train) == 0:
            raise ValueError("dice: needs a non-empty ID-train set")
        mean = train.features.double().mean(dim=0)
        contrib = head.weight.double() * mean
        threshold = torch.quantile(contrib.flatten(), self.p / 100)
        self.weight_ = head.weight * (contrib > threshold).to(head.weight.dtype)
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return logsumexp of f @ W'^T + b per sample."""
        head = self._fitted(self.head_)
        weight = self._fitted(self.weight_)
        return to_scores(energy(F.linear(data.features, weight, head.bias)))
