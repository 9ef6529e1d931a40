"""ReAct: rectified activations, then the energy score.

c = p-th percentile of all ID-train penultimate activations (every element, flattened)
score(x) = logsumexp_c(head(min(f(x), c))_c)

Sun, Guo & Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
NeurIPS 2021, arXiv:2111.12797. Default percentile p = 90 (paper and OpenOOD v1.5). By
default the percentile is taken on the ID-train features; OpenOOD takes it on the ID
validation split, as a benchmark's scorer_fit = { react = "val" } does (the OpenOOD presets).
"""

from typing import Self

import numpy as np

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores

from .energy import energy


@register_scorer("react")
class ReAct(Scorer):
    """Energy of the head applied to features clipped at an ID-train percentile."""

    group = "activations"

    threshold_: float | None = None

    def __init__(self, percentile: float = 90.0) -> None:
        if not 0 <= percentile <= 100:
            raise ValueError(f"react: percentile must be in [0, 100], got {percentile}")
        self.percentile = percentile

    def fit(self, train: Features, head: Head) -> Self:
        """Set the clip value c to the percentile of all ID-train activations."""
        activations = train.features.detach().cpu().numpy().ravel()
        self.threshold_ = float(np.percentile(activations, self.percentile))
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return the energy of head(min(features, c))."""
        head = self._fitted(self.head_)
        clipped = data.features.clamp(max=self._fitted(self.threshold_))
        return to_scores(energy(head.logits(clipped)))
