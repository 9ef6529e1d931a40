"""SCALE: rescale the activations by ASH-S's factor without pruning, then the energy score.

Per sample with D activations a: k = D - round(D * p / 100); s1 = sum(a); s2 = sum of the k
largest entries (those at or above the per-sample p-th percentile); r = s1 / s2
score(x) = logsumexp_c(head(a * exp(r))_c)

Xu, Chen, Franchi & Yao, "Scaling for Training Time and Post-hoc Out-of-distribution Detection
Enhancement", ICLR 2024, arXiv:2310.00227. Default percentile p = 85 (OpenOOD v1.5). As
OpenOOD, the pooled penultimate features are scaled and ties at the cut are broken by
torch.topk. An all-zero sample (s2 = 0, where OpenOOD gives NaN) keeps its zero features.
Self-contained rather than sharing scorers/ash.py's ``ash``, which prunes and whose errors
name ash.
"""

import numpy as np
import torch

from oodbench.scoring import Features, Scorer, register_scorer, to_scores

from .energy import energy


def scale(features: torch.Tensor, percentile: float) -> torch.Tensor:
    """Multiply each row of N x D activations by exp(s1 / s2) at ``percentile``."""
    n_dims = features.shape[1]
    k = n_dims - round(n_dims * percentile / 100)
    if k < 1:
        raise ValueError(f"scale: percentile {percentile} keeps no activation out of {n_dims}")
    s1 = features.sum(dim=1)
    s2 = features.topk(k, dim=1).values.sum(dim=1)
    ratio = torch.where(s2 > 0, s1 / s2, torch.zeros_like(s1))
    return features * torch.exp(ratio).unsqueeze(1)


@register_scorer("scale")
class SCALE(Scorer):
    """Energy of the head applied to SCALE-rescaled penultimate features."""

    group = "activations"

    def __init__(self, percentile: float = 85.0) -> None:
        if not 0 <= percentile < 100:
            raise ValueError(f"scale: percentile must be in [0, 100), got {percentile}")
        self.percentile = percentile

    def score(self, data: Features) -> np.ndarray:
        """Return the energy of head(scale(features))."""
        head = self._fitted(self.head_)
        return to_scores(energy(head.logits(scale(data.features, self.percentile))))
