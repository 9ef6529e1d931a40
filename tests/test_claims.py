"""Per-entry claims in a shared runs folder: one process computes an entry, the others wait and
reuse it; a dead or silent holder's claim is taken over; a claim never outlives its block."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from oodbench import lock
from oodbench.fileio import file_hash
from oodbench.lock import claim, claim_path

REPO = Path(__file__).resolve().parent.parent

# a second process that claims sys.argv[1]; reports whether the target was there once it held it
WAITER = """
import sys
from pathlib import Path
from oodbench.lock import claim
with claim(Path(sys.argv[1])):
    print("holding, target exists:", Path(sys.argv[1]).is_file(), flush=True)
"""
# a holder that is SIGKILLed while it holds the claim of sys.argv[1]
KILLED = """
import os, signal, sys
from oodbench.lock import claim
with claim(sys.argv[1]):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _env(home: Path) -> dict[str, str]:
    """One thread per process (three share the CPUs); no data from the user's caches."""
    env = {k: v for k, v in os.environ.items() if k != "OODBENCH_DATA"}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
                  "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO)}


def _holder(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())


class PollClock:
    """:mod:`oodbench.lock`'s clock in a test: it stands still but for a waiter's sleeps between
    two looks at a claim, so a claim's age counts the waiter's polls, not wall-clock seconds.

    With ``refreshes``, each sleep also waits (up to 30 s) for the holder's next touch of its
    claim (``os.utime``), and a touch stamps the clock's time plus ``skew`` (a holder whose
    clock is ahead): the holder's refreshes and the waiter's looks alternate however loaded the
    machine is. Its monotonic clock is its wall clock.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float,
                 refreshes: bool = False, skew: float = 0.0) -> None:
        self.now, self.polls, self.touches, self.refreshes = now, 0, 0, refreshes
        self.changed = threading.Condition()
        # the lock reads time.time() and time.monotonic(), and calls time.sleep()
        monkeypatch.setattr(lock, "time", self)
        if refreshes:
            utime = os.utime

            def touch(fd: int, *args: object, **kwargs: object) -> None:
                assert not args and not kwargs, "a refresh touches its claim with no times"
                with self.changed:
                    utime(fd, (self.now + skew, self.now + skew))
                    self.touches += 1
                    self.changed.notify_all()

            monkeypatch.setattr(os, "utime", touch)

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.changed:
            self.now += seconds
            self.polls += 1
            self.changed.notify_all()
            assert self.polls < 10_000, "still waiting after 10,000 polls"
            touched = self.touches
            assert self.changed.wait_for(lambda: self.touches > touched or not self.refreshes,
                                         timeout=30), "the holder stopped refreshing its claim"

    def wait_polls(self, polls: int) -> bool:
        """Whether the waiter polled ``polls`` times (given 60 s)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.polls >= polls, timeout=60)

    def stop_refreshes(self) -> None:
        """Let the waiter's sleeps return without a touch (its holder is gone)."""
        with self.changed:
            self.refreshes = False
            self.changed.notify_all()


def test_a_second_claimant_waits_then_finds_the_target(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "ce-s0-abc.pt"
    with claim(target) as path:
        assert path == claim_path(target) == tmp_path / "runs" / "ce-s0-abc.pt.claim"
        info = _holder(path)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert {"command", "started"} <= info.keys()
        waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(target)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_env(tmp_path))
        try:
            assert waiter.stderr is not None
            line = waiter.stderr.readline()  # printed once it found our claim
            assert f"waiting for {target}: another oodbench process is computing it (pid " \
                   f"{os.getpid()} on host {socket.gethostname()}, started " in line
            time.sleep(3 * lock.CLAIM_POLL_S)
            assert waiter.poll() is None  # still waiting: the claim is exclusive
            target.write_bytes(b"done")
        except BaseException:
            waiter.kill()
            raise
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out == "holding, target exists: True\n"
    assert "waiting for" not in err  # said once
    assert not path.exists()


def test_a_dead_holders_claim_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "entry.npz"
    killed = subprocess.run([sys.executable, "-c", KILLED, str(target)], env=_env(tmp_path),
                            check=False)
    assert killed.returncode == -signal.SIGKILL
    dead = _holder(claim_path(target))["pid"]
    assert isinstance(dead, int) and not lock.pid_alive(dead)
    with claim(target) as path:
        assert _holder(path)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the stale claim on {target} (its holder, pid {dead}, is dead" in err
    assert not path.exists()


def test_an_unrefreshed_claim_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "entry.npz"
    path = claim_path(target)
    # a holder on another host: its pid cannot be checked, only whether it touches its claim
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "oodbench run",
                                "started": "2026-01-01T00:00:00+00:00"}))
    clock = PollClock(monkeypatch, start := path.stat().st_mtime + 2 * lock.CLAIM_STALE_S)
    with claim(target):
        assert _holder(path)["pid"] == os.getpid()
    # it is seen unchanged for two refresh periods first: a live holder's clock may be behind
    waited = clock.now - start
    assert 2 * lock.CLAIM_REFRESH_S < waited <= 2 * lock.CLAIM_REFRESH_S + lock.CLAIM_POLL_S + 1e-3
    assert "(not refreshed for 130 s; pid 1 on host elsewhere, started 2026-" in " ".join(
        capsys.readouterr().err.split())

    # a fresh one is waited for until it has gone unrefreshed for CLAIM_STALE_S
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    clock.now = written = path.stat().st_mtime
    with claim(target):
        waited = clock.now - written
    assert lock.CLAIM_STALE_S < waited <= lock.CLAIM_STALE_S + lock.CLAIM_POLL_S + 1e-3
    err = capsys.readouterr().err
    assert "waiting for" in err and "taking over the stale claim" in err


