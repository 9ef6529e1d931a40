"""ODIN: temperature scaling plus a small input perturbation, then the maximum softmax.

With logits z(x) and temperature T:
  x' = x - eps * sign(grad_x [-log max_c softmax(z(x) / T)_c])   (eps in pixel units)
  score(x) = max_c softmax(z(x') / T)_c
The perturbation is taken on the normalised input and divided by the preprocessing's
per-channel std, so ``noise`` is a step in [0, 1] pixel units, as in the reference code.

Liang, Li & Srikant, "Enhancing The Reliability of Out-of-distribution Image Detection in Neural
Networks", ICLR 2018, arXiv:1706.02690. Defaults T = 1000, eps = 0.0014 (OpenOOD v1.5). A
model-level scorer: it needs the model and input gradients, so its scores are cached per
checkpoint, dataset and parameters rather than computed from cached features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from oodbench.scoring import ModelScorer, register_scorer

if TYPE_CHECKING:
    from oodbench.adapters import ModelAdapter


@register_scorer("odin")
class ODIN(ModelScorer):
    """Max softmax at temperature T after an input step that raises it."""

    group = "model"

    def __init__(self, temperature: float = 1000.0, noise: float = 0.0014) -> None:
        if temperature <= 0:
            raise ValueError(f"odin: temperature must be > 0, got {temperature}")
        if noise < 0:
            raise ValueError(f"odin: noise must be >= 0, got {noise}")
        self.temperature = temperature
        self.noise = noise

    def score_batch(
        self, model: ModelAdapter, x: torch.Tensor, pixel_std: torch.Tensor
    ) -> torch.Tensor:
        """Perturb the batch against the loss of its predicted class, then take max softmax."""
        x = x.detach().requires_grad_(True)
        logits = model(x) / self.temperature
        loss = F.cross_entropy(logits, logits.argmax(dim=1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        perturbed = x.detach() - self.noise * grad.sign() / pixel_std
        with torch.no_grad():
            return (model(perturbed) / self.temperature).softmax(dim=1).amax(dim=1)
