"""Model adapters: the one contract every layer (extraction, scorers, training objectives) uses
of a network, so a user's timm, torchvision or own model is scored like oodbench's own nets.

A :class:`ModelAdapter` is an ``nn.Module`` with

- ``forward_all(x) -> (fmap, feats, logits)``: the last local feature map as B x C x H x W
  (a ViT's patch tokens laid out on their H x W grid), the pooled penultimate features B x D
  and the logits B x K, from one forward pass;
- ``fc``: the linear head (``nn.Linear``, D -> K) with ``logits = fc(feats)``;
- ``preprocess_config``: the model's own input preprocessing (:class:`PreprocessConfig`:
  mean/std, input size, channels), or ``None`` where the benchmark's ID-train statistics apply
  (oodbench's own nets).

Adapters are registered like every other extension (``register_adapter``, entry-point group
``oodbench.adapters``, ``--plugin`` files). Each adapter class says which models it takes
(:meth:`ModelAdapter.matches`, by type, never by name strings); :func:`adapt` wraps a model
with the first adapter that matches, in registration order, or with the generic hook adapter
when the caller names the feature and head layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from oodbench.data import Preprocess
from oodbench.errors import ConfigError
from oodbench.plugins import load_entry_points
from oodbench.registry import Registry

ADAPTERS: Registry[type[ModelAdapter]] = Registry(
    "adapter", loader=load_entry_points, fixed=("model",))
register_adapter = ADAPTERS.register
list_adapters = ADAPTERS.names

# ImageNet's channel statistics, the default of torchvision's classification weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's own input preprocessing: ``input_size`` (square side in pixels; ``None`` for
    a model that takes any size and states none: the benchmark's is used), ``channels`` and
    per-channel ``mean``/``std`` of inputs scaled to [0, 1]."""

    input_size: int | None
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def preprocess(self, size: int | None = None, crop_pct: float = 1.0) -> Preprocess:
        """The :class:`~oodbench.data.Preprocess` that turns uint8 images into this input at
        ``size`` (default ``input_size``): grey/RGB conversion, resize of the shorter side (to
        ``size / crop_pct``) and centre crop, normalisation."""
        side = size or self.input_size
        if side is None:
            raise ConfigError("the model states no input size", "pass <input_size>")
        return Preprocess(side, self.channels, tuple(self.mean), tuple(self.std), crop_pct)


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
                     size: int | None = None, crop_pct: float = 1.0) -> Preprocess:
    """The preprocessing that feeds ``net``: its own ``preprocess_config`` (at ``size``, else
    its own input size, else ``default_size``; the shorter side resized to that over
    ``crop_pct``, then centre-cropped), or ``fallback()`` (a benchmark's, fitted on its
    ID-train images, computed only then) for a net without one."""
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


def adapt(
    model: nn.Module,
    feature_layer: str | None = None,
    head_layer: str | None = None,
    **options: Any,
) -> ModelAdapter:
    """``model`` as a :class:`ModelAdapter`: itself if it is one; the generic hook adapter
    when ``feature_layer`` and ``head_layer`` (module names, as in ``named_modules()``) are
    given; else the first registered adapter whose :meth:`~ModelAdapter.matches` takes it.
    ``options`` go to the adapter (e.g. ``preprocess=PreprocessConfig(...)``)."""
    if isinstance(model, ModelAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"<model> must be a torch.nn.Module, got {type(model).__name__}")
    if feature_layer is not None or head_layer is not None:
        if feature_layer is None or head_layer is None:
            raise ConfigError("the generic adapter needs both <feature_layer> and <head_layer>",
                              "name the module whose output is the last feature map and the "
                              "nn.Linear head, as in model.named_modules()")
        return ADAPTERS.create("hooks", model, feature_layer=feature_layer,
                               head_layer=head_layer, **options)
    for name in ADAPTERS.ordered():
        cls = ADAPTERS.get(name)
        if cls.matches(model):
            return ADAPTERS.create(name, model, **options)
    raise ConfigError(
        f"no adapter takes a {type(model).__module__}.{type(model).__qualname__}",
        "name its layers for the generic adapter: <feature_layer=NAME> (the module whose "
        "output is the last feature map) and <head_layer=NAME> (its nn.Linear head), or "
        "register an adapter for it (register_adapter)")



# the built-in adapters, registered in this order (adapt() tries them in it)
from oodbench.adapters import torchvision, timm, hooks  # noqa: E402, F401, I001
