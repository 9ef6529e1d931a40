"""Speed work and the environment must not change results: every built-in scorer's scores on
a fixed tiny model and fixed images equal the stored reference (``tests/reference``) within
1e-5 of each array's magnitude (at least 1), with 1 or 2 torch threads, with oneDNN capped at
AVX2 or at another ISA, on the local executor or in a Ray task; the metric rows are the
metrics of those scores, and the stored metrics those of the stored scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from oodbench.config import StatsSpec
from oodbench.metrics import ID_ACC, ood_metrics
from oodbench.uncertainty import BOUND_METRICS, bootstrap_bounds, cell_rng
from tests.reference.evaluation import HERE, Evaluation, score_stored

REPO = HERE.parent.parent
TOL = 1e-5
ID_SET = "fashion-mnist"
ISA = "ONEDNN_MAX_CPU_ISA"
# name: (environment, torch threads, in a Ray task); oneDNN reads its ISA cap at first use,
# so every variant runs in a process of its own
VARIANTS: dict[str, tuple[dict[str, str], int, bool]] = {
    "1 thread": ({}, 1, False),
    "2 threads": ({}, 2, False),
    "oneDNN AVX2": ({ISA: "AVX2"}, 1, False),
    "oneDNN AVX": ({ISA: "AVX"}, 1, False),  # the other ISA on an AVX2-only CPU too
    "ray": ({}, 1, True),
}


def _stored() -> Evaluation:
    with np.load(HERE / "scores.npz") as ref:
        scores = {k: ref[k] for k in ref.files}
    return json.loads((HERE / "metrics.json").read_text())["rows"], scores


def _key(row: dict) -> tuple[str, str, str]:
    return row["scorer"], row["ood_set"], row["metric"]


def _metrics_of(rows: list[dict], scores: dict[str, np.ndarray]) -> None:
    """Assert every OOD row is the metric of ``scores`` (``ood_metrics``, to 1e-12), and every
    bound row that of the cell's bootstrap (the default ``stats``, its seeded generator)."""
    stats = StatsSpec()
    for row in rows:
        if row["metric"] == ID_ACC:
            continue
        ids = scores[f"{row['scorer']}/{ID_SET}"]
        oods = scores[f"{row['scorer']}/{row['ood_set']}"]
        if row["metric"] in BOUND_METRICS:
            rng = cell_rng(stats.bootstrap_seed, [row["benchmark"], row["training"], row["seed"],
                                                  row["scorer"], row["ood_set"]])
            want = bootstrap_bounds(ids, oods, stats.bootstrap_resamples, stats.level,
                                    rng)[row["metric"]]
        else:
            want = ood_metrics(ids, oods)[row["metric"]]
        assert abs(row["value"] - want) <= 1e-12, _key(row)


def _holds(rows: list[dict], scores: dict[str, np.ndarray]) -> None:
    """Assert an evaluation holds against the stored reference: every score array within
    ``TOL * max(1, max |stored|)`` (float error scales with an array's magnitude, not with
    each value: RMDS is the difference of two Mahalanobis distances of ~100), the same rows
    without notes, each the metric of these scores, and the stored ID accuracy."""
    ref_rows, ref = _stored()
    assert sorted(scores) == sorted(ref)
    for key, want in ref.items():
        atol = TOL * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(scores[key], want, rtol=0, atol=atol, err_msg=key)
    assert sorted(map(_key, rows)) == sorted(map(_key, ref_rows))
    assert all(r["note"] == "" for r in rows)
    _metrics_of(rows, scores)
    acc = {_key(r): r["value"] for r in rows if r["metric"] == ID_ACC}
    assert all(abs(acc[_key(r)] - r["value"]) <= TOL for r in ref_rows if r["metric"] == ID_ACC)


def test_the_stored_metrics_are_those_of_the_stored_scores() -> None:
    _metrics_of(*_stored())


def test_scores_and_metrics_match_the_stored_reference() -> None:
    _holds(*score_stored())


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Evaluation]:
    """The reference evaluation in one of :data:`VARIANTS`, each run once, in a subprocess."""
    done: dict[str, Evaluation] = {}

    def run(name: str) -> Evaluation:
        if name not in done:
            extra, threads, on_ray = VARIANTS[name]
            out = tmp_path_factory.mktemp("variant") / "scores.npz"
            env = {k: v for k, v in os.environ.items() if k not in (ISA, "RAY_ADDRESS")}
            cmd = [sys.executable, "-m", "tests.reference.evaluation", "--score-to", str(out),
                   "--threads", str(threads), *(["--ray"] if on_ray else [])]
            if on_ray:
                pytest.importorskip("ray")
            proc = subprocess.run(cmd, env=env | extra | {"PYTHONPATH": str(REPO)}, cwd=REPO,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-3000:]
            with np.load(out) as z:
                done[name] = (json.loads(out.with_suffix(".json").read_text()),
                              {k: z[k] for k in z.files})
        return done[name]

    return run


@pytest.mark.kernels
@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_reference_holds_in_every_environment(name: str,
                                                  variant: Callable[[str], Evaluation]) -> None:
    _holds(*variant(name))


@pytest.mark.kernels
def test_ray_gives_the_local_executors_bits(variant: Callable[[str], Evaluation]) -> None:
    """Same threads, kernels and code: where the evaluation runs does not change a bit."""
    (_, local), (_, ray) = variant("1 thread"), variant("ray")
    assert all(np.array_equal(local[k], ray[k]) for k in local)
