"""ASH on the feature map, as the paper applies it: shape the last feature map, then pool.

Per sample, the C x H x W activations of the last feature map are shaped as in :mod:`scorers.ash`
(keep those at or above the p-th percentile; ASH-S scales them by exp(s1 / s2), ASH-B
binarises, ASH-P keeps them), then global-average-pooled and passed to the head:
  score(x) = logsumexp_c(head(pool(shaped(fmap(x))))_c)

Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for Out-of-Distribution
Detection", ICLR 2023, arXiv:2209.09858: the reference code shapes the map before pooling.
``ash`` (pooled features, as OpenOOD does) is the variant beside it; the README compares them.
Defaults: variant "s", percentile 90. It is a :class:`~oodbench.scoring.MapScorer`: its pooled
shaped features come from an extraction pass of its own (cached), not from the shared one.
"""

from typing import Literal

import numpy as np
import torch

from oodbench.scoring import Features, MapScorer, register_scorer, to_scores

from .ash import ash, check_params
from .energy import energy


@register_scorer("ash-map")
class ASHMap(MapScorer):
    """Energy of the head applied to the pooled, ASH-shaped last feature map."""

    group = "activations"

    def __init__(self, variant: Literal["s", "p", "b"] = "s", percentile: float = 90.0) -> None:
        self.variant, self.percentile = check_params(self.name, variant, percentile)

    def reduce(self, fmap: torch.Tensor) -> torch.Tensor:
        """Shape each sample's C x H x W map, then pool it to C values."""
        n, c = fmap.shape[:2]
        shaped = ash(fmap.reshape(n, -1), self.variant, self.percentile)
        return shaped.reshape(n, c, -1).mean(dim=2)

    def score(self, data: Features) -> np.ndarray:
        """Return the energy of head(pooled shaped map)."""
        return to_scores(energy(self._fitted(self.head_).logits(data.features)))
