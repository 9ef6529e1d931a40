"""Chunked float64 statistics of ID-train features, for the scorers that fit Gaussians, means or
subspaces (mahalanobis, rmds, vim, she, klm), and the chunked Mahalanobis distances that
mahalanobis and rmds score with.

Rows go ``chunk_rows`` at a time (default :data:`CHUNK_ROWS`, read at call time so tests can
shrink it); each chunk is converted to float64 on its own, so no float64 copy of the whole
N x D input, nor a centred one, is ever held: at ImageNet-1K size (1.28M x 2048 float32,
10 GiB), a full float64 centred copy alone would take 20 GiB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

CHUNK_ROWS = 8192


def row_chunks(n: int, chunk_rows: int | None = None) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk_rows`` (default :data:`CHUNK_ROWS`) of ``n`` rows."""
    size = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if size < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {size}")
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def class_sums(
    values: torch.Tensor,
    index: torch.Tensor,
    n_classes: int,
    chunk_rows: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 per-class row sums (``n_classes`` x D) and int64 counts (``n_classes``).

    Row i of ``values`` (after ``transform`` of its float64 chunk, if given) adds to class
    ``index[i]``; rows whose index is negative are skipped.
    """
    sums = values.new_zeros((n_classes, values.shape[1]), dtype=torch.float64)
    counts = torch.zeros(n_classes, dtype=torch.int64, device=values.device)
    for rows in row_chunks(len(values), chunk_rows):
        chunk, idx = values[rows], index[rows]
        keep = idx >= 0
        if not bool(keep.all()):
            chunk, idx = chunk[keep], idx[keep]
        chunk = chunk.double()
        sums.index_add_(0, idx, chunk if transform is None else transform(chunk))
        counts += torch.bincount(idx, minlength=n_classes)
    return sums, counts


def scatter(
    values: torch.Tensor,
    centres: torch.Tensor,
    index: torch.Tensor | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """The float64 D x D scatter matrix ``sum_i (v_i - c_i)(v_i - c_i)^T``.

    ``c_i`` is ``centres`` (a D vector) for every row, or ``centres[index[i]]`` when ``index``
    is given (``centres`` then K x D, e.g. class means: the within-class scatter).
    """
    n_dims = values.shape[1]
    out = values.new_zeros((n_dims, n_dims), dtype=torch.float64)
    for rows in row_chunks(len(values), chunk_rows):
        centred = values[rows].double() - (centres if index is None else centres[index[rows]])
        out.addmm_(centred.T, centred)
    return out


def within_class(
    values: torch.Tensor, labels: torch.Tensor, chunk_rows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 class means (K x D), int64 counts (K) and the within-class scatter (D x D)
    ``sum_i (v_i - mu_{y_i})(v_i - mu_{y_i})^T``, over the K classes present in ``labels`` in
    ascending order: two passes, sums then scatter about the means."""
    classes, inverse = labels.unique(return_inverse=True)
    sums, counts = class_sums(values, inverse, len(classes), chunk_rows)
    means = sums / counts.unsqueeze(1)
    return means, counts, scatter(values, means, inverse, chunk_rows)


def pinv_covariance(scatter_matrix: torch.Tensor, n: int) -> torch.Tensor:
    """The hermitian pseudo-inverse of the covariance ``scatter_matrix / n``: the precision of
    sklearn's ``EmpiricalCovariance`` (OpenOOD's), finite where the covariance is singular."""
    return torch.linalg.pinv(scatter_matrix / n, hermitian=True)


def min_mahalanobis(
    values: torch.Tensor,
    means: torch.Tensor,
    precision: torch.Tensor,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Float64 ``min_k (v_i - mu_k)^T P (v_i - mu_k)`` of each row ``v_i`` over the K rows of
    ``means`` (N values), expanded as ``v P v - 2 v P mu + mu P mu`` so no N x K x D
    difference is formed; rows go ``chunk_rows`` at a time."""
    mean_terms = ((means @ precision) * means).sum(dim=1)
    out = []
    for rows in row_chunks(len(values), chunk_rows):
        f = values[rows].double()
        fp = f @ precision
        dists = (fp * f).sum(dim=1, keepdim=True) - 2 * fp @ means.T + mean_terms
        out.append(dists.amin(dim=1))
    return torch.cat(out) if out else means.new_empty(0)


def mahalanobis(
    values: torch.Tensor,
    mean: torch.Tensor,
    precision: torch.Tensor,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Float64 ``(v_i - mu)^T P (v_i - mu)`` of each row ``v_i`` to the one ``mean`` (N
    values), from the centred rows; rows go ``chunk_rows`` at a time."""
    out = []
    for rows in row_chunks(len(values), chunk_rows):
        centred = values[rows].double() - mean
        out.append(((centred @ precision) * centred).sum(dim=1))
    return torch.cat(out) if out else mean.new_empty(0)
