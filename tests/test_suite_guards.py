"""The suite's own guards: under ``make test``'s pytest-xdist options a test that crashes its
worker, or hangs past the per-test ceiling, ends the run at once with the test named."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CRASHES = """
import os

def test_before():
    pass

def test_crashes():
    os.abort()

def test_after():
    pass
"""
HANGS = """
import threading

def test_hangs():
    threading.Event().wait()
"""
PASSES = """
def test_passes():
    pass
"""


def _xdist_options() -> list[str]:
    """The Makefile's ``XDIST`` options, on 2 workers (``-n auto`` may be many here)."""
    text = (REPO / "Makefile").read_text()
    options = shlex.split(re.search(r"^XDIST\s*:?=(.*)$", text, re.MULTILINE).group(1))
    return [("2" if before == "-n" else o)
            for before, o in zip(["", *options[:-1]], options, strict=True)]


def _run_suite(tmp_path: Path, tests: dict[str, str], **ini: object) -> tuple[int, str]:
    """Run pytest as ``make test`` does on a generated suite: its exit status and output.

    The suite's ini file holds ``ini``, plus this project's pytest-timeout method.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = {"timeout_method": project["ini_options"]["timeout_method"], **ini}
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n" + "".join(f"{k} = {v}\n" for k, v in ini.items()))
    for name, text in tests.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # a bound far above the run's few seconds: reaching it means the run hung
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           *_xdist_options()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    return done.returncode, done.stdout + done.stderr


def _crashed(out: str) -> list[str]:
    """The tests named by xdist's crash reports (the FAILURES section's lines; the short
    summary repeats them, cut to the terminal's width unless ``CI`` is set)."""
    return re.findall(r"^worker '\w+' crashed while running '(\S+)'$", out, re.MULTILINE)


def test_a_crashed_worker_ends_the_run_naming_its_test(tmp_path: Path) -> None:
    code, out = _run_suite(tmp_path, {"test_crash.py": CRASHES, "test_other.py": PASSES})
    assert code == 1, out
    # once: the crashed test is not run again on a new worker
    assert _crashed(out) == ["test_crash.py::test_crashes"], out
    assert "crashed and worker restarting disabled" in out


def test_a_hung_test_is_stopped_and_named(tmp_path: Path) -> None:
    code, out = _run_suite(tmp_path, {"test_hang.py": HANGS, "test_other.py": PASSES},
                           timeout=10, faulthandler_timeout=2)
    assert code == 1, out
    # the stacks first (faulthandler), then pytest-timeout ends the worker and xdist names it
    assert "Timeout (0:00:02)!" in out and 'test_hang.py", line 5 in test_hangs' in out, out
    assert _crashed(out) == ["test_hang.py::test_hangs"], out
    assert re.search(r"\b1 failed, 1 passed\b", out), out
