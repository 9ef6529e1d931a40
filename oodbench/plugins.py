"""Plugins of every registry: scorers, objectives, models and datasets, by one route.

:data:`KINDS` is the one table of plugin kinds: each names its registry, its register decorator,
the class its factories subclass, and its entry-point group ``oodbench.<kind>``. A plugin is
either an installed entry point (:func:`load_entry_points`: the entry point names a module whose
decorated factories register themselves, or a class or function, registered under the entry
point's name) or a Python file named at run time (:func:`load_plugin_file`, which may register
factories of several kinds at once). Whatever a plugin registers is checked against its kind's
contract; a plugin that fails leaves no registration behind. :func:`scoped` undoes a block's
registrations and plugin loads in every registry (tests). :func:`user_code` and
:func:`run_file` are the one way oodbench runs a user's Python file (plugins here, ``--model``
factories in :mod:`oodbench.modelref`): what it raises becomes one :class:`PluginError` naming
the file and the line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from oodbench.errors import OodbenchError, PluginError
from oodbench.registry import RegistrationError, Registry

__all__ = [
    "KINDS",
    "Kind",
    "PluginError",
    "PluginWarning",
    "load_entry_points",
    "load_plugin_file",
    "registries",
    "run_file",
    "scoped",
    "user_code",
]


@dataclass(frozen=True)
class Kind:
    """One plugin kind; ``registry``, ``register`` and ``base`` are ``module:attribute`` paths,
    resolved when plugins load (so this table imports none of them)."""

    name: str
    registry: str
    register: str
    base: str | None  # the class every factory subclasses; None: any class or function
    what: str  # what a plugin registers, for the hint of a file that registers nothing

    @property
    def group(self) -> str:
        """The entry-point group of installed plugins of this kind."""
        return f"oodbench.{self.name}"

    def base_class(self) -> type | None:
        """The class every factory of this kind subclasses, if any."""
        return _resolve(self.base) if self.base else None


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("scorers", "oodbench.scoring:SCORERS", "oodbench.scoring:register_scorer",
             "oodbench.scoring:Scorer", "a Scorer subclass"),
        Kind("objectives", "oodbench.objectives:OBJECTIVES",
             "oodbench.objectives:register_objective", "oodbench.objectives:Objective",
             "an Objective subclass"),
        Kind("models", "oodbench.models:MODELS", "oodbench.models:register_model", None,
             "a model function"),
        Kind("datasets", "oodbench.data.catalogue:DATASETS", "oodbench.data:register_dataset",
             None, "a dataset function"),
        Kind("adapters", "oodbench.adapters:ADAPTERS", "oodbench.adapters:register_adapter",
             "oodbench.adapters:ModelAdapter", "a ModelAdapter subclass"),
    )
}

_LEAVE_OUT = "or leave the file out of <plugins>"


class PluginWarning(UserWarning):
    """An installed entry point that could not be loaded and was skipped."""


@dataclass
class _Loaded:
    """What this process has loaded: entry points tried, the ``sys.path`` they were read from,
    and per file what it registered (kind -> name -> factory)."""

    entry_points: set[tuple[str, str, str]] = field(default_factory=set)
    scanned: tuple[tuple[str, int | None], ...] | None = None
    files: dict[Path, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def copy(self) -> _Loaded:
        """A copy to restore later (:func:`scoped`)."""
        return _Loaded(set(self.entry_points), self.scanned, dict(self.files))


_loaded = _Loaded()


def _resolve(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def registries() -> dict[str, Registry[Any]]:
    """The registry of each kind, by kind; a kind whose module or registry this installation
    lacks is left out."""
    out: dict[str, Registry[Any]] = {}
    for kind in KINDS.values():
        module, _, attr = kind.registry.partition(":")
        try:
            registry = getattr(importlib.import_module(module), attr, None)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        if registry is not None:
            out[kind.name] = registry
    return out


@contextmanager
def _registering(where: str, hint: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Collect what the block registers (kind -> name -> factory) into the yielded dict and
    check it; on any error undo all of it (a broken contract is a :class:`PluginError` naming
    ``where``; the user's code runs in :func:`user_code`)."""
    regs = registries()
    before = {kind: reg.snapshot() for kind, reg in regs.items()}
    added: dict[str, dict[str, Any]] = {}
    try:
        yield added
        for kind, reg in regs.items():
            new = {n: f for n, f in reg.snapshot().items() if before[kind].get(n) is not f}
            for name, factory in new.items():
                reg.check(name, factory, KINDS[kind].base_class())
            if new:
                added[kind] = new
    except BaseException as e:
        for kind, reg in regs.items():
            reg.restore(before[kind])
        if isinstance(e, RegistrationError):
            raise PluginError(f"{where}: {e}", hint) from e
        raise


