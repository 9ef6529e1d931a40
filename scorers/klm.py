"""KL matching: KL divergence to the nearest class-conditional mean softmax of ID-train.

p(x) = softmax(logits(x));  q_k = mean of p over the ID-train samples predicted as class k
(argmax of the logits), for each class k with at least one such sample
score(x) = -min_k KL(p(x) || q_k),   KL(p || q) = sum_j p_j log(p_j / q_j)

Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, "Scaling Out-of-
Distribution Detection for Real-World Settings", ICML 2022, arXiv:1911.11132. No parameters
(as OpenOOD v1.5's "klm"). Differences from OpenOOD: the templates q_k are fitted on ID-train
by default (OpenOOD uses the ID validation split, as scorer_fit = { klm = "val" } does, which
the OpenOOD presets set; "ID-train" above then reads ID-val); a class no sample is predicted as
is skipped
(OpenOOD gives it a one-hot template, whose KL is infinite for any p that is not one-hot);
everything is float64 (the templates are summed over float64 chunks of ID-train,
:mod:`oodbench.stats`, with no N x K float64 copy), log p comes from log_softmax and log q_j is
clamped at the smallest positive float64 so an underflowed template entry gives a large finite
KL, not infinity.
"""

from typing import Self

import numpy as np
import torch

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores
from oodbench.stats import class_sums

EPS = torch.finfo(torch.float64).tiny


@register_scorer("klm")
class KLMatching(Scorer):
    """Negative KL divergence to the closest ID-train mean softmax per predicted class."""

    group = "logits"

    log_templates_: torch.Tensor | None = None

    def fit(self, train: Features, head: Head) -> Self:
        """Average the ID-train softmax over the samples predicted as each class."""
        if len(train) == 0:
            raise ValueError("klm: needs a non-empty ID-train set")
        sums, counts = class_sums(train.logits, train.logits.argmax(dim=1), train.logits.shape[1],
                                  transform=lambda logits: logits.softmax(dim=1))
        present = counts > 0
        templates = sums[present] / counts[present].unsqueeze(1).to(sums)
        self.log_templates_ = templates.clamp(min=EPS).log()
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return -min_k KL(p || q_k) per sample."""
        log_templates = self._fitted(self.log_templates_)
        log_probs = data.logits.double().log_softmax(dim=1)
        probs = log_probs.exp()
        kl = (probs * log_probs).sum(dim=1, keepdim=True) - probs @ log_templates.T
        return to_scores(-kl.amin(dim=1))
