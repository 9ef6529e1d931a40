"""ASH: activation shaping, then the energy score.

Per sample with D activations a, keep the k = D - round(D * p / 100) largest entries (those at
or above the per-sample p-th percentile) and zero the rest; with s1 = sum(a) before pruning and
s2 = sum of the kept entries:
  ASH-P: kept entries unchanged;
  ASH-B: kept entries set to s1 / k (binarised, total mass preserved);
  ASH-S: kept entries multiplied by exp(s1 / s2).
score(x) = logsumexp_c(head(shaped(f(x)))_c)

Djurisic, Bozanic, Ashok & Liu, "Extremely Simple Activation Shaping for Out-of-Distribution
Detection", ICLR 2023, arXiv:2209.09858. Defaults: variant "s", percentile p = 90 (ASH-S@90,
as in the paper's ImageNet table). OpenOOD v1.5 applies ASH-B at p = 90
(openood/networks/ash_net.py, configs/postprocessors/ash.yml), a different method: its
leaderboard's ASH is variant = "b", which the OpenOOD presets set (protocol = "openood-v1.5").
The paper shapes the feature map before global pooling; like OpenOOD we shape the pooled
penultimate features instead ("ash-map" shapes the map). Ties at the cut are broken by
torch.topk, as in the reference code.
"""

from typing import Literal

import numpy as np
import torch

from oodbench.scoring import Features, Scorer, register_scorer, to_scores

from .energy import energy

VARIANTS = ("s", "p", "b")


def check_params(name: str, variant: str, percentile: float) -> tuple[str, float]:
    """``(variant, percentile)`` if valid for ASH, else ValueError naming scorer ``name``."""
    if variant not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {VARIANTS}, got {variant!r}")
    if not 0 <= percentile < 100:
        raise ValueError(f"{name}: percentile must be in [0, 100), got {percentile}")
    return variant, percentile


def ash(features: torch.Tensor, variant: str, percentile: float) -> torch.Tensor:
    """Shape N x D activations per sample with ASH-``variant`` at ``percentile``."""
    n_dims = features.shape[1]
    k = n_dims - round(n_dims * percentile / 100)
    if k < 1:
        raise ValueError(f"ash: percentile {percentile} keeps no activation out of {n_dims}")
    s1 = features.sum(dim=1)
    kept, index = features.topk(k, dim=1)
    if variant == "b":
        kept = (s1 / k).unsqueeze(1).expand_as(kept)
    shaped = torch.zeros_like(features).scatter_(1, index, kept)
    if variant == "s":
        s2 = kept.sum(dim=1)
        ratio = torch.where(s2 > 0, s1 / s2, torch.zeros_like(s1))
        shaped = shaped * torch.exp(ratio).unsqueeze(1)
    return shaped


@register_scorer("ash")
class ASH(Scorer):
    """Energy of the head applied to ASH-shaped penultimate features."""

    group = "activations"

    def __init__(self, variant: Literal["s", "p", "b"] = "s", percentile: float = 90.0) -> None:
        self.variant, self.percentile = check_params(self.name, variant, percentile)

    def score(self, data: Features) -> np.ndarray:
        """Return the energy of head(ash(features))."""
        head = self._fitted(self.head_)
        shaped = ash(data.features, self.variant, self.percentile)
        return to_scores(energy(head.logits(shaped)))
