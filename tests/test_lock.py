"""One run per output folder: a second one fails at once naming the first; a dead holder's
lock is free."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import oodbench.lock
from oodbench.cli import main
from oodbench.lock import LockedError, lock_path, output_lock

# lock.py needs only the standard library: loading it alone keeps the holder quick to start
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
with lock.output_lock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _args(tb: SimpleNamespace, command: str, *extra: str) -> list[str]:
    return [command, "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
            str(tb.root), "--runs-dir", str(tb.runs), *extra]


def test_a_second_run_on_the_same_out_fails_at_once(
    tiny_bench: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny_bench.out / "tiny"
    with output_lock(folder):
        assert main(_args(tiny_bench, "run", "--out", str(tiny_bench.out))) == 1
        err = capsys.readouterr().err
        assert main(_args(tiny_bench, "ablate", "--out", str(tiny_bench.out))) == 1
        assert "another oodbench run" in capsys.readouterr().err
    assert (f"error: another oodbench run (pid {os.getpid()} on host {socket.gethostname()}, "
            "started ") in err
    assert f"is writing to {folder}; wait for it or use --out elsewhere" in err
    assert not tiny_bench.runs.exists()  # refused before any training
    assert lock_path(folder) == tiny_bench.out / ".tiny.oodbench.lock"  # beside the folder
    assert lock_path(folder).read_bytes() == b""  # released: empty again

    eval_out = tiny_bench.out / "eval-model"  # eval writes <out>/eval-<checkpoint stem>
    checkpoint = tiny_bench.runs.parent / "model.pt"
    checkpoint.write_bytes(b"not read: the lock comes first")
    with output_lock(eval_out):
        assert main(_args(tiny_bench, "eval", "--checkpoint", str(checkpoint), "--arch",
                          "resnet8", "--num-classes", "10", "--out",
                          str(tiny_bench.out))) == 1
    assert f"is writing to {eval_out}; wait for it" in capsys.readouterr().err


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, oodbench.lock.__file__,
                               str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as info, output_lock(folder):
            pass
        message = str(info.value)
        assert f"(pid {holder.pid} on host {socket.gethostname()}, started 20" in message
        assert f"-c {oodbench.lock.__file__} {folder}) is writing to {folder}" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(folder) as path:  # the kernel released the dead holder's lock
        assert path == lock_path(folder)
        assert f'"pid": {os.getpid()}' in path.read_text()


def test_a_holder_that_has_not_written_its_details_yet(tmp_path: Path) -> None:
    lock_path(tmp_path).touch()
    with open(lock_path(tmp_path), "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(LockedError, match="holder details not written yet"), \
                output_lock(tmp_path):
            pass
