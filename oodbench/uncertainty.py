"""Test-sample uncertainty: percentile bootstrap intervals of a cell's FPR95 and AUROC.

A cell's ID test scores and OOD scores are resampled independently, with replacement, each to
its own size. Every resample's FPR95 and AUROC are exactly :func:`oodbench.metrics.fpr95` and
:func:`oodbench.metrics.auroc` of the resampled arrays (ties included), computed without
forming them: the scores are sorted once, a resample is a vector of counts per sorted sample
(multinomial, drawn as indices), and the ROC curve is read off cumulative sums of the counts at
every distinct score. Resamples go in chunks, so memory stays near :data:`CHUNK_BYTES`.

Each cell's generator is seeded from the benchmark's ``bootstrap_seed`` and a SHA-256 of the
cell's labels (:func:`cell_rng`), so its bounds are the same in any order and any process.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from oodbench.metrics import AUROC, BOUNDS, FPR95, RECALL

__all__ = ["BOUND_METRICS", "CHUNK_BYTES", "bootstrap_bounds", "cell_rng", "describe",
           "resampled_metrics"]

BOUND_METRICS = tuple(bound for pair in BOUNDS.values() for bound in pair)  # the rows, in order

# about the most a chunk of resamples holds at once; the draws, hence the bounds, depend on it
CHUNK_BYTES = 128 * 2**20
_ARRAYS_PER_VALUE = 6  # int64 arrays a chunk holds per resample and sample (ID or OOD)
METHOD = "percentile"
UNIT = "ID test and OOD samples, resampled independently"
SEED_RULE = ("numpy.random.default_rng(SeedSequence([bootstrap_seed, first 16 bytes of the "
             "SHA-256 of the JSON list [benchmark, training, seed, scorer, ood_set] as an "
             "integer]))")


def cell_rng(base_seed: int, labels: Sequence[Any]) -> np.random.Generator:
    """The generator of the cell named by ``labels`` (benchmark, training, seed, scorer, OOD
    set): ``base_seed`` mixed with a SHA-256 of their JSON, never Python's ``hash``."""
    digest = hashlib.sha256(json.dumps(list(labels), default=str).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([base_seed,
                                                         int.from_bytes(digest[:16], "big")]))


