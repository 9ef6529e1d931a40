"""The shared base of the built-in adapters: a user's model wrapped as ``self.model``."""

from __future__ import annotations

from torch import nn

from oodbench.adapters import ModelAdapter, PreprocessConfig
from oodbench.errors import ConfigError


def model_name(model: nn.Module) -> str:
    """``module.qualname`` of ``model``'s class, for error messages."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


class WrappedAdapter(ModelAdapter):
    """A user's ``model`` as the submodule ``self.model`` (never modified: no ``eval()`` or
    ``to()`` of its own), with its ``nn.Linear`` head at ``self.head_name`` inside it; ``fc`` is
    that head, looked up on each use (so it is registered once, and deep copies follow it)."""

    def __init__(self, model: nn.Module, head_name: str, preprocess: PreprocessConfig | None
                 ) -> None:
        super().__init__()
        self.model = model
        self.head_name = head_name
        self._preprocess = preprocess
        head = model.get_submodule(head_name)
        if not isinstance(head, nn.Linear):
            raise ConfigError(
                f"the head {head_name!r} of {model_name(model)} is a {type(head).__name__}, "
                "not an nn.Linear",
                "adapters need the linear classifier head: restore it, or name another "
                "module with <head_layer=NAME> for the generic adapter")

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The model's linear head."""
        return self.model.get_submodule(self.head_name)  # type: ignore[return-value]

    @property
    def preprocess_config(self) -> PreprocessConfig | None:
        """The model's own preprocessing (``preprocess`` option or the family's default)."""
        return self._preprocess
