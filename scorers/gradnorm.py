"""GradNorm: the L1 norm of the gradient of a KL divergence to the uniform distribution.

With logits z = W f + b, p = softmax(z / T), u the uniform distribution over K classes and
L = sum_k -u_k log p_k, GradNorm scores the L1 norm of dL/dW over the last layer:
  dL/dW_kd = (p_k - 1/K) f_d / T,  so  score(x) = (1/T) * sum_k |p_k - 1/K| * sum_d |f_d|.
The closed form gives the same numbers as autograd through the head from the cached features
(a test checks it), so GradNorm needs no model pass of its own. The per-sample backward pass
of the reference code (the authors' and OpenOOD v1.5's) uses targets of ones, i.e. the loss
sum_k -log p_k = K * L, so its scores are K times these (K classes): the same ranking and the
same metrics.

Huang, Geng & Li, "On the Importance of Gradients for Detecting Distributional Shifts in the
Wild", NeurIPS 2021, arXiv:2110.00218. Default T = 1 (paper and OpenOOD v1.5).
"""

import numpy as np

from oodbench.scoring import Features, Scorer, register_scorer, to_scores


@register_scorer("gradnorm")
class GradNorm(Scorer):
    """L1 norm of the last layer's gradient of KL(uniform || softmax)."""

    group = "logits"

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"gradnorm: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, data: Features) -> np.ndarray:
        """Return (1/T) * ||softmax(z/T) - 1/K||_1 * ||f||_1."""
        probs = (data.logits / self.temperature).softmax(dim=1)
        spread = (probs - 1.0 / probs.shape[1]).abs().sum(dim=1)
        return to_scores(spread * data.features.abs().sum(dim=1) / self.temperature)
