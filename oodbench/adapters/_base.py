"""The adapter contract (see :mod:`oodbench.adapters`): :class:`ModelAdapter`, a model's own
:class:`PreprocessConfig`, the adapter registry, and :class:`WrappedAdapter`, the shared base of
the built-in adapters (a user's model wrapped as ``self.model``). The built-in adapters import
this module, never the package, which imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from oodbench.data import Preprocess
from oodbench.errors import ConfigError
from oodbench.registry import Registry, qualified

# ImageNet's channel statistics, the default of torchvision's classification weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's own input preprocessing: ``input_size`` (square side in pixels; ``None`` for
    a model that takes any size and states none: the benchmark's is used), ``channels``,
    per-channel ``mean``/``std`` of inputs scaled to [0, 1], the ``crop_pct`` it was evaluated
    with (``None``: it states none) and the ``interpolation`` of its resize (how it was
    trained: ``"bilinear"`` or ``"bicubic"``)."""

    input_size: int | None
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = None
    interpolation: str = "bilinear"

    def preprocess(self, size: int | None = None, crop_pct: float | None = None) -> Preprocess:
        """The :class:`~oodbench.data.Preprocess` that turns uint8 images into this input at
        ``size`` (default ``input_size``): grey/RGB conversion, resize of the shorter side
        with ``interpolation`` to ``size / crop_pct`` (the caller's ``crop_pct``, a
        benchmark's protocol; else the model's own; else 1) and centre crop, normalisation."""
        side = size or self.input_size
        if side is None:
            raise ConfigError("the model states no input size", "pass <input_size>")
        if crop_pct is None:
            crop_pct = 1.0 if self.crop_pct is None else self.crop_pct
        return Preprocess(side, self.channels, tuple(self.mean), tuple(self.std), crop_pct,
                          self.interpolation)


class ModelAdapter(nn.Module):
    """Base of every adapter (and of oodbench's own nets): see the module docstring."""

    name: ClassVar[str]
    fc: nn.Linear  # the linear head, logits = fc(feats): a submodule or a property

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter takes ``model`` (checked by :func:`adapt`)."""
        return False

    @property
    def preprocess_config(self) -> PreprocessConfig | None:
        """The model's own preprocessing, or ``None``: the benchmark's."""
        return None

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feature map B x C x H x W, pooled features B x D, logits B x K) of one pass."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[2]


def input_preprocess(net: ModelAdapter, fallback: Callable[[], Preprocess], default_size: int,
                     size: int | None = None, crop_pct: float | None = None) -> Preprocess:
    """The preprocessing that feeds ``net``: its own ``preprocess_config`` (at ``size``, else
    its own input size, else ``default_size``; the shorter side resized to that over
    ``crop_pct``, else the model's own, then centre-cropped), or ``fallback()`` (a
    benchmark's, fitted on its ID-train images, computed only then) for a net without one."""
    config = net.preprocess_config
    if config is None:
        return fallback()
    return config.preprocess(size or config.input_size or default_size, crop_pct)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B x N x C patch tokens (prefix tokens already dropped) as a B x C x H x W map."""
    b, n, c = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"{n} patch tokens do not fill a {h} x {w} grid")
    return tokens.transpose(1, 2).reshape(b, c, h, w)


ADAPTERS: Registry[type[ModelAdapter]] = Registry("adapter", fixed=("model",), base=ModelAdapter)
register_adapter = ADAPTERS.register


def model_name(model: nn.Module) -> str:
    """``module.qualname`` of ``model``'s class, for error messages."""
    return qualified(type(model))


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

    # a property where the contract declares an attribute (mypy's override); get_submodule
    # types a Module, and __init__ checked this one is an nn.Linear (return-value)
    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The model's linear head."""
        return self.model.get_submodule(self.head_name)  # type: ignore[return-value]

    @property
    def preprocess_config(self) -> PreprocessConfig | None:
        """The model's own preprocessing (``preprocess`` option or the family's default)."""
        return self._preprocess
