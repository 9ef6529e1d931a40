"""Install profiles: the wheel's contents, and a base install (no extras) that works.

The wheel is built from this checkout and installed with ``--no-deps`` into a fresh venv outside
the repository. Its dependencies come from this project's environment, but only those that
oodbench's base requirements name (their closure, markers and requested extras evaluated from
the installed metadata): a folder of links to exactly those distributions is the venv's only
site folder, so an optional dependency (timm, ray, faiss, pytest) cannot be imported there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from oodbench.scorers import BUILTIN
from tests.conftest import write_tiny_bench

REPO = Path(__file__).resolve().parent.parent
EXTRAS_ONLY = ("timm", "ray", "faiss", "pytest", "hypothesis")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout."""
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, cwd=out, capture_output=True)
    (path,) = out.glob("oodbench-*.whl")
    return path


def test_the_wheel_ships_the_top_level_presets_and_scorers_under_oodbench(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"oodbench", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert zipfile.ZipFile(wheel).read("oodbench/benchmarks.toml") == (
        REPO / "benchmarks.toml").read_bytes()
    assert {f"oodbench/scorers/{name}.py" for name in BUILTIN} <= set(names)
    for sub in ("adapters", "data"):  # every subpackage of the checkout is in pyproject's list
        assert f"oodbench/{sub}/__init__.py" in names


def _base_closure() -> set[str]:
    """The installed distributions that oodbench's base requirements pull in (no extras)."""
    seen: set[tuple[str, str]] = set()
    dists: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("oodbench", ())]
    while todo:
        name, extras = todo.pop()
        dist = metadata.distribution(name)
        dists.add(canonicalize_name(dist.name))
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = req.marker is None or any(req.marker.evaluate({"extra": e})
                                               for e in ("", *extras))
            key = (canonicalize_name(req.name), ",".join(sorted(req.extras)))
            if wanted and key not in seen:
                seen.add(key)
                todo.append((req.name, tuple(req.extras)))
    return dists - {"oodbench"}


def _link_view(folder: Path, dists: set[str]) -> None:
    """Symlink each distribution's top-level files and folders (from its RECORD) into
    ``folder``."""
    folder.mkdir()
    for name in dists:
        dist = metadata.distribution(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)).resolve())


@pytest.fixture(scope="module")
def base_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and only its base dependencies."""
    root = tmp_path_factory.mktemp("base")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    _link_view(root / "base-deps", _base_closure())
    Path(purelib, "base-deps.pth").write_text(f"{root / 'base-deps'}\n")
    return venv


def _in_venv(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "OODBENCH_DATA", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_a_base_install_imports_the_whole_public_api(base_venv: Path, tmp_path: Path) -> None:
    code = ("import importlib.util, sys, oodbench\n"
            "missing = [n for n in oodbench.__all__ if getattr(oodbench, n, None) is None]\n"
            f"extras = [m for m in {EXTRAS_ONLY!r} if importlib.util.find_spec(m)]\n"
            "print(oodbench.__file__, missing, extras, len(oodbench.__all__))\n")
    done = _in_venv(base_venv, "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, missing, extras, count = done.stdout.split(maxsplit=3)
    assert Path(where).is_relative_to(base_venv)  # the wheel, not this checkout
    assert (missing, extras) == ("[]", "[]") and int(count) > 10, done.stdout


def test_a_base_install_needs_no_extra_until_a_feature_does(base_venv: Path,
                                                            tmp_path: Path) -> None:
    code = ("from oodbench import create_model\n"
            "create_model('timm:resnet18', num_classes=10, in_channels=3)\n")
    done = _in_venv(base_venv, "python", "-c", code, cwd=tmp_path)
    assert done.returncode == 1 and "ConfigError" in done.stderr, done.stderr
    assert "timm models need the timm package" in done.stderr and "oodbench[models]" in done.stderr


def test_a_base_install_lists_its_presets_and_runs_a_tiny_benchmark(base_venv: Path,
                                                                    tmp_path: Path) -> None:
    listed = _in_venv(base_venv, "oodbench", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    benchmarks = {b["name"]: b for b in json.loads(listed.stdout)["benchmarks"]}
    presets = tomllib.loads((REPO / "benchmarks.toml").read_text())["benchmarks"]
    assert set(benchmarks) == set(presets)
    assert Path(benchmarks["fmnist"]["source"]).is_relative_to(base_venv)  # the packaged copy

    bench = write_tiny_bench(tmp_path, n_train=160, noise=False)
    bench.config.write_text(bench.config.read_text().replace("epochs = 8", "epochs = 2"))
    run = _in_venv(base_venv, "oodbench", "run", "--config", str(bench.config), "--benchmark",
                   "tiny", "--data-root", str(bench.root), "--runs-dir", str(bench.runs),
                   "--out", str(bench.out), "--scorers", "msp,energy,knn",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((bench.out / "tiny" / "manifest.json").read_text())
    assert manifest["versions"]["oodbench"] == metadata.version("oodbench")
    assert (bench.out / "tiny" / "metrics.csv").read_text().count("\n") > 2
