"""oodbench's own exceptions: every error a user can fix is one of these classes.

Each carries a ``message`` (what is wrong, naming the file, key or value) and a ``hint`` (how
to fix it). Either may name an option of the Python API as ``<name=VALUE>``: ``str(e)`` shows
it as ``name=VALUE`` (a keyword argument), while the CLI renders it with its own option
(``--data-root VALUE``), so no module below ``cli.py`` names a command-line flag. The CLI prints
these classes as one paragraph; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetUnavailable",
    "DeviceError",
    "OodbenchError",
    "OutputError",
    "PluginError",
    "PluginWarning",
    "RegistrationError",
    "TrainingError",
]

_OPTION = re.compile(r"<(\w+)(?:=([^<>]*))?>")


class OodbenchError(Exception):
    """An error the user can fix: ``message`` plus an optional ``hint``."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Pickled with its hint (an error raised in a Ray worker reaches the driver whole)."""
        return type(self), (self.message, self.hint)

    def render(self, options: Mapping[str, str] | None = None) -> str:
        """The message and hint as one paragraph; ``<name=VALUE>`` placeholders become
        ``options[name] VALUE`` (``options[name]`` alone for ``=True``) where ``options`` names
        the option, else ``name=VALUE``."""
        options = options or {}

        def option(m: re.Match[str]) -> str:
            name, value = m[1], m[2]
            if name not in options:
                return f"{name}={value}" if value is not None else name
            if value in (None, "True"):
                return options[name]
            return f"{options[name]} {value}"

        text = self.message + (f"; {self.hint}" if self.hint else "")
        return _OPTION.sub(option, text)

    def __str__(self) -> str:
        return self.render()


class ConfigError(OodbenchError, ValueError):
    """A wrong key or value in a benchmark file, or in the arguments of an API call."""


class DataError(OodbenchError):
    """A dataset file or folder that cannot be read as images (the message names it)."""


class DatasetUnavailable(DataError):
    """No source can provide the dataset here; the message lists every way to get it."""


class CheckpointError(OodbenchError):
    """A checkpoint that cannot be loaded into the requested model."""


class PluginError(OodbenchError):
    """A plugin (entry point or file) could not be loaded; the message names it."""


class PluginWarning(UserWarning):
    """An installed entry point that could not be loaded and was skipped."""


class RegistrationError(TypeError, ValueError):
    """A factory that cannot be registered: its name is taken, or it breaks its kind's contract."""


class DeviceError(OodbenchError):
    """A device that does not exist here."""


class OutputError(OodbenchError):
    """An output folder that cannot be written, is locked by another run, or is full."""


class TrainingError(OodbenchError):
    """A training that cannot go on (a non-finite loss, a diverged model)."""
