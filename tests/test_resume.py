"""A run SIGKILLed at any point, then re-run, ends with the results of an uninterrupted run and
reuses every checkpoint and cache entry that was finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from oodbench import fileio

REPO = Path(__file__).resolve().parent.parent
FAST = {"epochs = 8": "epochs = 3"}  # training is not what is tested here (nor every scorer)


def _cli(tb: SimpleNamespace, base: Path) -> list[str]:
    return [sys.executable, "-m", "oodbench.cli", "run", "--benchmark", "tiny", "--config",
            str(tb.config), "--data-root", str(tb.root), "--runs-dir", str(base / "runs"),
            "--out", str(base / "results"), "--scorers", "msp,knn,mahalanobis"]


def _env(home: Path) -> dict[str, str]:
    """One thread (bit-identical results, a calm machine); no data from the user's caches."""
    env = {k: v for k, v in os.environ.items() if k != "OODBENCH_DATA"}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
                  "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO)}


def _launch(cmd: list[str], env: dict[str, str], log: Path,
            kill_when: Callable[[], bool] | None = None) -> int | None:
    """Run the CLI; SIGKILL it as soon as ``kill_when()`` holds. Returns its exit status, or
    None when it was killed."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when is not None and kill_when():
                proc.kill()
                proc.wait()
                return None
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


def _appears(folder: Path, pattern: str) -> Callable[[], bool]:
    """True once a file matching ``pattern`` exists under ``folder`` that did not before."""
    before = set(folder.glob(pattern))
    return lambda: bool(set(folder.glob(pattern)) - before)


def _mtimes(folder: Path, pattern: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob(pattern)}


def _scores(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def test_killed_runs_resume_to_the_uninterrupted_results(tiny_bench: SimpleNamespace) -> None:
    text = tiny_bench.config.read_text()
    for old, new in FAST.items():
        text = text.replace(old, new)
    tiny_bench.config.write_text(text)
    home = tiny_bench.root.parent / "home"
    env = _env(home)
    ref, resumed = tiny_bench.root.parent / "ref", tiny_bench.root.parent / "resumed"
    for base in (ref, resumed):
        base.mkdir()
    log = resumed / "log.txt"

    def tail() -> str:
        return log.read_text()[-3000:]

    assert _launch(_cli(tiny_bench, ref), env, ref / "log.txt") == 0, (ref / "log.txt").read_text()

    cmd = _cli(tiny_bench, resumed)
    runs, out = resumed / "runs" / "tiny", resumed / "results" / "tiny"
    runs.mkdir(parents=True)
    # 1: killed as soon as the first checkpoint is written
    assert _launch(cmd, env, log, _appears(runs, "*.pt")) is None, tail()
    checkpoints = _mtimes(runs, "*.pt")
    assert len(checkpoints) == 1
    # 2: killed as soon as the first feature-cache entry is written (the checkpoint is reused)
    assert _launch(cmd, env, log, _appears(runs, "cache/*/*.npz")) is None, tail()
    assert _mtimes(runs, "*.pt") == checkpoints
    # 3: killed as soon as metrics.csv is written (typically before the tables and plots)
    assert _launch(cmd, env, log, _appears(out, "metrics.csv")) is None, tail()
    checkpoints = _mtimes(runs, "*.pt")
    cache = _mtimes(runs, "cache/*/*.npz")
    assert len(checkpoints) == 2 and len(cache) == 8
    # what a kill during a write leaves behind (whether these kills hit one is up to timing)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()
    for folder in (out, next(runs.glob("cache/*"))):
        (folder / f".x.npz.{fileio._HOST}.{dead}.abcd1234.tmp").write_bytes(b"half")
    # 4: runs to the end, reusing all of it
    assert _launch(cmd, env, log) == 0, tail()
    assert _mtimes(runs, "*.pt") == checkpoints
    assert _mtimes(runs, "cache/*/*.npz") == cache
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cache"] == {"hits": 8, "misses": 0}

    ref_out = ref / "results" / "tiny"
    assert (out / "metrics.csv").read_bytes() == (ref_out / "metrics.csv").read_bytes()
    got, want = _scores(out / "scores"), _scores(ref_out / "scores")
    assert got.keys() == want.keys() == {"ce-s0.npz", "bgnorm-s0.npz"}
    for name, arrays in want.items():
        assert got[name].keys() == arrays.keys()
        for key, value in arrays.items():
            np.testing.assert_array_equal(got[name][key], value, err_msg=f"{name} {key}")
    for name in ("compat.md", "compat_fpr95.tex", "plots/roc_knn.png"):
        assert (out / name).is_file()
    assert sorted(resumed.rglob("*.tmp")) == [], "temp files of the killed runs were left"
