"""The test-sample bootstrap (oodbench.uncertainty): each resample's FPR95 and AUROC equal
oodbench.metrics on the explicitly resampled arrays, the bounds are the percentiles of those,
every cell's draws are its own (any order, any process), and a failed cell's bounds are NaN."""

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from oodbench import metrics, uncertainty
from oodbench.config import StatsSpec
from oodbench.evaluation import _record
from oodbench.metrics import AUROC, BOUNDS, FPR95
from oodbench.uncertainty import BOUND_METRICS, bootstrap_bounds, cell_rng, resampled_metrics

LABELS = ["toy", "ce", 0, "energy", "svhn"]


@pytest.mark.parametrize("case", range(12))
def test_resampled_metrics_equal_the_metrics_of_the_resampled_arrays(case: int) -> None:
    rng = np.random.default_rng(case)
    # sizes at and around RECALL's boundary (0.95 * 20 = 19), one sample a side; few distinct
    # values, shared by both sides, so that ties are everywhere
    n, m = [(20, 20), (1, 1), (1, 7), (21, 3), (40, 33), (101, 57)][case % 6]
    levels = 4 if case < 6 else 50
    ids = rng.integers(0, levels, n).astype(float)
    oods = rng.integers(-1, levels - 1, m).astype(float)
    id_idx, ood_idx = rng.integers(0, n, (6, n)), rng.integers(0, m, (6, m))
    got = resampled_metrics(ids, oods, id_idx, ood_idx)
    for r in range(6):
        a, b = ids[id_idx[r]], oods[ood_idx[r]]
        assert abs(got[FPR95][r] - metrics.fpr95(a, b)) <= 1e-12
        assert abs(got[AUROC][r] - metrics.auroc(a, b)) <= 1e-12


def test_resampled_metrics_of_continuous_scores() -> None:
    rng = np.random.default_rng(7)
    ids, oods = rng.normal(1, 1, 500), rng.normal(0, 1, 300)
    id_idx, ood_idx = rng.integers(0, 500, (4, 500)), rng.integers(0, 300, (4, 300))
    got = resampled_metrics(ids, oods, id_idx, ood_idx)
    for r in range(4):
        a, b = ids[id_idx[r]], oods[ood_idx[r]]
        assert abs(got[FPR95][r] - metrics.fpr95(a, b)) <= 1e-12
        assert abs(got[AUROC][r] - metrics.auroc(a, b)) <= 1e-12


def test_bounds_are_the_percentiles_of_explicit_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The draws, redone by hand: per chunk the places in the sorted ID scores, then in the
    sorted OOD scores (7 resamples a chunk here); a change to them changes published bounds."""
    rng = np.random.default_rng(3)
    n, m, resamples, level = 30, 25, 100, 0.9
    ids, oods = np.round(rng.normal(1, 1, n), 1), np.round(rng.normal(0, 1, m), 1)
    monkeypatch.setattr(uncertainty, "CHUNK_BYTES", 8 * 6 * (n + m) * 7)
    got = bootstrap_bounds(ids, oods, resamples, level, cell_rng(5, LABELS))
    draws, values = cell_rng(5, LABELS), {FPR95: [], AUROC: []}
    for start in range(0, resamples, 7):
        rows = min(7, resamples - start)
        id_places = draws.integers(0, n, (rows, n), dtype=np.int32)
        ood_places = draws.integers(0, m, (rows, m), dtype=np.int32)
        for r in range(rows):
            a, b = np.sort(ids)[id_places[r]], np.sort(oods)[ood_places[r]]
            values[FPR95].append(metrics.fpr95(a, b))
            values[AUROC].append(metrics.auroc(a, b))
    for metric, (lo, hi) in BOUNDS.items():
        want = np.quantile(values[metric], [0.05, 0.95])
        assert got[lo] == pytest.approx(want[0], abs=1e-12)
        assert got[hi] == pytest.approx(want[1], abs=1e-12)
        assert 0 <= got[lo] <= got[hi] <= 1


def test_each_cell_draws_alike_in_any_order() -> None:
    rng = np.random.default_rng(0)
    cells = {tuple(LABELS): (rng.normal(1, 1, 200), rng.normal(0, 1, 150)),
             ("toy", "bgnorm", 1, "knn", "mnist"): (rng.normal(2, 1, 120), rng.normal(0, 2, 90))}

    def run(order: list[tuple]) -> dict[tuple, dict[str, float]]:
        return {c: bootstrap_bounds(*cells[c], 200, 0.95, cell_rng(0, list(c))) for c in order}

    first = run(list(cells))
    assert run(list(cells)[::-1]) == first
    a, b = list(cells)
    assert bootstrap_bounds(*cells[a], 200, 0.95, cell_rng(0, list(b))) != first[a]
    assert bootstrap_bounds(*cells[a], 200, 0.95, cell_rng(1, list(a))) != first[a]


def test_a_cells_generator_is_the_same_in_another_process() -> None:
    """SHA-256 of the labels, never Python's salted hash(): a fresh interpreter with another
    hash seed draws the same."""
    code = ("from oodbench.uncertainty import cell_rng; "
            f"print(cell_rng(3, {LABELS!r}).integers(0, 10**9, 4).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ | {"PYTHONHASHSEED": "12345"}).stdout
    assert out.strip() == str(cell_rng(3, LABELS).integers(0, 10**9, 4).tolist())


def _recorded(out: dict[str, np.ndarray], failure: str) -> list[dict]:
    """The rows ``_record`` adds for one scorer on ID test "test" and OOD set "svhn"."""
    ctx = SimpleNamespace(splits=SimpleNamespace(test=SimpleNamespace(name="test")),
                          ood=SimpleNamespace(sets={"svhn": None}, groups={"svhn": "far"}),
                          bench=SimpleNamespace(stats=StatsSpec(bootstrap_resamples=200)))
    result = SimpleNamespace(rows=[], scores={}, params={})
    base = {"benchmark": "toy", "training": "ce", "seed": 0}
    _record(result, ctx, base, "energy", out, {}, failure)  # type: ignore[arg-type]
    return result.rows


def test_record_adds_the_bounds_and_a_failed_cell_gets_nan_ones() -> None:
    rng = np.random.default_rng(1)
    out = {"test": rng.normal(1, 1, 300), "svhn": rng.normal(0, 1, 200)}
    rows = {r["metric"]: r for r in _recorded(out, "")}
    assert list(rows)[-4:] == list(BOUND_METRICS) == ["fpr95_lo", "fpr95_hi", "auroc_lo",
                                                      "auroc_hi"]
    want = bootstrap_bounds(out["test"], out["svhn"], 200, 0.95, cell_rng(0, LABELS))
    assert {m: rows[m]["value"] for m in BOUND_METRICS} == want
    failed = _recorded({}, "singular covariance")
    assert [r["metric"] for r in failed][-4:] == list(BOUND_METRICS)
    for row in failed:
        assert math.isnan(row["value"]) and row["note"] == "singular covariance"
