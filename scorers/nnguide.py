"""NNGuide: energy guided by confidence-scaled nearest ID-train neighbours.

z = f / ||f||_2;  E(x) = logsumexp_k logits(x)_k
bank = { E(x_i) z(x_i) : x_i in a random alpha-fraction of ID-train }
guidance(x) = mean of the k largest inner products z(x) . b over the bank entries b
score(x) = E(x) * guidance(x)

The bank holds round(alpha * N) ID-train samples (at least 1), drawn without replacement with
torch.Generator seeded by seed; alpha = 1 takes all of them. The top-k inner products are found
in query chunks x bank chunks with torch.topk and merged, keeping peak memory near
chunk_size x (k + bank_chunk_size) (:mod:`oodbench.neighbours`, shared with "knn", and
like it searched with faiss's exact IndexFlatIP when faiss-cpu is installed and backend is
"auto").

Park, Jung & Teoh, "Nearest Neighbor Guidance for Out-of-Distribution Detection", ICCV 2023,
arXiv:2309.14888. Default k = 100 (OpenOOD v1.5). Deliberate differences from OpenOOD v1.5:
its alpha is 0.01 (the first batches of the shuffled train loader; the OpenOOD presets set
alpha = 0.01, a seeded random 1% here); the default here is 1.0, the full bank, deterministic
and usable on small ID-train sets where 1% is fewer than k samples. OpenOOD also adds 1e-10 to
every normalised feature element; here F.normalize is used as in the "knn" scorer.
"""

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.neighbours import NeighbourScorer
from oodbench.scoring import Features, register_scorer, to_scores

from .energy import energy


@register_scorer("nnguide")
class NNGuide(NeighbourScorer):
    """Energy times the mean top-k similarity to a confidence-scaled ID-train bank."""

    group = "features"

    def __init__(self, k: int = 100, alpha: float = 1.0, seed: int = 0, chunk_size: int = 256,
                 bank_chunk_size: int = 65536, backend: str = "auto") -> None:
        super().__init__(k, alpha, seed, chunk_size, bank_chunk_size, backend)

    def _bank(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """E(x_i) z(x_i): the normalised features scaled by their energy."""
        return F.normalize(features, dim=1) * energy(logits).unsqueeze(1)

    def score(self, data: Features) -> np.ndarray:
        """Return E(x) * mean top-k z(x) . b per sample."""
        guidance = self._top_k(data).mean(dim=1)
        return to_scores(energy(data.logits.double()) * guidance.double())
