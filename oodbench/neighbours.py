"""Nearest-neighbour search for the feature scorers: exact top-k inner products against an
ID-train bank, in chunks so that peak memory stays near ``chunk_size x (k + bank_chunk_size)``
whatever the bank's size, and the seeded train subset that KNN and NNGuide can draw."""

from __future__ import annotations

import torch


def subset_rows(n: int, alpha: float, seed: int) -> torch.Tensor | None:
    """Indices of a seeded ``alpha``-fraction of ``n`` rows (at least one), in drawn order; or
    None when ``alpha`` keeps them all."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    keep = min(n, max(1, round(alpha * n)))
    if keep == n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]


def topk_inner(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    chunk_size: int = 1024,
    bank_chunk_size: int = 16384,
) -> torch.Tensor:
    """The ``k`` largest inner products of each query with the bank rows, descending (N x k).

    Queries go ``chunk_size`` at a time; for each, the bank goes ``bank_chunk_size`` rows at a
    time, and each part's top-k is merged with the best so far.
    """
    k = min(k, bank.shape[0])
    out = []
    for chunk in queries.split(chunk_size):
        best = chunk.new_empty((chunk.shape[0], 0))
        for part in bank.split(bank_chunk_size):
            merged = torch.cat([best, chunk @ part.T], dim=1)
            best = merged.topk(min(k, merged.shape[1]), dim=1).values
        out.append(best)
    return torch.cat(out) if out else queries.new_empty((0, k))
