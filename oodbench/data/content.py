"""Content manifests of file-backed datasets: the cache key of a set of image files.

A manifest lists, per file, its path relative to the set's base folder, its size, mtime and
the SHA-256 of its bytes. It is computed once, stored as JSON, and re-checked cheaply on later
calls: a file whose size and mtime match its stored entry keeps its stored hash; only the
others are hashed again. The fingerprint covers paths, sizes, hashes and labels (not mtimes),
so touching a file without changing it keeps the key, and a changed or added file changes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from oodbench.errors import DataError
from oodbench.fileio import atomic_write_bytes

VERSION = 1
BLOCK = 1 << 20  # bytes read at a time
PROGRESS_EVERY = 1000  # files between two ``progress`` calls (and one after the last)
_HEX = frozenset("0123456789abcdef")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def _valid(entry: object) -> bool:
    """Whether a stored entry is ``[size, mtime_ns, sha256]`` (ints and 64 hex digits)."""
    return (isinstance(entry, list) and len(entry) == 3
            and all(type(v) is int for v in entry[:2]) and isinstance(entry[2], str)
            and len(entry[2]) == 64 and set(entry[2]) <= _HEX)


def _stored(path: Path | None) -> dict[str, list]:
    """The entries of a stored manifest (relpath -> [size, mtime_ns, sha256]); an unreadable
    or foreign one counts as empty and is rewritten."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("version") == VERSION and isinstance(data.get("files"), dict):
            # a malformed entry is dropped, so that file is hashed again
            return {k: v for k, v in data["files"].items() if _valid(v)}
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def content_fingerprint(files: Sequence[Path], base: Path, labels: np.ndarray | None,
                        store: Path | None,
                        progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 over ``relpath, size, sha256, label`` of every file (in the given order), with
    the per-file hashes kept in a manifest under ``store`` (none: all hashed, nothing kept).
    ``progress`` is called with the number of files done so far (every ``PROGRESS_EVERY``
    files and after the last). A stored manifest that cannot be read is ignored and rewritten;
    a listed file that is missing or unreadable (a folder) raises :class:`DataError`."""
    rel = [f.relative_to(base).as_posix() for f in files]
    names = hashlib.sha256(("\n".join([str(base), *rel])).encode()).hexdigest()[:16]
    path = store / f"{names}.json" if store is not None else None
    known = _stored(path)
    entries: dict[str, list] = {}
    changed = False
    for i, (name, file) in enumerate(zip(rel, files, strict=True)):
        try:
            stat = file.stat()
            entry = known.get(name)
            if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
                entry, changed = [stat.st_size, stat.st_mtime_ns, file_sha256(file)], True
        except FileNotFoundError as exc:
            raise DataError(f"{file}: listed but not found",
                            "restore the file or rebuild the list that names it") from exc
        except OSError as exc:  # a folder, no permission, an I/O error
            raise DataError(f"{file}: listed but unreadable ({exc})",
                            "list image files only, readable by this user") from exc
        entries[name] = entry
        if progress is not None and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == len(rel)):
            progress(i + 1)
    if path is not None and (changed or len(known) != len(entries)):
        body = {"version": VERSION, "base": str(base), "files": entries}
        atomic_write_bytes(path, json.dumps(body).encode())
    values = np.asarray(labels) if labels is not None else np.full(len(rel), -1)
    h = hashlib.sha256()
    for name, label in zip(rel, values.tolist(), strict=True):
        size, _, digest = entries[name]
        h.update(f"{name}\t{size}\t{digest}\t{label}\n".encode())
    return h.hexdigest()
