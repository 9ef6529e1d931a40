"""MSP: maximum softmax probability.

score(x) = max_c softmax(logits(x))_c

Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples
in Neural Networks", ICLR 2017, arXiv:1610.02136. No parameters (as in OpenOOD v1.5).
"""

import numpy as np

from oodbench.scoring import Features, Scorer, register_scorer, to_scores


@register_scorer("msp")
class MSP(Scorer):
    """Maximum softmax probability of the cached logits."""

    group = "logits"

    def score(self, data: Features) -> np.ndarray:
        """Return max_c softmax(logits)_c per sample."""
        return to_scores(data.logits.softmax(dim=1).amax(dim=1))
