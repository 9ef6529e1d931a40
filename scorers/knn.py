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

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.neighbours import NeighbourScorer
from oodbench.scoring import Features, register_scorer, to_scores


@register_scorer("knn")
class KNN(NeighbourScorer):
    """Negative distance to the k-th nearest normalised ID-train feature."""

    group = "features"

    def __init__(self, k: int = 50, alpha: float = 1.0, seed: int = 0, chunk_size: int = 256,
                 bank_chunk_size: int = 65536, backend: str = "auto") -> None:
        super().__init__(k, alpha, seed, chunk_size, bank_chunk_size, backend)

    def _bank(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The L2-normalised features."""
        return F.normalize(features, dim=1)

    def score(self, data: Features) -> np.ndarray:
        """Return -||z - z_(k)|| per sample."""
        return to_scores(-(2 - 2 * self._top_k(data)[:, self.k - 1]).clamp(min=0).sqrt())
