"""Content manifests (oodbench.data.content): what changes a fingerprint, what is re-hashed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from oodbench.data import content
from oodbench.data.content import content_fingerprint
from oodbench.errors import DataError


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Three small files under ``tmp_path / "set"`` (one in a sub-folder)."""
    base = tmp_path / "set"
    paths = [base / "a.bin", base / "b.bin", base / "sub" / "c.bin"]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (100 + i))
    return paths


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The relative names of the files :func:`content.file_sha256` hashes, in call order."""
    calls: list[str] = []
    real = content.file_sha256

    def counting(path: Path) -> str:
        calls.append(path.name)
        return real(path)

    monkeypatch.setattr(content, "file_sha256", counting)
    return calls


def _bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_same_files_same_fingerprint_without_rehash(files: list[Path], tmp_path: Path,
                                                    hashed: list[str]) -> None:
    base, store = files[0].parent, tmp_path / "store"
    first = content_fingerprint(files, base, None, store)
    assert sorted(hashed) == ["a.bin", "b.bin", "c.bin"]
    hashed.clear()
    assert content_fingerprint(files, base, None, store) == first
    assert hashed == []
    # without a store nothing is kept: every call hashes every file, to the same key
    assert content_fingerprint(files, base, None, None) == first
    assert len(hashed) == 3
    assert not (tmp_path / "set" / "store").exists()


def test_fingerprint_is_the_documented_hash(files: list[Path]) -> None:
    base = files[0].parent
    lines = "".join(f"{p.relative_to(base).as_posix()}\t{p.stat().st_size}\t"
                    f"{hashlib.sha256(p.read_bytes()).hexdigest()}\t{label}\n"
                    for p, label in zip(files, (2, 0, 1), strict=True))
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert content_fingerprint(files, base, np.array([2, 0, 1]), None) == expected


def test_changed_bytes_change_fingerprint(files: list[Path], tmp_path: Path,
                                          hashed: list[str]) -> None:
    base, store = files[0].parent, tmp_path / "store"
    first = content_fingerprint(files, base, None, store)
    hashed.clear()
    files[1].write_bytes(b"\xff" * files[1].stat().st_size)  # same size, new bytes
    _bump_mtime(files[1])
    assert content_fingerprint(files, base, None, store) != first
    assert hashed == ["b.bin"]


def test_added_file_changes_fingerprint(files: list[Path], tmp_path: Path) -> None:
    base, store = files[0].parent, tmp_path / "store"
    first = content_fingerprint(files, base, None, store)
    extra = base / "d.bin"
    extra.write_bytes(b"new")
    assert content_fingerprint([*files, extra], base, None, store) != first
    assert len(list(store.glob("*.json"))) == 2  # another path list, another manifest
    assert content_fingerprint(files, base, None, store) == first  # removing it again


def test_touch_rehashes_one_file_and_keeps_fingerprint(files: list[Path], tmp_path: Path,
                                                       hashed: list[str]) -> None:
    base, store = files[0].parent, tmp_path / "store"
    first = content_fingerprint(files, base, None, store)
    hashed.clear()
    _bump_mtime(files[2])
    assert content_fingerprint(files, base, None, store) == first
    assert hashed == ["c.bin"]
    hashed.clear()  # the manifest took the new mtime: a third call hashes nothing
    assert content_fingerprint(files, base, None, store) == first
    assert hashed == []


def test_label_changes_fingerprint(files: list[Path], tmp_path: Path,
                                   hashed: list[str]) -> None:
    base, store = files[0].parent, tmp_path / "store"
    labels = np.array([0, 1, 2])
    first = content_fingerprint(files, base, labels, store)
    hashed.clear()
    assert content_fingerprint(files, base, np.array([0, 1, 1]), store) != first
    assert content_fingerprint(files, base, None, store) != first  # None means -1 each
    assert content_fingerprint(files, base, labels, store) == first
    assert hashed == []  # labels never cause a re-hash


def test_manifest_is_json_with_relative_paths(files: list[Path], tmp_path: Path) -> None:
    base, store = files[0].parent, tmp_path / "store"
    content_fingerprint(files, base, None, store)
    (manifest,) = store.glob("*.json")
    assert len(manifest.stem) == 16
    data = json.loads(manifest.read_text())
    assert sorted(data["files"]) == ["a.bin", "b.bin", "sub/c.bin"]
    size, mtime_ns, digest = data["files"]["sub/c.bin"]
    assert size == 102 and mtime_ns == files[2].stat().st_mtime_ns
    assert digest == hashlib.sha256(files[2].read_bytes()).hexdigest()
    assert not list(store.glob(".*.tmp"))  # written atomically: no temp file left


@pytest.mark.parametrize("damage", ["truncated", "not-an-object", "bad-entry"])
def test_corrupt_manifest_is_rewritten(files: list[Path], tmp_path: Path, hashed: list[str],
                                       damage: str) -> None:
    base, store = files[0].parent, tmp_path / "store"
    first = content_fingerprint(files, base, None, store)
    (manifest,) = store.glob("*.json")
    pristine = json.loads(manifest.read_text())
    if damage == "truncated":
        manifest.write_text(manifest.read_text()[:20])
    elif damage == "not-an-object":
        manifest.write_text("[1, 2, 3]")
    else:
        manifest.write_text(json.dumps({**pristine, "files": {**pristine["files"],
                                                              "a.bin": {"size": 1}}}))
    hashed.clear()
    assert content_fingerprint(files, base, None, store) == first
    assert hashed == (["a.bin"] if damage == "bad-entry" else ["a.bin", "b.bin", "c.bin"])
    assert json.loads(manifest.read_text()) == pristine
    hashed.clear()
    assert content_fingerprint(files, base, None, store) == first
    assert hashed == []


def test_vanished_file_names_it(files: list[Path], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    base = files[0].parent
    files[1].unlink()
    with pytest.raises(DataError, match=r"b\.bin"):
        content_fingerprint(files, base, None, tmp_path / "store")
    real = content.file_sha256

    def vanish(path: Path) -> str:  # gone after its stat, before its bytes are read
        path.unlink()
        return real(path)

    monkeypatch.setattr(content, "file_sha256", vanish)
    with pytest.raises(DataError, match=r"a\.bin"):
        content_fingerprint(files, base, None, None)


def test_progress_counts_files(files: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base = files[0].parent
    done: list[int] = []
    content_fingerprint(files, base, None, None, progress=done.append)
    assert done == [3]
    monkeypatch.setattr(content, "PROGRESS_EVERY", 2)
    done.clear()
    content_fingerprint(files, base, None, None, progress=done.append)
    assert done == [2, 3]


def test_large_file_hashed_in_blocks(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(content.BLOCK * 2 + 123)
    path.write_bytes(data)
    assert content.file_sha256(path) == hashlib.sha256(data).hexdigest()
