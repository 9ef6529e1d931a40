"""One name -> factory registry, shared by adapters, datasets, models, objectives and scorers.

``register`` is a decorator; ``names`` / ``get`` / ``create`` mirror timm's ``list_models`` /
``create_model``. A name clash names both definitions' modules and files; unknown names and
unknown parameters are errors that list what is accepted. ``check`` holds a factory to its
kind's contract; ``scoped`` undoes a block's registrations (tests). Each registry loads its
installed plugins itself, on first lookup: the entry points of its group ``oodbench.<kind>s``
(:meth:`Registry.load`); plugin files named at run time load through :mod:`oodbench.plugins`,
which sits above every registry. :func:`did_you_mean` is the one place that suggests a close
match for any unknown name (registries, config values, datasets), and :func:`qualified` the one
``module.qualname`` of a class or function in messages.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, Self, TypeVar, get_type_hints

from oodbench.errors import PluginError, PluginWarning, RegistrationError
from oodbench.usercode import user_code

T = TypeVar("T", bound=Callable[..., Any])


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """``" did you mean 'x'?"`` for the closest of ``choices`` to ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


class UnknownName(KeyError):
    """An unknown registry name; ``str()`` is the plain message (``KeyError`` quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
"""A name that becomes a file or folder name (benchmarks, trainings, OOD sets, and every
registered scorer, objective, model or dataset): 1 to 64 letters, digits, ``.``, ``_``, ``+``
or ``-``, starting with a letter or digit (so never ``.``, ``..``, an absolute path or one with
a ``/``). Matched with ``fullmatch``."""


def qualified(obj: object) -> str:
    """``module.qualname`` of a class or function (``qualified(type(x))`` for an instance)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


def origin(obj: object) -> str:
    """``module.qualname (file)`` of a class or function, for error messages."""
    module = sys.modules.get(getattr(obj, "__module__", ""))
    file = getattr(module, "__file__", None) or "<unknown file>"
    return f"{qualified(obj)} ({file})"


def _path_key() -> tuple[tuple[str, int | None], ...]:
    """``sys.path`` with each entry's modification time: it changes when a package is
    installed or a path is added, which is when entry points must be read again."""
    key: list[tuple[str, int | None]] = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, None))
    return tuple(key)


def _init_of(cls: type[object]) -> Callable[..., None]:
    """``cls.__init__``, read off the class (as mypy wants it: not off a value of type
    ``type``, whose ``__init__`` an instance could override)."""
    return cls.__init__


