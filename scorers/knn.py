"""KNN: distance to the k-th nearest ID-train neighbour in normalised feature space.

z = f / ||f||_2;  score(x) = -||z(x) - z_(k)||_2, z_(k) the k-th nearest normalised ID-train
feature. For unit vectors ||z - z'||^2 = 2 - 2 z.z', so neighbours are found by the largest
inner products, computed in query chunks x bank chunks with torch.topk and merged, keeping
peak memory near chunk_size x bank_chunk_size. (OpenOOD returns the negative *squared*
distance; the ranking, hence every metric, is identical.)

Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022,
arXiv:2204.06507. Default k = 50 (paper and OpenOOD v1.5 for CIFAR; the full ID-train bank).
"""

from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores


@register_scorer("knn")
class KNN(Scorer):
    """Negative distance to the k-th nearest normalised ID-train feature."""

    bank_: torch.Tensor | None = None

    def __init__(self, k: int = 50, chunk_size: int = 1024, bank_chunk_size: int = 16384) -> None:
        if k < 1 or chunk_size < 1 or bank_chunk_size < 1:
            raise ValueError(
                f"knn: k, chunk_size and bank_chunk_size must be >= 1, got {k}, {chunk_size}, "
                f"{bank_chunk_size}"
            )
        self.k = k
        self.chunk_size = chunk_size
        self.bank_chunk_size = bank_chunk_size

    def fit(self, train: Features, head: Head) -> Self:
        """Store the L2-normalised ID-train features as the neighbour bank."""
        if self.k > len(train):
            raise ValueError(f"knn: k={self.k} exceeds the {len(train)} ID-train samples")
        self.bank_ = F.normalize(train.features, dim=1)
        self.head_ = head
        return self

    def _kth_similarity(self, queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        best: torch.Tensor | None = None
        for part in bank.split(self.bank_chunk_size):
            sims = queries @ part.T
            top = sims.topk(min(self.k, sims.shape[1]), dim=1).values
            if best is not None:
                merged = torch.cat([best, top], dim=1)
                top = merged.topk(min(self.k, merged.shape[1]), dim=1).values
            best = top
        return self._fitted(best)[:, self.k - 1]

    def score(self, data: Features) -> np.ndarray:
        """Return -||z - z_(k)|| per sample."""
        bank = self._fitted(self.bank_)
        queries = F.normalize(data.features, dim=1)
        kth = [self._kth_similarity(chunk, bank) for chunk in queries.split(self.chunk_size)]
        sims = torch.cat(kth) if kth else queries.new_empty(0)
        return to_scores(-(2 - 2 * sims).clamp(min=0).sqrt())
