"""Provenance for manifests and checkpoints: library versions and the code's git commit."""

from __future__ import annotations

import hashlib
import importlib.util
import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("oodbench.scorers", "oodbench")
"""The packages whose source makes results: the built-in scorers first, so that each file is
named the same in a checkout (top-level ``scorers/``) and in a wheel (``oodbench/scorers/``)."""


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
    """SHA-256 over the source of ``oodbench`` and its built-in scorers (and ``extra`` files,
    e.g. plugin files): a stored result made by other code is not reused."""
    named: dict[Path, str] = {}
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.submodule_search_locations, pkg
        folder = Path(spec.submodule_search_locations[0])
        for path in folder.rglob("*.py"):
            named.setdefault(path.resolve(), f"{pkg}/{path.relative_to(folder).as_posix()}")
    h = hashlib.sha256()
    for name, path in (*sorted((n, p) for p, n in named.items()),
                       *((str(p.relative_to(REPO) if p.is_relative_to(REPO) else p), p)
                         for p in map(Path, extra))):
        h.update(name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