def signature_params(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    """Keyword parameters of a class constructor (without ``self``) or of a function."""
    if isinstance(factory, type):
        init = _init_of(factory)
        if init is object.__init__:
            return []
        return list(inspect.signature(init).parameters.values())[1:]
    return list(inspect.signature(factory).parameters.values())


class Registry(Generic[T]):
    """Factories of one kind (``"adapter"``, ``"dataset"``, ``"model"``, ``"objective"``,
    ``"scorer"``) by name. ``base`` is the class every factory subclasses (``None``: any class
    or function); ``fixed`` the positional arguments every factory takes (not user parameters);
    ``builtins`` a module whose import registers the built-in factories, named by string
    because it imports the registry's own module."""

    def __init__(self, kind: str, fixed: tuple[str, ...] = (), *, base: type | None = None,
                 builtins: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self._items: dict[str, T] = {}
        self._fixed = fixed
        self._builtins = builtins
        # what this registry loaded of the installed entry points, and the sys.path read
        self._entry_points: set[tuple[str, str]] = set()
        self._scanned: tuple[tuple[str, int | None], ...] | None = None
        self._loading = False
        self._lock = threading.RLock()  # one loader at a time; its own lookups pass

    @property
    def group(self) -> str:
        """The entry-point group of installed plugins of this kind (``oodbench.<kind>s``)."""
        return f"oodbench.{self.kind}s"

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``factory`` under ``name`` (sets ``factory.name``)."""

        def deco(factory: T) -> T:
            if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
                raise RegistrationError(
                    f"{self.kind} name {name!r} of {origin(factory)} is not a safe name: use 1 "
                    "to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or "
                    "digit (it becomes part of file names)")
            old = self._items.get(name)
            same = old is not None and qualified(old) == qualified(factory)
            if old is not None and not same:
                raise RegistrationError(
                    f"{self.kind} name {name!r} is already registered by {origin(old)}; "
                    f"cannot register {origin(factory)} under the same name"
                )
            factory.name = name  # type: ignore[attr-defined]  # any factory gets its name
            self._items[name] = factory
            return factory

        return deco

    def check(self, name: str, factory: object, base: type | None = None) -> None:
        """Raise :class:`RegistrationError` unless ``factory`` may be registered as ``name``: a
        concrete subclass of ``base`` (any class or function without one) whose parameters,
        beyond the fixed ones, are named keyword arguments with defaults."""
        if not callable(factory):
            raise RegistrationError(
                f"{self.kind} {name!r} must be a class or a function, got {factory!r}")
        what = f"{self.kind} {name!r} ({origin(factory)})"
        if base is not None and not (isinstance(factory, type) and issubclass(factory, base)):
            raise RegistrationError(f"{what} must subclass {base.__name__}")
        if inspect.isabstract(factory):
            # an abstract class (isabstract), though typed as any callable here
            missing = ", ".join(sorted(factory.__abstractmethods__))  # type: ignore[attr-defined]
            raise RegistrationError(f"{what} does not implement {missing}")
        role = "constructor parameter" if isinstance(factory, type) else "parameter"
        for p in signature_params(factory):
            if p.name not in self._fixed and (
                p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty
            ):
                raise RegistrationError(
                    f"{what}: {role} {p.name!r} must be a named keyword argument with a default"
                )

    def snapshot(self) -> dict[str, T]:
        """A copy of the registered factories by name, in registration order (loads nothing)."""
        return dict(self._items)

    def restore(self, items: Mapping[str, T]) -> None:
        """Make ``items`` (a :meth:`snapshot`) the registered factories."""
        self._items = dict(items)

    @contextmanager
    def scoped(self) -> Iterator[Self]:
        """Undo on exit whatever the block registers (tests): ``with SCORERS.scoped(): ...``.

        Plugins are loaded first, so the block starts from, and returns to, the full registry;
        entry points the block loads are forgotten again with their registrations.
        """
        self.load()
        saved, loaded, scanned = self.snapshot(), set(self._entry_points), self._scanned
        try:
            yield self
        finally:
            self.restore(saved)
            self._entry_points, self._scanned = loaded, scanned

    def load(self) -> None:
        """Import the built-in factories and every installed entry point of :attr:`group`.

        Idempotent: each entry point loads once, and installed entry points are read again
        only when ``sys.path`` or its folders change. A broken entry point is skipped with a
        :class:`~oodbench.errors.PluginWarning` naming it, its distribution and its group, so
        it cannot stop the others; naming its factory then fails as an unknown name.
        """
        with self._lock:
            if self._loading:  # an entry point looking names up while it loads
                return
            self._loading = True
            try:
                self._load_all()
            finally:
                self._loading = False

    def _load_all(self) -> None:
        if self._builtins is not None:
            importlib.import_module(self._builtins)
        key = _path_key()
        if key == self._scanned:
            return
        self._scanned = key
        for ep in importlib.metadata.entry_points().select(group=self.group):
            if (ep.name, ep.value) not in self._entry_points:
                self._entry_points.add((ep.name, ep.value))
                try:
                    self._load_entry_point(ep)
                except PluginError as e:
                    warnings.warn(f"skipped plugin: {e}", PluginWarning, stacklevel=4)

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        """Load one entry point: a module whose decorated factories register themselves, or a
        class or function, registered under the entry point's name; whatever it registers is
        checked, and nothing stays registered if it fails."""
        dist = getattr(ep.dist, "name", None) or "an installed package"
        where = f"entry point {ep.name!r} = {ep.value!r} of {dist} (group {self.group})"
        hint = f"fix or uninstall {dist}"
        before = self.snapshot()
        try:
            with user_code(where, "raised on import", hint):
                obj = ep.load()
            if not inspect.ismodule(obj) and self._items.get(getattr(obj, "name", "")) is not obj:
                self.check(ep.name, obj, self.base)
                self.register(ep.name)(obj)
            for name, factory in self._items.items():
                if before.get(name) is not factory:
                    self.check(name, factory, self.base)
        except RegistrationError as e:
            self.restore(before)
            raise PluginError(f"{where}: {e}", hint) from e
        except BaseException:
            self.restore(before)
            raise

    def names(self) -> list[str]:
        """Sorted registered names."""
        self.load()
        return sorted(self._items)

    def ordered(self) -> list[str]:
        """Registered names in registration order."""
        self.load()
        return list(self._items)

    def get(self, name: str) -> T:
        """The factory registered under ``name``."""
        self.load()
        if name not in self._items:
            names = self.names()
            raise UnknownName(
                f"unknown {self.kind} {name!r};{did_you_mean(name, names)} available: "
                f"{', '.join(names) or 'none'}"
            )
        return self._items[name]

    def params(self, name: str) -> dict[str, Any]:
        """User parameters of ``name`` with their defaults."""
        return {p.name: p.default for p in signature_params(self.get(name))
                if p.name not in self._fixed}

    def annotations(self, name: str) -> dict[str, Any]:
        """The declared types of ``name``'s user parameters, by name (resolved type hints);
        a parameter without one, or whose hint does not resolve, is left out."""
        factory = self.get(name)
        target = _init_of(factory) if isinstance(factory, type) else factory
        try:
            hints = get_type_hints(target, include_extras=True)
        except Exception:  # a hint naming what only a type checker imports, a typo
            hints = {}
        out: dict[str, Any] = {}
        for p in signature_params(factory):
            if p.name in self._fixed:
                continue
            hint = hints.get(p.name, p.annotation)
            if hint is not p.empty and not isinstance(hint, str):
                out[p.name] = hint
        return out

    def create(self, name: str, *args: Any, **params: Any) -> Any:
        """Call the factory; unknown parameters name the accepted ones."""
        factory = self.get(name)
        accepted = self.params(name)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise TypeError(
                f"{self.kind} {name!r} got unknown parameter(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) or 'none'}"
            )
        return factory(*args, **params)
