"""Running a user's Python code: the one way oodbench imports a user's file (plugin files in
:mod:`oodbench.plugins`, ``--model`` factories in :mod:`oodbench.modelref`) and calls into it
(installed entry points in :mod:`oodbench.registry`). What the code raises becomes one
:class:`~oodbench.errors.PluginError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from oodbench.errors import OodbenchError, PluginError, RegistrationError

__all__ = ["run_file", "user_code"]


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
