"""Atomic writes: a failed write leaves the old file (or none) and no temp file behind."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oodbench import fileio
from oodbench.errors import OutputError
from oodbench.fileio import DiskFullError, atomic_write_bytes, remove_stale_temps


def _enospc(*_: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullDisk:
    """A file object that takes half of what it is asked to write, then reports a full disk."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *_: Any) -> None:
        self.f.close()

    def write(self, data: bytes) -> None:
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        _enospc()


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, where: str
) -> None:
    target = tmp_path / "out" / "metrics.csv"
    if existing:
        atomic_write_bytes(target, b"old content\n")
    if where == "write":
        real = os.fdopen
        monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))
    else:
        monkeypatch.setattr(fileio.os, "fsync", _enospc)
    with pytest.raises(DiskFullError) as info:
        atomic_write_bytes(target, b"new content that does not fit\n" * 1000)
    message = str(info.value)
    assert str(target) in message
    assert "no space left on device; free space there, or write to another folder" in message
    assert isinstance(info.value, OutputError)  # one of oodbench's own errors: the CLI shows it
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    if existing:
        assert target.read_bytes() == b"old content\n"
    else:
        assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == (["metrics.csv"] if existing
                                                               else [])


def test_other_errors_pass_through_and_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.os, "replace", denied)
    with pytest.raises(PermissionError):
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_the_usual_mode_and_content(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "x.bin"
    atomic_write_bytes(target, b"abc")
    atomic_write_bytes(target, b"defg")
    assert target.read_bytes() == b"defg"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert list(target.parent.iterdir()) == [target]


def test_stale_temps_of_dead_processes_are_removed(tmp_path: Path) -> None:
    # a child writes half a temp file the way atomic_write_bytes names them, and dies
    code = ("import os, sys, tempfile; fd, _ = tempfile.mkstemp(dir=sys.argv[1], "
            "prefix=f'.x.pt.{sys.argv[2]}.{os.getpid()}.', suffix='.tmp'); "
            "os.write(fd, b'half'); os._exit(9)")
    (tmp_path / "cache" / "ab").mkdir(parents=True)
    for folder in (tmp_path, tmp_path / "cache" / "ab"):
        subprocess.run([sys.executable, "-c", code, str(folder), fileio._HOST], check=False)
    mine = tmp_path / f".y.npz.{fileio._HOST}.{os.getpid()}.abcd1234.tmp"  # a live writer
    other_host = tmp_path / ".z.npz.elsewhere.1.abcd1234.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (mine, other_host, unrelated):
        path.write_bytes(b"x")
    stale = sorted(tmp_path.rglob(".x.pt.*.tmp"))
    assert len(stale) == 2
    assert sorted(remove_stale_temps(tmp_path)) == stale
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == sorted(
        p.name for p in (mine, other_host, unrelated))
    assert remove_stale_temps(tmp_path / "missing") == []


@pytest.mark.parametrize("parts", [("..", "x"), ("/tmp/abs",), ("a/../../x",), (".",)])
def test_a_path_built_from_a_name_stays_inside_its_folder(tmp_path: Path, parts) -> None:
    with pytest.raises(OutputError, match="is not inside"):
        fileio.inside(tmp_path / "out", *parts)
    assert fileio.inside(tmp_path / "out", "bench", "ce-s0.npz") == tmp_path / "out/bench/ce-s0.npz"


def test_a_written_file_has_the_mode_of_the_umask_at_write_time(tmp_path: Path) -> None:
    """The file mode follows the umask when the file is written (a new process, so the umask
    set here touches nothing else), not one read when oodbench was imported."""
    code = ("import os, sys\nfrom pathlib import Path\nfrom oodbench.fileio import "
            "atomic_write_text\nfor mask in (0o022, 0o027):\n    os.umask(mask)\n"
            "    path = Path(sys.argv[1]) / f'{mask:o}.txt'\n    atomic_write_text(path, 'x')\n"
            "    print(oct(path.stat().st_mode & 0o777))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["0o644", "0o640"]
