"""GEN: generalized entropy of the top-M softmax probabilities.

p = softmax(logits(x));  T_M(x) = indices of the min(M, K) largest p_j
score(x) = -sum_{j in T_M(x)} p_j^gamma (1 - p_j)^gamma

Liu, Lochman & Zach, "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
Detection", CVPR 2023. Defaults gamma = 0.1, M = 100 (paper and OpenOOD v1.5; with K <= 100
classes every probability is used). Any gamma > 0 is accepted, as OpenOOD's sweep (0.01 to 10)
does. Unlike OpenOOD, the softmax is computed in float64: in float32, 1 - p_j rounds to 0 for a
confident top class, which zeroes its (1 - p_j)^gamma term.
"""

import numpy as np
import torch

from oodbench.scoring import Features, Scorer, register_scorer, to_scores


def generalized_entropy(logits: torch.Tensor, gamma: float, M: int) -> torch.Tensor:
    """Return sum over the top-M softmax probabilities of p^gamma (1 - p)^gamma, in float64."""
    probs = logits.double().softmax(dim=1)
    top = probs.topk(min(M, probs.shape[1]), dim=1).values
    return (top.pow(gamma) * (1 - top).pow(gamma)).sum(dim=1)


@register_scorer("gen")
class GEN(Scorer):
    """Negative generalized entropy of the top-M softmax probabilities."""

    group = "logits"

    def __init__(self, gamma: float = 0.1, M: int = 100) -> None:
        if gamma <= 0:
            raise ValueError(f"gen: gamma must be > 0, got {gamma}")
        if M < 1:
            raise ValueError(f"gen: M must be >= 1, got {M}")
        self.gamma = gamma
        self.M = M

    def score(self, data: Features) -> np.ndarray:
        """Return -sum_{top M} p^gamma (1 - p)^gamma per sample."""
        return to_scores(-generalized_entropy(data.logits, self.gamma, self.M))
