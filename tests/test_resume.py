"""A re-run into an existing results folder, SIGINTed or SIGKILLed at any point, leaves that
folder byte for byte as it was; run again, it ends with the results of an uninterrupted run
(nothing stale kept) and reuses every checkpoint and cache entry that was finished."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from oodbench import fileio

REPO = Path(__file__).resolve().parent.parent
# training is not what is tested here (nor every scorer, nor the 10k-image uniform-noise set)
FAST = {"epochs = 8": "epochs = 3",
        '[[benchmarks.tiny.ood]]\nname = "uniform-noise"\ngroup = "far"\n': ""}


def _cli(tb: SimpleNamespace, base: Path, scorers: str = "msp,knn,mahalanobis",
         runs: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "oodbench.cli", "run", "--benchmark", "tiny", "--config",
            str(tb.config), "--data-root", str(tb.root), "--runs-dir",
            str(runs or base / "runs"), "--out", str(base / "results"), "--scorers", scorers]


def _env(home: Path) -> dict[str, str]:
    """One thread (bit-identical results, a calm machine); no data from the user's caches."""
    env = {k: v for k, v in os.environ.items() if k != "OODBENCH_DATA"}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
                  "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO)}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _launch(cmd: list[str], env: dict[str, str], log: Path,
            kill_when: Callable[[], bool] | None = None,
            sig: signal.Signals = signal.SIGKILL) -> int | None:
    """Run the CLI; send it ``sig`` as soon as ``kill_when()`` holds. Returns its exit status,
    or None when it was signalled (130 is what SIGINT ends in)."""
    with log.open("ab") as out:
        # SIGINT as in a terminal, even where this test runs in the background (a shell then
        # starts it with SIGINT ignored, and Python keeps an ignored SIGINT ignored)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, preexec_fn=_default_sigint)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when is not None and kill_when():
                proc.send_signal(sig)
                code = proc.wait(timeout=120)
                assert code in (130, -signal.SIGKILL), f"{sig.name} ended the run with {code}"
                return None
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


def _appears(folder: Path, pattern: str) -> Callable[[], bool]:
    """True once a file matching ``pattern`` exists under ``folder`` that did not before."""
    before = set(folder.glob(pattern))
    return lambda: bool(set(folder.glob(pattern)) - before)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> SHA-256)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


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
        assert old in text
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

    # --no-committed: the previous results folder holds the reference run's checkpoints, which
    # the resumed run would otherwise reuse instead of training (and being killed while it does)
    cmd = [*_cli(tiny_bench, resumed), "--no-committed"]
    runs, out = resumed / "runs" / "tiny", resumed / "results" / "tiny"
    staging = out.parent / ".tiny.staging"
    # the previous results: other scorers, so its energy files must not survive; from the
    # reference run's checkpoints and features (resumed/runs stays empty for the kills below)
    assert _launch(_cli(tiny_bench, resumed, "msp,energy", ref / "runs"), env, log) == 0, \
        tail()
    before = _snapshot(out)
    assert "plots/roc_energy.png" in before
    runs.mkdir(parents=True)

    def killed(when: Callable[[], bool], sig: signal.Signals) -> None:
        start = len(log.read_text())
        assert _launch(cmd, env, log, when, sig) is None, tail()
        assert _snapshot(out) == before, f"{sig.name} changed the previous results"
        if sig == signal.SIGINT:  # it says where its partial output is, if it wrote any
            said = f"{out} is left as it was" in log.read_text()[start:]
            assert said == staging.exists(), tail()

    # 1: as soon as the first checkpoint is written, then the second
    killed(_appears(runs, "*.safetensors"), signal.SIGINT)
    checkpoints = _mtimes(runs, "*.safetensors")
    assert len(checkpoints) == 1
    killed(_appears(runs, "*.safetensors"), signal.SIGKILL)
    checkpoints = _mtimes(runs, "*.safetensors")
    # 2: as soon as a feature-cache entry is written (the checkpoints are reused)
    killed(_appears(runs, "cache/*/*.npz"), signal.SIGKILL)
    killed(_appears(runs, "cache/*/*.npz"), signal.SIGINT)
    assert _mtimes(runs, "*.safetensors") == checkpoints
    # 3: as soon as the staged metrics.csv is written (before the tables, plots and swap)
    killed(lambda: (staging / "metrics.csv").is_file(), signal.SIGINT)
    killed(lambda: (staging / "metrics.csv").is_file(), signal.SIGKILL)
    checkpoints = _mtimes(runs, "*.safetensors")
    cache = _mtimes(runs, "cache/*/*.npz")
    assert len(checkpoints) == 2 and len(cache) == 6  # ID train and test, mnist: per checkpoint
    # what a kill during a write leaves behind (whether these kills hit one is up to timing)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()
    for folder in (staging, next(runs.glob("cache/*"))):
        (folder / f".x.npz.{fileio._HOST}.{dead}.abcd1234.tmp").write_bytes(b"half")
    # 4: runs to the end, reusing all of it
    assert _launch(cmd, env, log) == 0, tail()
    assert _mtimes(runs, "*.safetensors") == checkpoints
    assert _mtimes(runs, "cache/*/*.npz") == cache
    manifest = json.loads((out / "manifest.json").read_text())
    # every train and eval job was done by the killed runs: only the report ran
    assert manifest["cache"] == {"hits": 0, "misses": 0}
    assert len(manifest["jobs"]) == 4 and not any(j["ran"] for j in manifest["jobs"])

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
    # only what this run produced: the same files as the uninterrupted run, nothing stale
    assert set(_snapshot(out)) == set(_snapshot(ref_out))
    assert sorted(resumed.rglob("*.tmp")) == [], "temp files of the killed runs were left"
    assert not staging.exists() and not (out.parent / ".tiny.previous").exists()
