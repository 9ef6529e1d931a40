"""benchmarks/gpu_check.sh: its CPU dry run end to end (the JSON's structure), and its parsers."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_check import _toml, pytest_counts  # noqa: E402

STEPS = ["env", "data", "epoch-resident", "epoch-host", "ddp-nproc2", "detector", "matrix",
         "ray-gpu-check", "ray-run", "tests-cuda", "tests-suite"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The JSON of one ``--dry-run`` (every step on the CPU at tiny sizes)."""
    results = ROOT / "results" / "gpu-check.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    tmp = tmp_path_factory.mktemp("gpu-check")
    out = tmp / "check.json"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run",
                           "--out", str(out), "--logs", str(tmp / "logs")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (results.stat().st_mtime_ns if results.exists() else None) == before
    return json.loads(out.read_text())


def test_dry_run_steps(dry_run: dict) -> None:
    assert dry_run["mode"] == "dry-run" and dry_run["ok"] and dry_run["failed"] == []
    steps = {s["name"]: s for s in dry_run["steps"]}
    assert list(steps) == STEPS
    assert {n for n, s in steps.items() if s["status"] == "skipped"} == {"ddp-nproc2",
                                                                         "ray-gpu-check"}
    assert all(s["status"] == "ok" for n, s in steps.items()
               if n not in ("ddp-nproc2", "ray-gpu-check"))
    assert all(s["seconds"] >= 0 and "time_limit_s" in s["detail"] for s in steps.values())
    assert steps["epoch-resident"]["command"][-4:] == ["--nproc", "1", "--device", "cpu"]
    assert {"torch", "cuda", "device_name", "cores", "git_commit"} <= set(dry_run["env"])
    assert dry_run["device"] and dry_run["torch"] and dry_run["seconds"] > 0


def test_dry_run_figures(dry_run: dict) -> None:
    times = dry_run["epoch_times"]
    assert times["resident"] > 0 and times["host"] > 0
    assert times["ratio_host_over_resident"] == pytest.approx(times["host"] / times["resident"],
                                                              rel=1e-2)
    matrix = dry_run["matrix"]
    assert set(matrix["scorers"]) == {"msp", "knn", "odin"}
    assert matrix["trainings"] == ["bgnorm", "ce", "logitnorm", "regmixup", "ssod", "t2fnorm"]
    assert "gpucheck-list" in matrix["ood_sets"] and matrix["nan_values"] == 0
    assert matrix["amp_dtype"]["logitnorm"] == "float16"
    assert all(0 <= v["auroc"] <= 1 for v in matrix["mean_by_scorer"].values())
    assert matrix["extraction"]["cpu"]["setting"] == "auto"
    tests = dry_run["tests"]
    assert tests["cuda_files"]["collected"] > 0
    assert tests["suite"]["passed"] == 2 and tests["suite"]["failed"] == 0


def test_pytest_counts() -> None:
    summary = ("tests/a.py::test_x PASSED  [ 50%]\ntests/a.py::test_y[1-2] FAILED  [100%]\n"
               "========= 1 failed, 1 passed, 2 skipped, 1 error in 3.2s =========\n")
    counts = pytest_counts(summary)
    assert (counts["passed"], counts["failed"], counts["skipped"], counts["error"]) == (1, 1, 2, 1)
    assert counts["failed_tests"] == ["tests/a.py::test_y[1-2]"]
    # interrupted before the summary; pytest-xdist's line format
    cut = "[gw0] [ 10%] PASSED tests/a.py::test_x\n[gw1] [ 20%] SKIPPED tests/b.py::test_z\n"
    assert (pytest_counts(cut)["passed"], pytest_counts(cut)["skipped"]) == (1, 1)
    assert pytest_counts("tests/a.py: 3\ntests/b.py: 4\n")["collected"] == 7


def test_toml_values() -> None:
    value = {"a": [1, 2.5, True], "b": 'say "x"', "c": [{"name": "n", "train": {"lr": 0.1}}]}
    assert tomllib.loads(f"v = {_toml(value)}")["v"] == value
