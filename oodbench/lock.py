"""One writer per output folder: an ``flock``-ed lock file that names its holder.

The lock is held on an open file, so the kernel releases it when the holder exits in any way,
SIGKILL included: a killed run never leaves a lock that blocks the next one. The file itself
stays (empty while free); only its lock state matters.

Per-entry claims, for the checkpoints and cache entries of a runs folder that several
processes (on several hosts, over a shared filesystem) may share: :func:`claim` holds
``<target>.claim``, created with ``O_CREAT | O_EXCL`` and holding :func:`holder_info`, while the
holder computes ``target``. Another claimant waits (polling; it prints once whom it waits
for), then checks ``target`` again and reuses it, so no entry is computed twice. The holder
touches its claim every ``CLAIM_REFRESH_S`` seconds and removes it when the block ends, by
return or exception. A claim is stale, and taken over, when its holder is a dead process of
this host (a SIGKILLed run) or it has not been touched for ``CLAIM_STALE_S`` seconds (a holder
on another host, or a lost one). Its holder's clock may differ from the waiter's (hosts
sharing a filesystem), so that age is measured on both clocks: by its mtime on the waiter's
clock, once the waiter has also seen it unchanged for two refresh periods (a holder whose clock
is behind keeps refreshing), or by how long the waiter has seen it unchanged, on its own
monotonic clock (a holder whose clock is ahead stamps its claim in the future). Taking
over renames the stale file to a unique name first, so of two waiters only one removes it; the
file it moved is checked to be the one found stale.
``flock`` alone would not do: it is not reliable across hosts on network filesystems.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from oodbench.errors import OutputError
from oodbench.progress import console

LOCK_NAME = ".oodbench.lock"


class LockedError(OutputError):
    """Another oodbench run is writing to the same output folder."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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


def lock_path(folder: Path | str) -> Path:
    """The lock file of an output folder: beside it (``.<name>.lock``), not inside, because a
    finished run swaps the whole folder."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}{LOCK_NAME}"


@contextmanager
def output_lock(folder: Path | str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (:func:`lock_path`) for the block; raise
    :class:`LockedError` at once, naming the holder, when another process holds it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
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


# --- per-entry claims in a shared runs folder -------------------------------------------------

CLAIM_SUFFIX = ".claim"
CLAIM_POLL_S = 0.2  # how often a waiter looks at a claim again
CLAIM_REFRESH_S = 5.0  # how often a holder touches its claim
CLAIM_STALE_S = 60.0  # a claim untouched for this long is a dead (or lost) holder's

# (device, inode) of the claims this process holds, open so that their inodes stay theirs; a
# claim naming our pid but not here was left by an earlier process that had the same pid.
# Process-wide by nature: it records what this process holds, as the claim files name it.
_held: set[tuple[int, int]] = set()


def claim_path(target: Path) -> Path:
    """The claim file of ``target``: ``<target>.claim`` beside it."""
    return target.with_name(target.name + CLAIM_SUFFIX)


def _stale(st: os.stat_result, raw: bytes, unchanged: float) -> str | None:
    """Why the claim found as ``st`` and ``raw`` is stale, or None if it is live;
    ``unchanged``: for how many seconds this waiter has seen it as it is."""
    age = time.time() - st.st_mtime
    if age > CLAIM_STALE_S and unchanged > 2 * CLAIM_REFRESH_S:
        return f"not refreshed for {age:.0f} s"
    if unchanged > CLAIM_STALE_S:
        return f"not refreshed for {unchanged:.0f} s as seen from this host" + (
            f"; its time stamp is {-age:.0f} s ahead of this host's clock" if age < 0 else "")
    try:
        info = json.loads(raw)
        pid, host = int(info["pid"]), info["host"]
    except (ValueError, TypeError, KeyError):  # not written yet: only its age can tell
        return None
    if host != socket.gethostname():
        return None
    if pid == os.getpid() and (st.st_dev, st.st_ino) not in _held:
        return f"left by an earlier process with pid {pid}"
    return None if pid_alive(pid) else f"its holder, pid {pid}, is dead"


def _identity(st: os.stat_result, raw: bytes) -> tuple[int, int, int, bytes]:
    """What tells one claim from the next: inode numbers are reused at once, but each claim
    holds a random token, and a refresh changes the mtime."""
    return st.st_dev, st.st_ino, st.st_mtime_ns, raw


def take_over(path: Path, st: os.stat_result, raw: bytes) -> bool:
    """Remove the stale claim ``path`` that was found as ``st`` and ``raw``; False when it was
    no longer that claim (another waiter took it over first, or its holder touched it)."""
    aside = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}."
                           f"{secrets.token_hex(4)}.stale")
    try:
        os.rename(path, aside)  # one waiter wins the rename; the others find nothing to move
    except FileNotFoundError:
        return False
    with open(aside, "rb") as f:
        moved = _identity(os.fstat(f.fileno()), f.read())
    if moved != _identity(st, raw):
        # another waiter took the stale claim over and claimed anew between our look and our
        # rename: give that live claim back
        with suppress(FileExistsError):
            os.link(aside, path)
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def _acquire(target: Path, path: Path) -> int:
    """Create the claim ``path`` of ``target`` (O_EXCL), waiting while a live holder has it and
    taking a stale one over; returns the open claim file."""
    waiting = False
    seen: tuple[tuple[int, int, int, bytes], float] | None = None  # the claim, when first seen
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, json.dumps(holder_info() | {"claim": secrets.token_hex(8)}).encode())
            except BaseException:
                os.close(fd)
                path.unlink()
                raise
            return fd
        try:
            with open(path, "rb") as f:
                st, raw = os.fstat(f.fileno()), f.read()
        except FileNotFoundError:  # released meanwhile
            continue
        if seen is None or seen[0] != _identity(st, raw):
            seen = _identity(st, raw), time.monotonic()
        why = _stale(st, raw, time.monotonic() - seen[1])
        if why is not None:
            if take_over(path, st, raw):
                console.print(f"taking over the stale claim on {target} ({why}; "
                              f"{_describe(raw)})", markup=False, highlight=False)
            continue
        if not waiting:
            console.print(f"waiting for {target}: another oodbench process is computing it "
                          f"({_describe(raw)})", markup=False, highlight=False)
            waiting = True
        time.sleep(CLAIM_POLL_S)


def _refresh(fd: int, stop: threading.Event) -> None:
    """Touch the claim file ``fd`` every ``CLAIM_REFRESH_S`` until ``stop`` is set."""
    while not stop.wait(CLAIM_REFRESH_S):
        with suppress(OSError):  # a passing filesystem error: the next touch will do
            os.utime(fd)


@contextmanager
def claim(target: Path | str) -> Iterator[Path]:
    """Hold the claim of ``target`` (:func:`claim_path`) for the block, waiting while another
    process holds it; yields the claim file. The caller checks ``target`` again inside: the
    holder it waited for has usually made it."""
    target = Path(target)
    path = claim_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(target, path)
    mine = os.fstat(fd)
    _held.add((mine.st_dev, mine.st_ino))
    stop = threading.Event()
    beat = threading.Thread(target=_refresh, args=(fd, stop), name=f"claim {target.name}",
                            daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join()
        _held.discard((mine.st_dev, mine.st_ino))
        try:
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):  # not taken over
                os.unlink(path)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


@contextmanager
def unless_done(target: Path | str) -> Iterator[bool]:
    """Yield whether the caller must make ``target``: False when it exists (made earlier, or
    by the holder of its claim, waited for), True while holding its :func:`claim`."""
    target = Path(target)
    if target.is_file():
        yield False
        return
    with claim(target):
        yield not target.is_file()
