"""Plugins of every registry: scorers, objectives, models, datasets and adapters, by one route.

:data:`KINDS` is the one table of plugin kinds: each names its registry, its register decorator and
what a plugin of it registers. A plugin is either an installed entry point of group
``oodbench.<kind>`` (each registry loads its own on first lookup,
:meth:`~oodbench.registry.Registry.load`; :func:`load_entry_points` loads them all) or a
Python file named at run time (:func:`load_plugin_file`, which may register factories of
several kinds at once). Whatever a plugin file registers is checked against its kind's
contract; a file that fails leaves no registration behind. :func:`scoped` undoes a block's
registrations and plugin loads in every registry (tests). This module sits above every
registry: none of them imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from oodbench.adapters import ADAPTERS
from oodbench.config import OOD_GROUPS
from oodbench.data.catalogue import DATASETS
from oodbench.errors import PluginError
from oodbench.models import MODELS
from oodbench.objectives import OBJECTIVES
from oodbench.registry import RegistrationError, Registry
from oodbench.scoring import SCORERS
from oodbench.usercode import run_file

__all__ = [
    "KINDS",
    "Kind",
    "PluginError",
    "load_entry_points",
    "load_plugin_file",
    "loaded_files",
    "registries",
    "scoped",
]


@dataclass(frozen=True)
class Kind:
    """One plugin kind: its name (its registry's entry-point group is ``oodbench.<name>``),
    its registry, its register decorator as ``module:function`` and what a plugin registers
    (both for the hint of a file that registers nothing)."""

    name: str
    registry: Registry[Any]
    register: str
    what: str


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("scorers", SCORERS, "oodbench.scoring:register_scorer", "a Scorer subclass"),
        Kind("objectives", OBJECTIVES, "oodbench.objectives:register_objective",
             "an Objective subclass"),
        Kind("models", MODELS, "oodbench.models:register_model", "a model function"),
        Kind("datasets", DATASETS, "oodbench.data:register_dataset", "a dataset function"),
        Kind("adapters", ADAPTERS, "oodbench.adapters:register_adapter",
             "a ModelAdapter subclass"),
    )
}

_LEAVE_OUT = "or leave the file out of <plugins>"


@dataclass
class _Loaded:
    """The plugin files this process has loaded, and per file what it registered (kind ->
    name -> factory).

    Process-wide, as the registrations it records are: a plugin's decorators register into
    the module-level registries when its file is imported, and those last as long as the
    process (:func:`scoped` restores both)."""

    files: dict[Path, dict[str, dict[str, Any]]] = field(default_factory=dict)


_loaded = _Loaded()


def registries() -> dict[str, Registry[Any]]:
    """The registry of each kind, by kind, in :data:`KINDS` order."""
    return {name: kind.registry for name, kind in KINDS.items()}


def load_entry_points() -> None:
    """Load the built-in factories and installed entry points of every registry
    (:meth:`~oodbench.registry.Registry.load`)."""
    for registry in registries().values():
        registry.load()


@contextmanager
def _registering(where: str, hint: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Collect what the block registers (kind -> name -> factory) into the yielded dict and
    check it; on any error undo all of it (a broken contract is a :class:`PluginError` naming
    ``where``; the user's code runs in :func:`~oodbench.usercode.user_code`)."""
    regs = registries()
    before = {kind: reg.snapshot() for kind, reg in regs.items()}
    added: dict[str, dict[str, Any]] = {}
    try:
        yield added
        for kind, reg in regs.items():
            new = {n: f for n, f in reg.snapshot().items() if before[kind].get(n) is not f}
            for name, factory in new.items():
                reg.check(name, factory, reg.base)
            if new:
                added[kind] = new
    except BaseException as e:
        for kind, reg in regs.items():
            reg.restore(before[kind])
        if isinstance(e, RegistrationError):
            raise PluginError(f"{where}: {e}", hint) from e
        raise


def _registers_nothing_hint() -> str:
    *ways, last = [
        f'{kind.what} with @{decorator}("name") from {module}'
        for kind in KINDS.values()
        for module, _, decorator in [kind.register.partition(":")]
    ]
    return f"decorate {', '.join(ways)} or {last}; {_LEAVE_OUT}"


def loaded_files() -> list[Path]:
    """The plugin files this process has loaded (absolute paths), in load order: what a
    process that runs this one's jobs elsewhere must load too."""
    return list(_loaded.files)


def load_plugin_file(path: Path | str) -> dict[str, list[str]]:
    """Import a Python file of plugins; return per kind the sorted names it registered, e.g.
    ``{"scorers": ["margin"], "objectives": ["halfce"]}``.

    Loading the same file again is a no-op while its registrations stand. A file that is
    missing, not Python, raises on import, registers nothing, clashes with a registered name
    or registers a factory that breaks its kind's contract is a :class:`PluginError` naming
    the file, and leaves no registration behind.
    """
    path = Path(path).resolve()
    where = f"plugin file {path}"
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise PluginError(f"{where} {problem}", f"check the path, {_LEAVE_OUT}")
    load_entry_points()
    regs = registries()
    done = _loaded.files.get(path)
    if done is None or any(regs[kind].snapshot().get(name) is not factory
                           for kind, new in done.items() for name, factory in new.items()):
        done = _import_file(path, where)
        _loaded.files[path] = done
    return {kind: sorted(new) for kind, new in done.items()}


def _import_file(path: Path, where: str) -> dict[str, dict[str, Any]]:
    if path.suffix != ".py":
        raise PluginError(f"{where} is not an importable Python file",
                          f"name a .py file, {_LEAVE_OUT}")
    hint = f"fix the file (or install what it imports), {_LEAVE_OUT}"
    module: ModuleType | None = None
    groups = dict(OOD_GROUPS)  # a file may register OOD groups only (register_ood_group)
    try:
        with _registering(where, hint) as added:
            module = run_file(path, "oodbench_plugin_", where, hint)
        if not added and groups == OOD_GROUPS:
            raise PluginError(f"{where} registers nothing", _registers_nothing_hint())
    except BaseException:
        if module is not None:  # imported, then refused: run_file removed it otherwise
            del sys.modules[module.__name__]
        OOD_GROUPS.clear()
        OOD_GROUPS.update(groups)
        raise
    return added


@contextmanager
def scoped() -> Iterator[None]:
    """Undo on exit every registration and plugin load of the block, in every registry.

    For tests: ``with plugins.scoped(): ...``, or as a fixture::

        @pytest.fixture(autouse=True)
        def isolated_registries() -> Iterator[None]:
            with plugins.scoped():
                yield
    """
    with ExitStack() as stack:
        for registry in registries().values():
            stack.enter_context(registry.scoped())
        files, groups = dict(_loaded.files), dict(OOD_GROUPS)
        try:
            yield
        finally:
            _loaded.files = files
            OOD_GROUPS.clear()
            OOD_GROUPS.update(groups)
