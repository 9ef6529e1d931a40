"""Atomic writes: every artefact goes to a temp file beside its target, then is renamed, and a
results folder is written beside its target and swapped in whole (:class:`StagedFolder`).

A run killed at any point leaves each target either absent or whole; what it can leave behind
is a temp file, named ``.<target>.<host>.<pid>.<random>.tmp`` so that
:func:`remove_stale_temps` can tell the temp files of dead processes from those of live ones.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from oodbench.errors import OutputError
from oodbench.lock import output_lock, pid_alive
from oodbench.progress import console

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


@dataclass(frozen=True)
class Owned:
    """A folder (or file) a command replaces, writes into or reads: the API ``option`` that
    named it, the value as given, the ``path`` the command uses there (``<out_dir>/<name>``,
    the runs folder of a benchmark, the whole data root, a checkpoint file) and ``what`` it
    holds, for messages."""

    option: str
    given: Path | str
    path: Path | str
    what: str
    writes: bool = True  # False: only read (a checkpoint, the benchmark file, an OOD set)
    replaced: bool = False  # True: replaced whole (a results folder)


def _contains(outer: Path, inner: Path) -> bool:
    return inner.resolve().is_relative_to(outer.resolve())


def check_disjoint(*folders: Owned | None) -> None:
    """Refuse, before any work, two of ``folders`` (``None``: not used) where one is or
    contains the other, and one of them is replaced whole (it would delete or swap away what
    the other holds) or both are written (their files would mix); a file that is only read
    may lie in a folder that is written into. The message names both options and paths."""
    given = [f for f in folders if f is not None]
    for i, a in enumerate(given):
        for b in given[i + 1:]:
            if not (a.replaced or b.replaced or (a.writes and b.writes)):
                continue
            outer, inner = (a, b) if _contains(Path(a.path), Path(b.path)) else (b, a)
            if not _contains(Path(outer.path), Path(inner.path)):
                continue
            how = "is" if Path(outer.path).resolve() == Path(inner.path).resolve() else "contains"
            raise OutputError(
                f"<{outer.option}={outer.given}> and <{inner.option}={inner.given}> overlap: "
                f"{outer.path} ({outer.what}) {how} {inner.path} ({inner.what}), and writing "
                "one replaces or mixes what the other holds",
                "give them folders that do not contain one another (e.g. siblings: "
                "results/, runs/ and data/)")


def check_export(target: Path | str, option: str, source: Path | str) -> None:
    """Refuse an export folder ``target`` that is, or contains, the results folder ``source``
    it is made from: it is replaced whole, so the results would be deleted."""
    target, source = Path(target), Path(source)
    if _contains(target, source):
        raise OutputError(f"<{option}={target}> contains the results folder {source} that the "
                          "export is made from, and an export folder is replaced whole",
                          "write the export to a folder of its own (the default is inside "
                          "the results folder)")


def inside(folder: Path | str, *parts: str) -> Path:
    """``folder`` joined with ``parts``, refused unless it resolves inside ``folder``: the one
    check that every output path built from a name (benchmark, training, scorer, dataset)
    passes, so no name can write outside the folder the user gave."""
    folder = Path(folder)
    path = folder.joinpath(*parts)
    if not path.resolve().is_relative_to(folder.resolve()) or path.resolve() == folder.resolve():
        if path.is_symlink() and os.path.normpath(path) != os.path.normpath(folder):
            raise OutputError(f"{path} is a link to {path.resolve()}, outside {folder}",
                              f"remove the link {path} (oodbench writes a folder there), or "
                              "write to another folder")
        raise OutputError(f"{path} is not inside {folder}",
                          "names that become paths must be safe names (letters, digits, '.', "
                          "'_', '+', '-'; no '/' or '..')")
    return path


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new temp file beside ``path`` (named for :func:`remove_stale_temps`), open for
    writing; its mode is the usual one of a new file (0666 less the umask, which the kernel
    applies: nothing reads or sets the process's umask)."""
    while True:
        tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it into place.

    On any failure the temp file is removed and ``path`` keeps its old content (or stays
    absent); a full disk raises :class:`DiskFullError`.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise DiskFullError(f"cannot write {path}: no space left on device",
                                "free space there, or write to another folder") from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_hash(path: Path | str) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_files(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of each file ``names`` (relative to ``folder``), for :func:`check_files`."""
    return {name: file_hash(folder / name) for name in names}


def check_files(folder: Path, recorded: dict[str, str], source: Path) -> None:
    """Refuse a folder whose files are missing or differ from the hashes ``source`` (a
    manifest) recorded: they are not the files that run wrote together."""
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            raise OutputError(f"{path} is missing, but {source} records it",
                              "the folder is incomplete: run the benchmark again")
        if file_hash(path) != digest:
            raise OutputError(f"{path} differs from the file {source} records (sha256 "
                              f"{digest[:12]}...): the folder mixes files of different runs",
                              "run the benchmark again into this folder")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files under ``folder`` left by dead processes of this host (a killed
    run's half-written artefacts); returns them. Other hosts' temp files are left alone."""
    removed = []
    for tmp in folder.rglob(".*.tmp") if folder.is_dir() else ():
        m = _TEMP.match(tmp.name)
        if m and m["host"] == _HOST and not pid_alive(int(m["pid"])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFolder:
    """A results folder replaced whole: a command writes into :attr:`staging` (beside
    ``target``), and :meth:`commit` swaps it in, so ``target`` always holds one complete run.

    ``keep`` names the files (paths relative to the folder) of ``target`` that another command
    owns: they are carried into the new folder (hard links, else copies); every other old file
    goes, so nothing stale survives. While the swap runs the old folder is
    ``.<name>.previous``; :meth:`recover` (called on creation, under the caller's lock) puts it
    back if a killed swap left ``target`` missing, and deletes what a finished one left.
    Until :meth:`commit`, ``target`` is not touched; after a failure the partial output stays
    in :attr:`staging` until the next command on ``target`` starts.
    """

    def __init__(self, target: Path | str, keep: Callable[[str], bool] = lambda rel: False):
        self.target = Path(target)
        self.keep = keep
        self.staging = self.target.parent / f".{self.target.name}.staging"
        self.previous = self.target.parent / f".{self.target.name}.previous"
        self.recover()
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    def recover(self) -> None:
        """Undo or finish a swap that a killed process left half done."""
        if self.previous.exists():
            if self.target.exists():
                shutil.rmtree(self.previous)
            else:
                os.rename(self.previous, self.target)

    def discard_if_empty(self) -> bool:
        """Remove the staging folder if nothing was written to it; whether anything was."""
        if any(self.staging.rglob("*")):
            return True
        self.staging.rmdir()
        return False

    def commit(self) -> Path:
        """Carry the kept files over, then swap the staging folder in; returns ``target``."""
        old = self.target.is_dir()  # a previous result, swapped out below
        for path in sorted(self.target.rglob("*")) if old else ():
            rel = path.relative_to(self.target).as_posix()
            dest = self.staging / rel
            if path.is_file() and self.keep(rel) and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, dest)
                except OSError:
                    shutil.copy2(path, dest)
        if old:
            os.rename(self.target, self.previous)
        os.rename(self.staging, self.target)
        _fsync_dir(self.target.parent)
        if old:
            shutil.rmtree(self.previous)
        return self.target


def _foreign_files(folder: Path, owns: Callable[[Path], bool]) -> list[str]:
    """The files of an existing, non-empty ``folder`` when ``owns`` does not recognise it as
    one a command of this kind wrote (hidden files aside); empty when it may be replaced."""
    if not folder.is_dir():
        return []
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    return [] if not files or owns(folder) else files


@contextmanager
def staged(target: Path | str, option: str, owns: Callable[[Path], bool],
           keep: Callable[[str], bool] = lambda rel: False) -> Iterator[Path]:
    """Write a folder that replaces ``target`` whole: check that it can be written and that an
    existing ``target`` is one this kind of command wrote (``owns``: e.g. it holds a
    manifest), never a user's folder; hold its lock; yield the staging folder, swapped in when
    the block ends normally (:class:`StagedFolder`, ``keep``). On any error or interrupt
    ``target`` is left as it was and the partial output stays in the staging folder.
    ``option`` is the API argument that named ``target``."""
    target = Path(target)
    check_writable(target, option)
    with output_lock(target):
        foreign = _foreign_files(target, owns)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more"
                                               if len(foreign) > 3 else "")
            raise OutputError(f"{target} holds files that oodbench did not write there "
                              f"({shown}), and writing there replaces the folder whole",
                              f"give <{option}> another folder, or move those files away")
        stage = StagedFolder(target, keep)
        try:
            yield stage.staging
        except BaseException:
            if stage.discard_if_empty():
                console.print(f"[yellow]{target} is left as it was[/yellow]; this run's "
                              f"partial output is in {stage.staging}", soft_wrap=True)
            raise
        stage.commit()


def echo_file(path: str, token: str) -> tuple[str, str]:
    """Read the file ``path``, which should hold ``token``, and write it back beside it as
    ``<name>.<host>``: how a node shows that it shares a folder with the one that wrote it.
    Returns (this host, what went wrong or "")."""
    host = socket.gethostname()
    probe = Path(path)
    try:
        if probe.read_text() != token:
            return host, f"{probe} holds other content here"
        probe.with_name(f"{probe.name}.{host}").write_text(token)
    except OSError as e:
        return host, f"{type(e).__name__}: {e}"
    return host, ""
