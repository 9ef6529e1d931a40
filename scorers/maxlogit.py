"""MaxLogit: maximum unnormalised logit.

score(x) = max_c logits(x)_c

Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-
Distribution Detection for Real-World Settings", ICML 2022, arXiv:1911.11132. No parameters
(as OpenOOD v1.5's "mls").
"""

import numpy as np

from oodbench.scoring import Features, Scorer, register_scorer, to_scores


@register_scorer("maxlogit")
class MaxLogit(Scorer):
    """Maximum logit of the cached logits."""

    group = "logits"

    def score(self, data: Features) -> np.ndarray:
        """Return max_c logits_c per sample."""
        return to_scores(data.logits.amax(dim=1))
