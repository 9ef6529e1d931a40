"""One writer per output folder: an ``flock``-ed lock file that names its holder.

The lock is held on an open file, so the kernel releases it when the holder exits in any way,
SIGKILL included: a killed run never leaves a lock that blocks the next one. The file itself
stays (empty while free); only its lock state matters.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from oodbench.errors import OutputError

LOCK_NAME = ".oodbench.lock"


class LockedError(OutputError):
    """Another oodbench run is writing to the same output folder."""


def holder_info() -> dict[str, Any]:
    """What a lock file records about this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv),
            "started": datetime.now().astimezone().isoformat(timespec="seconds")}


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw)
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (ValueError, TypeError, KeyError):  # the holder has not written its details yet
        return "holder details not written yet"


@contextmanager
def output_lock(folder: Path | str) -> Iterator[Path]:
    """Hold ``folder/.oodbench.lock`` for the block (creating ``folder``); raise
    :class:`LockedError` at once, naming the holder, when another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"another oodbench run ({_describe(os.pread(fd, 1 << 16, 0))}) is writing to "
                f"{folder}", "wait for it or use <out_dir> elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
