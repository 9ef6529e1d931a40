"""Nearest-neighbour search for the feature scorers: exact top-k inner products against an
ID-train bank, the seeded train subset that KNN and NNGuide can draw, and
:class:`NeighbourScorer`, the parameters and bank handling those two scorers share.

Two exact backends: ``"torch"`` (query chunks x bank chunks, matmul + ``topk``, merged, so
peak memory stays near ``chunk_size x (k + bank_chunk_size)`` whatever the bank's size) and
``"faiss"`` (``IndexFlatIP`` from the optional ``faiss-cpu``; CPU tensors only). ``"auto"``
takes faiss where it is importable and the tensors are on the CPU.
"""

from __future__ import annotations

import importlib.util
from abc import abstractmethod
from typing import Any, Self

import torch
import torch.nn.functional as F

from oodbench.scoring import Features, Head, Scorer

BACKENDS = ("auto", "torch", "faiss")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend ``backend`` means on ``device``: "auto" becomes "faiss" or "torch"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    has_faiss = importlib.util.find_spec("faiss") is not None
    if backend == "faiss" and not has_faiss:
        raise ValueError('backend "faiss" needs faiss-cpu: pip install "oodbench[faiss]"')
    if backend == "faiss" and device.type != "cpu":
        raise ValueError(f'backend "faiss" searches CPU tensors, not {device.type} ones')
    if backend == "auto":
        return "faiss" if has_faiss and device.type == "cpu" else "torch"
    return backend


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
    chunk_size: int = 256,
    bank_chunk_size: int = 65536,
    backend: str = "torch",
) -> torch.Tensor:
    """The ``k`` largest inner products of each query with the bank rows, descending (N x k).

    torch: queries go ``chunk_size`` at a time; for each, the bank goes ``bank_chunk_size`` rows
    at a time, and each part's top-k is merged with the best so far. The defaults hold 64 MiB
    of similarities at a time and take banks of up to 65,536 rows in one ``topk`` per query
    chunk, which ran 16% faster here than 1,024 x 16,384 (benchmarks/profile.md).
    """
    k = min(k, bank.shape[0])
    if resolve_backend(backend, bank.device) == "faiss":
        import faiss

        index = faiss.IndexFlatIP(bank.shape[1])
        index.add(bank.float().contiguous().numpy())
        sims, _ = index.search(queries.float().contiguous().numpy(), k)
        return torch.from_numpy(sims).to(queries.dtype)
    first, *rest = bank.split(bank_chunk_size)
    out = []
    for chunk in queries.split(chunk_size):
        best = (chunk @ first.T).topk(min(k, len(first)), dim=1).values
        for part in rest:  # merge two short lists, not the best with a whole part
            merged = torch.cat([best, (chunk @ part.T).topk(min(k, len(part)), dim=1).values],
                               dim=1)
            best = merged.topk(min(k, merged.shape[1]), dim=1).values
        out.append(best)
    return torch.cat(out) if out else queries.new_empty((0, k))


class NeighbourScorer(Scorer):
    """A scorer that searches a bank built from a seeded ``alpha``-fraction of ID-train.

    Subclasses declare their own constructor (its signature is the scorer's parameters, with
    their own defaults) and pass them on to this one; :meth:`fit` builds ``bank_`` with the
    subclass's :meth:`_bank` from the rows :meth:`_bank_rows` picks, and ``score`` reads
    :meth:`_top_k`.
    """

    bank_: torch.Tensor | None = None

    def __init__(self, k: int, alpha: float, seed: int, chunk_size: int,
                 bank_chunk_size: int, backend: str) -> None:
        if k < 1 or chunk_size < 1 or bank_chunk_size < 1:
            raise ValueError(f"{self.name}: k, chunk_size and bank_chunk_size must be >= 1, "
                             f"got {k}, {chunk_size}, {bank_chunk_size}")
        if not 0 < alpha <= 1:
            raise ValueError(f"{self.name}: alpha must be in (0, 1], got {alpha}")
        if backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend must be one of {', '.join(BACKENDS)}, "
                             f"got {backend!r}")
        self.k, self.alpha, self.seed, self.backend = k, alpha, seed, backend
        self.chunk_size, self.bank_chunk_size = chunk_size, bank_chunk_size

    def fit(self, train: Features, head: Head) -> Self:
        """Build the bank from the features and logits of the bank rows of ID-train."""
        keep = self._bank_rows(train)
        feats, logits = train.features, train.logits
        if keep is not None:
            feats, logits = feats[keep], logits[keep]
        self.bank_ = self._bank(feats, logits)
        self.head_ = head
        return self

    @abstractmethod
    def _bank(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The bank rows (float32, one per sample) of these ID-train features and logits."""

    def _bank_rows(self, train: Features) -> torch.Tensor | None:
        """The ID-train rows of the bank (None: all of them); k must not exceed their number."""
        keep = subset_rows(len(train), self.alpha, self.seed)
        size = len(train) if keep is None else len(keep)
        if self.k > size:
            raise ValueError(f"{self.name}: k={self.k} exceeds the bank of {size} samples "
                             f"(alpha={self.alpha} of {len(train)} ID-train samples)")
        return None if keep is None else keep.to(train.features.device)

    def _top_k(self, data: Features) -> torch.Tensor:
        """The k largest inner products of each normalised feature of ``data`` with the bank."""
        return topk_inner(F.normalize(data.features, dim=1), self._fitted(self.bank_), self.k,
                          self.chunk_size, self.bank_chunk_size, self.backend)

    def check_fitted(self, n_dims: int) -> None:
        """The base checks, then: the bank is float32, ``n_dims`` wide, and holds at least
        ``k`` rows."""
        super().check_fitted(n_dims)
        bank = self._fitted(self.bank_)
        if bank.dtype != torch.float32 or bank.ndim != 2 or bank.shape[1] != n_dims:
            raise ValueError(f"{self.name}: the fitted bank_ is {bank.dtype} of shape "
                             f"{tuple(bank.shape)}; this model needs torch.float32 rows of "
                             f"{n_dims} features")
        if self.k > len(bank):
            raise ValueError(f"{self.name}: k={self.k} exceeds the fitted bank_ of {len(bank)} "
                             "samples")

    def fit_summary(self) -> dict[str, Any]:
        """The number of ID-train samples in the bank and the search backend used."""
        bank = self._fitted(self.bank_)
        return {"bank_size": len(bank), "backend": resolve_backend(self.backend, bank.device)}
