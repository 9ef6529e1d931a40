"""SHE: Simplified Hopfield Energy against one stored pattern per class.

S_k = mean of the ID-train features f_i with argmax logits_i = y_i = k (correctly classified)
score(x) = <f(x), S_c>,  c = argmax_k logits(x)_k

Every class of the head needs at least one correctly classified ID-train sample, since any
class can be predicted at test time; fit raises otherwise. Patterns and scores are computed in
float64 (the patterns as per-class sums over float64 chunks of ID-train, :mod:`oodbench.stats`);
the predictions use the cached logits.

Zhang, Fu, Chen, Du, Li, Wang, Liu, Han & Zhang, "Out-of-Distribution Detection based on
In-Distribution Data Patterns Memorization with Modern Hopfield Energy", ICLR 2023
(OpenReview KkazG4lgKL; no arXiv version). As OpenOOD v1.5's "she" with its default
metric = inner_product; no hyper-parameters. OpenOOD takes the mean of an empty class (NaN
patterns); here that is an error.
"""

from typing import Self

import numpy as np
import torch

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores
from oodbench.stats import class_sums


@register_scorer("she")
class SHE(Scorer):
    """Inner product with the stored pattern of the predicted class."""

    group = "features"

    patterns_: torch.Tensor | None = None

    def fit(self, train: Features, head: Head) -> Self:
        """Store the mean correctly classified ID-train feature of every class."""
        labels = train.labels
        if len(train) == 0 or bool((labels < 0).any()):
            n_unknown = int((labels < 0).sum())
            raise ValueError(
                "she: needs a non-empty ID-train set with known labels, got "
                f"{len(train)} samples of which {n_unknown} unlabelled"
            )
        n_classes = head.weight.shape[0]
        preds = train.logits.argmax(dim=1)
        classes = torch.where(preds == labels, preds, -1)  # -1: misclassified, left out
        sums, counts = class_sums(train.features, classes, n_classes)
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(
                f"she: no correctly classified ID-train sample for class(es) {missing}, "
                f"got {int(counts.sum())} correct of {len(train)}"
            )
        self.patterns_ = sums / counts.unsqueeze(1).to(sums)
        self.head_ = head
        return self

    def score(self, data: Features) -> np.ndarray:
        """Return <f, S_c> per sample, c the predicted class."""
        patterns = self._fitted(self.patterns_)
        preds = data.logits.argmax(dim=1)
        return to_scores((data.features.double() * patterns[preds]).sum(dim=1))