class _Side:
    """One side's scores (ID test or OOD) in ascending order, and where each original sample
    lies there."""

    def __init__(self, scores: np.ndarray) -> None:
        order = np.argsort(scores, kind="stable")
        self.size = scores.size
        self.sorted = scores[order]
        self.rank = np.empty(scores.size, dtype=np.int64)
        self.rank[order] = np.arange(scores.size)

    def draw(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` resamples as places in the sorted scores (uniform, with replacement;
        int32, which numpy draws twice as fast as int64)."""
        return rng.integers(0, self.size, (rows, self.size), dtype=np.int32)

    def counts(self, places: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """How often each sorted score was drawn, per resample (a row of ``places``), and
        how many drawn scores lie below each place of the rows laid end to end (row r's
        ``j``-th entry at ``r * size + j``, which is ``r * size`` more than in the row alone:
        every row draws ``size``)."""
        rows = places.shape[0]
        flat = places + (np.arange(rows) * self.size)[:, None]
        counts = np.bincount(flat.ravel(), minlength=rows * self.size)
        below = np.zeros(rows * self.size + 1, dtype=np.int64)
        np.cumsum(counts, out=below[1:])
        return counts.reshape(rows, self.size), below


def _needed(size: int) -> int:
    """The fewest ID samples q with ``q / size >= RECALL`` in float64, as metrics.fpr95 tests
    the true positive rate."""
    q = math.ceil(RECALL * size)
    while q > 0 and (q - 1) / size >= RECALL:
        q -= 1
    while q / size < RECALL:
        q += 1
    return q


class _Cell:
    """A cell's ID and OOD scores, sorted once, and the metrics of resamples of them."""

    def __init__(self, id_scores: ArrayLike, ood_scores: ArrayLike) -> None:
        ids = np.asarray(id_scores, dtype=np.float64)
        oods = np.asarray(ood_scores, dtype=np.float64)
        if ids.ndim != 1 or oods.ndim != 1 or not ids.size or not oods.size:
            raise ValueError(f"bootstrap needs non-empty 1-D scores, got shapes {ids.shape} "
                             f"and {oods.shape}")
        self.ids, self.oods = _Side(ids), _Side(oods)
        # the OOD scores below / at or below each sorted ID score: where its ties end
        self.left = np.searchsorted(self.oods.sorted, self.ids.sorted, side="left")
        self.right = np.searchsorted(self.oods.sorted, self.ids.sorted, side="right")
        self.ties = not np.array_equal(self.left, self.right)
        self.keep = self.ids.size - _needed(self.ids.size)  # ID samples the threshold rejects

    def metrics(self, id_places: np.ndarray, ood_places: np.ndarray) -> dict[str, np.ndarray]:
        """FPR95 and AUROC of each resample (a row of places in the sorted ID and OOD
        scores)."""
        id_counts, id_below = self.ids.counts(id_places)
        _, ood_below = self.oods.counts(ood_places)
        n, m = self.ids.size, self.oods.size
        rows = np.arange(len(id_counts))
        # the threshold: the sorted ID score at which the drawn ID scores at or above it first
        # reach 95% (at most `keep` of them lie below it); FPR95 is the OOD share at or above
        place = np.searchsorted(id_below, self.keep + rows * n, side="right") - 1 - rows * n
        start = np.searchsorted(self.oods.sorted, self.ids.sorted[place], side="left")
        fpr95 = (m - (ood_below[rows * m + start] - rows * m)) / m
        # AUROC: each drawn ID score wins over the OOD scores below it and half its ties;
        # twice that in whole counts (exact), then one division. A row's n drawn ID scores
        # each read ``r * m`` too many OOD scores below them, taken off once at the end.
        offsets = (rows * m)[:, None]
        below = np.einsum("ij,ij->i", id_counts, ood_below[offsets + self.left])
        at_or_below = (np.einsum("ij,ij->i", id_counts, ood_below[offsets + self.right])
                       if self.ties else below)
        wins = below + at_or_below - 2 * n * rows * m
        return {FPR95: fpr95, AUROC: wins / (2 * n * m)}


def resampled_metrics(id_scores: ArrayLike, ood_scores: ArrayLike, id_idx: ArrayLike,
                      ood_idx: ArrayLike) -> dict[str, np.ndarray]:
    """FPR95 and AUROC of each resample: row r is ``id_scores[id_idx[r]]`` against
    ``ood_scores[ood_idx[r]]``, equal to :func:`~oodbench.metrics.fpr95` and
    :func:`~oodbench.metrics.auroc` of those arrays."""
    cell = _Cell(id_scores, ood_scores)
    return cell.metrics(cell.ids.rank[np.asarray(id_idx)], cell.oods.rank[np.asarray(ood_idx)])


def bootstrap_bounds(id_scores: ArrayLike, ood_scores: ArrayLike, resamples: int, level: float,
                     rng: np.random.Generator) -> dict[str, float]:
    """The ``level`` percentile-bootstrap interval of FPR95 and AUROC (``resamples``
    resamples drawn from ``rng``, in chunks: per chunk the ID places, then the OOD places),
    as the rows of :data:`~oodbench.metrics.BOUNDS`."""
    cell = _Cell(id_scores, ood_scores)
    chunk = max(1, CHUNK_BYTES // (8 * _ARRAYS_PER_VALUE * (cell.ids.size + cell.oods.size)))
    values: dict[str, list[np.ndarray]] = {FPR95: [], AUROC: []}
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        got = cell.metrics(cell.ids.draw(rng, rows), cell.oods.draw(rng, rows))
        for metric, per_resample in got.items():
            values[metric].append(per_resample)
    tail = (1 - level) / 2
    out: dict[str, float] = {}
    for metric, (lo, hi) in BOUNDS.items():
        low, high = np.quantile(np.concatenate(values[metric]), [tail, 1 - tail])
        out |= {lo: float(low), hi: float(high)}
    return out


def describe(resamples: int, level: float, seed: int) -> dict[str, Any]:
    """The bootstrap's settings and rule, for a manifest."""
    return {"method": METHOD, "resamples": resamples, "level": level, "bootstrap_seed": seed,
            "seed_rule": SEED_RULE, "unit": UNIT, "quantiles": "numpy.quantile, linear",
            "metrics": {m: list(b) for m, b in BOUNDS.items()}}
