"""KNN: distance to the k-th nearest ID-train neighbour in normalised feature space.

z = f / ||f||_2;  score(x) = -||z(x) - z_(k)||_2, z_(k) the k-th nearest normalised ID-train
feature. For unit vectors ||z - z'||^2 = 2 - 2 z.z', so neighbours are found by the largest
inner products, computed in query chunks x bank chunks with torch.topk and merged, keeping
peak memory near chunk_size x (k + bank_chunk_size) (:mod:`oodbench.neighbours`); with
faiss-cpu installed, backend "auto" uses its exact IndexFlatIP instead (the same neighbours, up
to float rounding; the manifest records which ran). (OpenOOD returns the negative *squared*
distance; the ranking, hence every metric, is identical.)

The bank is a seeded random alpha-fraction of ID-train (the paper's sampling ratio; it uses
alpha = 1% on ImageNet); the manifest records alpha, seed and the bank size.

Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022,
arXiv:2204.06507. Defaults k = 50, alpha = 1 (paper and OpenOOD v1.5 for CIFAR: the full
ID-train bank).
"""

from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.neighbours import BACKENDS, resolve_backend, subset_rows, topk_inner
from oodbench.scoring import Features, Head, Scorer, register_scorer, to_scores


@register_scorer("knn")
class KNN(Scorer):
    """Negative distance to the k-th nearest normalised ID-train feature."""

    bank_: torch.Tensor | None = None

    def __init__(
        self,
        k: int = 50,
        alpha: float = 1.0,
        seed: int = 0,
        chunk_size: int = 256,
        bank_chunk_size: int = 65536,
        backend: str = "auto",
    ) -> None:
        if k < 1 or chunk_size < 1 or bank_chunk_size < 1:
            raise ValueError(
                f"knn: k, chunk_size and bank_chunk_size must be >= 1, got {k}, {chunk_size}, "
                f"{bank_chunk_size}"
            )
        if not 0 < alpha <= 1:
            raise ValueError(f"knn: alpha must be in (0, 1], got {alpha}")
        self.k = k
        self.alpha = alpha
        self.seed = seed
        self.chunk_size = chunk_size
        self.bank_chunk_size = bank_chunk_size
        if backend not in BACKENDS:
            raise ValueError(f"knn: backend must be one of {', '.join(BACKENDS)}, "
                             f"got {backend!r}")
        self.backend = backend

    def fit(self, train: Features, head: Head) -> Self:
        """Store the L2-normalised features of an alpha-fraction of ID-train as the bank."""
        keep = subset_rows(len(train), self.alpha, self.seed)
        feats = train.features if keep is None else train.features[keep]
        if self.k > len(feats):
            raise ValueError(f"knn: k={self.k} exceeds the bank of {len(feats)} samples "
                             f"(alpha={self.alpha} of {len(train)} ID-train samples)")
        self.bank_ = F.normalize(feats, dim=1)
        self.head_ = head
        return self

    def fit_summary(self) -> dict[str, Any]:
        """The number of ID-train samples in the bank and the search backend used."""
        bank = self._fitted(self.bank_)
        return {"bank_size": len(bank), "backend": resolve_backend(self.backend, bank.device)}

    def score(self, data: Features) -> np.ndarray:
        """Return -||z - z_(k)|| per sample."""
        top = topk_inner(F.normalize(data.features, dim=1), self._fitted(self.bank_), self.k,
                         self.chunk_size, self.bank_chunk_size, self.backend)
        return to_scores(-(2 - 2 * top[:, self.k - 1]).clamp(min=0).sqrt())