def _raised(e: BaseException, path: Path | None = None) -> str:
    """``Type: message`` of an exception from a user's code, with the line of ``path`` (else
    of the innermost frame) it was raised at; a SyntaxError names its own line."""
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, SyntaxError):
        return text
    frames = [(f.f_code.co_filename, line) for f, line in traceback.walk_tb(e.__traceback__)]
    if path is not None:
        frames = [(name, line) for name, line in frames if Path(name) == path] or frames
    return text + (f" (at {frames[-1][0]}:{frames[-1][1]})" if frames else "")


@contextmanager
def user_code(where: str, doing: str, hint: str, path: Path | None = None) -> Iterator[None]:
    """Run a user's code: an exception it raises (other than oodbench's own errors, which pass
    as they are) becomes a :class:`PluginError` "``where`` ``doing``: Type: message (at
    file:line)", the line being the last one of ``path`` in the traceback."""
    try:
        yield
    except (OodbenchError, RegistrationError):
        raise
    except Exception as e:
        raise PluginError(f"{where} {doing}: {_raised(e, path)}", hint) from e


def run_file(path: Path, prefix: str, where: str, hint: str) -> ModuleType:
    """Import the Python file ``path`` as a module named ``prefix`` + a hash of the path (kept
    in ``sys.modules`` while it loads, so its dataclasses and pickles resolve; removed again
    if it fails). What its code raises is a :class:`PluginError` (:func:`user_code`)."""
    name = prefix + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"{where} is not an importable Python file", hint)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with user_code(where, "raised on import", hint, path):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _path_key() -> tuple[tuple[str, int | None], ...]:
    """``sys.path`` with each entry's modification time: it changes when a package is
    installed or a path is added, which is when entry points must be read again."""
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, None))
    return tuple(key)


def load_entry_points() -> None:
    """Import the built-in ``oodbench.scorers`` and every installed entry point of every kind.

    Idempotent: each entry point loads once, and installed entry points are read again only
    when ``sys.path`` or its folders change. A broken entry point is skipped with a
    :class:`PluginWarning` naming it, its distribution and its group, so it cannot stop the
    others; naming its factory then fails as an unknown name.
    """
    importlib.import_module("oodbench.scorers")
    key = _path_key()
    if key == _loaded.scanned:
        return
    _loaded.scanned = key
    installed = importlib.metadata.entry_points()
    for kind in registries():
        for ep in installed.select(group=KINDS[kind].group):
            if (ep.group, ep.name, ep.value) in _loaded.entry_points:
                continue
            _loaded.entry_points.add((ep.group, ep.name, ep.value))
            try:
                _load_entry_point(KINDS[kind], ep)
            except PluginError as e:
                warnings.warn(f"skipped plugin: {e}", PluginWarning, stacklevel=2)


def _load_entry_point(kind: Kind, ep: importlib.metadata.EntryPoint) -> None:
    dist = getattr(ep.dist, "name", None) or "an installed package"
    where = f"entry point {ep.name!r} = {ep.value!r} of {dist} (group {kind.group})"
    hint = f"fix or uninstall {dist}"
    with _registering(where, hint):
        with user_code(where, "raised on import", hint):
            obj = ep.load()
        if inspect.ismodule(obj):
            return
        registry = registries()[kind.name]
        if registry.snapshot().get(getattr(obj, "name", None)) is obj:
            return  # a decorated factory, registered under its own name
        registry.check(ep.name, obj, kind.base_class())
        _resolve(kind.register)(ep.name)(obj)


def _registers_nothing_hint() -> str:
    *ways, last = [
        f'{KINDS[kind].what} with @{decorator}("name") from {module}'
        for kind in registries()
        for module, _, decorator in [KINDS[kind].register.partition(":")]
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
    from oodbench.config import OOD_GROUPS  # config builds on the registries

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
    global _loaded
    from oodbench.config import OOD_GROUPS

    load_entry_points()
    with ExitStack() as stack:
        for registry in registries().values():
            stack.enter_context(registry.scoped())
        saved, groups = _loaded.copy(), dict(OOD_GROUPS)
        try:
            yield
        finally:
            _loaded = saved
            OOD_GROUPS.clear()
            OOD_GROUPS.update(groups)
