"""The public API (``oodbench.__all__``): documented and typed, loaded on first use, one style."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import oodbench

COMMANDS = ("run_benchmark", "plan_benchmark", "train_benchmark", "ablate_benchmark",
            "evaluate_checkpoint", "evaluate")
# options every command takes, by keyword, spelt as RunOptions' fields
SHARED = {"data_root", "device", "download"}


def _members(obj: Any) -> list[tuple[str, Callable[..., Any]]]:
    """``obj`` itself if it is a function, else the class's own ``__init__`` and public
    methods (inherited ones are checked where they are defined)."""
    if not inspect.isclass(obj):
        return [(obj.__qualname__, obj)]
    out = []
    for name, member in vars(obj).items():
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member) and (name == "__init__" or not name.startswith("_")):
            out.append((f"{obj.__qualname__}.{name}", member))
    return out


def _problems(name: str, func: Callable[..., Any]) -> list[str]:
    """What ``func`` lacks: a docstring (``__init__`` may rely on its class's), an annotation
    on a parameter (but ``self`` and ``cls``) or on its return."""
    problems = []
    if func.__name__ != "__init__" and not inspect.getdoc(func):
        problems.append(f"{name}: no docstring")
    sig = inspect.signature(func)
    for i, p in enumerate(sig.parameters.values()):
        if i == 0 and p.name in ("self", "cls"):
            continue
        if p.annotation is inspect.Parameter.empty:
            problems.append(f"{name}: parameter {p.name} has no type")
    if sig.return_annotation is inspect.Signature.empty:
        problems.append(f"{name}: no return type")
    return problems


def test_every_export_is_documented_and_typed() -> None:
    problems = []
    for name in oodbench.__all__:
        obj = getattr(oodbench, name)
        if inspect.isclass(obj) and not inspect.getdoc(obj):
            problems.append(f"{name}: no docstring")
        for qualname, func in _members(obj) if callable(obj) else []:
            problems += _problems(qualname, func)
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_is_missing() -> None:
    def bare(x, y: int = 0):  # type: ignore[no-untyped-def]
        return x

    assert _problems("bare", bare) == ["bare: no docstring", "bare: parameter x has no type",
                                       "bare: no return type"]


def test_every_export_resolves_and_import_loads_no_torch() -> None:
    assert oodbench.__all__ == sorted(oodbench.__all__)
    assert all(getattr(oodbench, name) is not None for name in oodbench.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        oodbench.nothing  # noqa: B018
    code = "import sys, oodbench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_take_one_style(name: str) -> None:
    """The thing a command works on positionally, every option by keyword, named as the
    benchmark's fields and the other commands' (no ``**options`` pass-through)."""
    params = list(inspect.signature(getattr(oodbench, name)).parameters.values())
    kinds = [p.kind for p in params]
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    options = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert options >= SHARED
    assert not options & {"batch_size", "out", "options"}  # extract_batch, out_dir
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert len(positional) <= 2, positional
