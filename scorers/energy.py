"""Energy score (negative free energy).

score(x) = T * logsumexp_c(logits(x)_c / T)      (= -E(x; T), higher = more ID)

Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020,
arXiv:2010.03759. Default temperature T = 1 (as in the paper and OpenOOD v1.5).
"""

import numpy as np
import torch

from oodbench.scoring import Features, Scorer, register_scorer, to_scores


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Return T * logsumexp(logits / T) over the class dimension."""
    return temperature * torch.logsumexp(logits / temperature, dim=1)


@register_scorer("energy")
class Energy(Scorer):
    """Negative free energy of the cached logits."""

    group = "logits"

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"energy: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(self, data: Features) -> np.ndarray:
        """Return T * logsumexp(logits / T) per sample."""
        return to_scores(energy(data.logits, self.temperature))
