"""Atomic file writes: every artefact goes to a temp file beside its target, then is renamed.

A run killed at any point leaves each target either absent or whole; what it can leave behind
is a temp file, named ``.<target>.<host>.<pid>.<random>.tmp`` so that
:func:`remove_stale_temps` can tell the temp files of dead processes from those of live ones.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
from pathlib import Path

from oodbench.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OutputError):
    """A write failed because the disk (or the quota) is full; the message names the file."""


def check_writable(folder: Path | str, option: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written to; ``option`` is
    the API argument that named it (``out_dir``, ``runs_dir``)."""
    folder = Path(folder)
    probe = folder.absolute()
    while not probe.exists():  # the nearest existing ancestor decides
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    why = "is not writable" if probe.is_dir() else "is a file, not a folder"
    raise OutputError(f"{folder}: cannot write there because {probe} {why}",
                      f"pass <{option}> a folder you can write to")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it into place.

    On any failure the temp file is removed and ``path`` keeps its old content (or stays
    absent); a full disk raises :class:`DiskFullError`.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFullError(f"cannot write {path}: no space left on device",
                                "free space there, or write to another folder") from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files under ``folder`` left by dead processes of this host (a killed
    run's half-written artefacts); returns them. Other hosts' temp files are left alone."""
    removed = []
    for tmp in folder.rglob(".*.tmp") if folder.is_dir() else ():
        m = _TEMP.match(tmp.name)
        if m and m["host"] == _HOST and not _alive(int(m["pid"])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
