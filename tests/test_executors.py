"""The ray executor on a local Ray cluster (2 CPUs), started as the README says
(``ray start --head --num-cpus 2``, then ``oodbench run --executor ray --address auto``):
the same metrics.csv and score arrays as the local executor by default (each job on its
resources' torch threads, whatever the process's own count), and a training whose worker is
SIGKILLed is retried to the same results, leaving no partial artefact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from oodbench.checkpoint import load_checkpoint
from tests.conftest import write_tiny_bench

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
SCORERS = "msp,energy,knn,mahalanobis"
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
LOCAL_THREADS = 2  # the local run's process: not Ray's one thread per task CPU


def _env(home: Path) -> dict[str, str]:
    """No data or threads from the user's environment: Ray gives each task one thread per CPU
    (1), the local run's process starts with :data:`LOCAL_THREADS`, and the jobs apply their
    resources' count (1) on both."""
    drop = ("OODBENCH_DATA", "RAY_ADDRESS", *THREADS)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO),
                  "RAY_DEDUP_LOGS": "0"}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The tiny benchmark (2 trainings x 2 seeds), its local-executor results, and a Ray
    cluster of 2 CPUs on this machine (stopped at the end)."""
    base = tmp_path_factory.mktemp("ray")
    tiny = write_tiny_bench(base, noise=False)
    ns = SimpleNamespace(base=base, root=tiny.root, config=tiny.config, env=_env(base / "home"))
    env = ns.env
    local = _oodbench(ns, "local")
    assert local.returncode == 0, local.stderr
    manifest = json.loads((base / "local" / "results" / "tiny" / "manifest.json").read_text())
    assert manifest["runtime"]["torch_threads"] == LOCAL_THREADS  # the process's own count
    assert {j["threads"] for j in manifest["jobs"]} == {1}  # what its jobs ran on
    started = subprocess.run([str(RAY), "start", "--head", "--num-cpus", "2",
                              "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield ns
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _command(ns: SimpleNamespace, name: str, executor: str) -> list[str]:
    return [sys.executable, "-m", "oodbench.cli", "run", "--benchmark", "tiny", "--config",
            str(ns.config), "--data-root", str(ns.root), "--seeds", "2", "--scorers", SCORERS,
            "--runs-dir", str(ns.base / name / "runs"), "--out", str(ns.base / name / "results"),
            "--executor", executor, *(["--address", "auto"] if executor == "ray" else [])]


def _oodbench(ns: SimpleNamespace, executor: str, name: str = "") -> subprocess.CompletedProcess:
    env = ns.env | (dict.fromkeys(THREADS, str(LOCAL_THREADS)) if executor == "local" else {})
    return subprocess.run(_command(ns, name or executor, executor), env=env, cwd=ns.base,
                          capture_output=True, text=True, timeout=600)


def _same_results(ns: SimpleNamespace, name: str) -> dict:
    """Assert ``name``'s results equal the local executor's; return its manifest."""
    got, want = ns.base / name / "results" / "tiny", ns.base / "local" / "results" / "tiny"
    assert (got / "metrics.csv").read_bytes() == (want / "metrics.csv").read_bytes()
    names = sorted(p.name for p in (want / "scores").glob("*.npz"))
    assert names == sorted(p.name for p in (got / "scores").glob("*.npz")) and len(names) == 4
    for file in names:
        with np.load(got / "scores" / file) as a, np.load(want / "scores" / file) as b:
            assert a.files == b.files
            for key in b.files:
                assert a[key].dtype == np.float64 and np.array_equal(a[key], b[key]), key
    runs = ns.base / name / "runs"
    assert sorted(runs.rglob("*.claim")) == [] and sorted(runs.rglob("*.tmp")) == []
    return json.loads((got / "manifest.json").read_text())


def test_ray_executor_matches_the_local_one(matrix: SimpleNamespace) -> None:
    done = _oodbench(matrix, "ray")
    assert done.returncode == 0, done.stderr
    manifest = _same_results(matrix, "ray")
    assert manifest["executor"]["name"] == "ray" and len(manifest["executor"]["nodes"]) == 1
    jobs = {j["job"]: j for j in manifest["jobs"]}
    assert sorted(jobs) == sorted(f"{k}/{t}-s{s}" for k in ("train", "eval")
                                  for t in ("ce", "bgnorm") for s in (0, 1))
    assert all(j["ran"] and j["threads"] == 1 for j in jobs.values())
    assert {j["pid"] for j in jobs.values()}.isdisjoint({os.getpid()})  # run by Ray workers
    # the driver's one progress view of all jobs
    assert "train jobs on Ray" in done.stderr and "eval jobs on Ray" in done.stderr

    # a second run finds every job done and sends nothing to Ray
    again = _oodbench(matrix, "ray")
    assert again.returncode == 0, again.stderr
    manifest = _same_results(matrix, "ray")
    assert not any(j["ran"] for j in manifest["jobs"])


def test_a_killed_training_worker_is_retried(matrix: SimpleNamespace) -> None:
    runs = matrix.base / "killed" / "runs" / "tiny"
    log = matrix.base / "killed.log"
    with log.open("w") as err:
        proc = subprocess.Popen(_command(matrix, "killed", "ray"), env=matrix.env,
                                cwd=matrix.base, stdout=subprocess.DEVNULL, stderr=err)
    try:
        holder = None
        deadline = time.monotonic() + 300
        while holder is None and time.monotonic() < deadline and proc.poll() is None:
            for claim in runs.glob("*.safetensors.claim"):
                try:
                    holder = json.loads(claim.read_text())
                except (OSError, ValueError):  # not written yet, or gone
                    continue
            time.sleep(0.02)
        assert holder is not None, log.read_text()
        assert holder["pid"] != proc.pid
        os.kill(holder["pid"], signal.SIGKILL)  # the Ray worker training that checkpoint
        assert proc.wait(timeout=600) == 0, log.read_text()
    finally:
        proc.kill()
    text = log.read_text()
    assert "taking over the stale claim" in text, text
    manifest = _same_results(matrix, "killed")
    assert all(j["ran"] for j in manifest["jobs"])
    for path in runs.glob("*.safetensors"):
        _, meta = load_checkpoint(path)
        assert meta["training"] in ("ce", "bgnorm")


def test_a_jobs_own_error_reaches_the_driver_whole(matrix: SimpleNamespace) -> None:
    bad = matrix.base / "diverges.toml"
    bad.write_text(matrix.config.read_text().replace("lr = 0.05", "lr = 1e30"))
    cmd = _command(matrix, "diverges", "ray")
    cmd[cmd.index(str(matrix.config))] = str(bad)
    done = subprocess.run(cmd, env=matrix.env, cwd=matrix.base, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1, done.stderr
    # the worker's TrainingError, message and hint, as the CLI renders its own errors
    assert re.search(r"error: train (ce|bgnorm) s[01]: the (loss|weights) became", done.stderr)
    assert "lower train.lr" in done.stderr and "Traceback" not in done.stderr, done.stderr
    runs = matrix.base / "diverges" / "runs" / "tiny"
    assert not list(runs.glob("*.safetensors"))
    assert not (matrix.base / "diverges" / "results" / "tiny").exists()