def test_a_claim_from_the_future_is_taken_over_after_the_stale_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lost holder on a host whose clock is an hour ahead (a shared filesystem stamps the
    # claim with the writer's time): its mtime never grows old on this host's clock
    target = tmp_path / "entry.npz"
    path = claim_path(target)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "oodbench run",
                                "started": "2026-01-01T00:00:00+00:00"}))
    start = time.time()
    os.utime(path, (start + 3600, start + 3600))
    clock = PollClock(monkeypatch, start)
    with claim(target):
        assert _holder(path)["pid"] == os.getpid()
    waited = clock.now - start
    assert lock.CLAIM_STALE_S < waited <= lock.CLAIM_STALE_S + lock.CLAIM_POLL_S + 1e-3
    err = " ".join(capsys.readouterr().err.split())
    assert "waiting for" in err
    assert re.search(rf"taking over the stale claim on {re.escape(str(target))} \(not refreshed "
                     r"for 60 s as seen from this host; its time stamp is 35\d\d s ahead of "
                     r"this host's clock; pid 1 on host elsewhere", err), err


@pytest.mark.parametrize("skew", [0.0, 3600.0, -3600.0], ids=["same", "ahead", "behind"])
def test_a_live_holder_keeps_its_claim_fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             skew: float) -> None:
    # the holder's clock may be an hour ahead of the waiter's, or behind: its refreshes count
    monkeypatch.setattr(lock, "CLAIM_REFRESH_S", 0.01)
    monkeypatch.setattr(lock, "CLAIM_STALE_S", 1.0)
    clock = PollClock(monkeypatch, time.time(), refreshes=True, skew=skew)
    target = tmp_path / "entry.npz"
    got = threading.Event()

    def second() -> None:
        with claim(target):
            got.set()

    thread = threading.Thread(target=second)
    with claim(target):
        thread.start()
        # three times the stale timeout on the waiter's clock: refreshed, never taken over
        assert clock.wait_polls(round(3 * lock.CLAIM_STALE_S / lock.CLAIM_POLL_S)), \
            "the waiter stopped polling"
        assert not got.is_set(), "the waiter took a live claim over"
    clock.stop_refreshes()
    assert got.wait(30)  # the claim is free: the waiter takes it at its next look
    thread.join()


def test_the_claim_is_removed_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "ce-s0-abc.pt"
    with pytest.raises(RuntimeError, match="training failed"), claim(target) as path:
        assert path.is_file()
        raise RuntimeError("training failed")
    assert not path.exists()
    assert sorted(tmp_path.iterdir()) == []


def test_two_waiters_never_remove_a_live_claim(tmp_path: Path) -> None:
    target = tmp_path / "entry.npz"
    path = claim_path(target)
    path.write_text('{"claim": "dead"}')
    stale, raw = os.stat(path), path.read_bytes()
    # another waiter took the stale claim over and claimed anew after we looked at it (the
    # new file may even get the same inode number)
    os.unlink(path)
    path.write_text(json.dumps(lock.holder_info()))
    assert not lock.take_over(path, stale, raw)
    assert _holder(path)["pid"] == os.getpid()  # the live claim was put back
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_shared_runs_dir_trains_each_checkpoint_once(tiny_bench: SimpleNamespace) -> None:
    # few epochs, and no OOD sets past MNIST (10k noise images): what counts here is who does what
    text = tiny_bench.config.read_text().replace("epochs = 8", "epochs = 2")
    tiny_bench.config.write_text(text[:text.index('[[benchmarks.tiny.ood]]\nname = "uniform')])
    base = tiny_bench.root.parent
    common = ["--benchmark", "tiny", "--config", str(tiny_bench.config), "--data-root",
              str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs)]
    commands = {
        "run-a": ["run", *common, "--out", str(base / "a"), "--scorers", "msp"],
        "run-b": ["run", *common, "--out", str(base / "b"), "--scorers", "msp"],
        "train": ["train", *common],
    }
    env = _env(base / "home")
    procs = {}
    for name, args in commands.items():
        with (base / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "oodbench.cli", *args],
                                           stdout=subprocess.DEVNULL, stderr=log, env=env,
                                           cwd=base)
    try:
        codes = {name: proc.wait(timeout=120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    logs = {name: (base / f"{name}.log").read_text() for name in commands}
    assert codes == dict.fromkeys(commands, 0), logs

    trained = Counter(m.groups() for log in logs.values()
                      for m in re.finditer(r"^trained (\S+) s(\d+):", log, re.MULTILINE))
    assert trained == {("ce", "0"): 1, ("bgnorm", "0"): 1}, logs
    runs = tiny_bench.runs / "tiny"
    assert len(list(runs.glob("*.safetensors"))) == 2
    misses = 0
    evaluated: Counter[str] = Counter()
    for out in ("a", "b"):
        manifest = json.loads((base / out / "tiny" / "manifest.json").read_text())
        assert manifest["checkpoints"].keys() == {"ce-s0", "bgnorm-s0"}
        for summary in manifest["checkpoints"].values():
            path = base / out / "tiny" / summary["path"]  # the copy in the results folder
            assert summary["sha256"] == file_hash(path), summary["path"]
        misses += manifest["cache"]["misses"]
        evaluated.update(j["job"] for j in manifest["jobs"] if j["ran"] and "eval" in j["job"])
    assert misses == len(list(runs.glob("cache/*/*.npz")))  # each entry extracted once
    assert evaluated == {"eval/ce-s0": 1, "eval/bgnorm-s0": 1}  # each checkpoint scored once
    assert len(list(runs.glob("evals/*/done.json"))) == 2
    assert sorted(runs.rglob("*.claim")) == [] and sorted(runs.rglob("*.tmp")) == []
