"""Provenance for manifests and checkpoints: library versions and the code's git commit."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results."""
    out = {"python": platform.python_version()}
    for dist in ("oodbench", "torch", "torchvision", "numpy", "scikit-learn", "scipy", "pandas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def code_version() -> dict[str, object]:
    """The git commit of the oodbench checkout and whether it has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "oodbench", "scorers"], check=True,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "dirty": None}
    return {"git_commit": commit, "dirty": bool(dirty)}


def source_fingerprint(extra: tuple[Path | str, ...] = ()) -> str:
    """SHA-256 over the source of the ``oodbench`` and ``scorers`` packages (and ``extra``
    files, e.g. plugin files): a stored result made by other code is not reused."""
    h = hashlib.sha256()
    files = sorted(p for pkg in ("oodbench", "scorers") for p in (REPO / pkg).rglob("*.py"))
    for path in (*files, *map(Path, extra)):
        h.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path).encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
