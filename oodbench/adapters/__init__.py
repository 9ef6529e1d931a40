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

from typing import Any

from torch import nn

from oodbench.adapters._base import (
    ADAPTERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelAdapter,
    PreprocessConfig,
    WrappedAdapter,
    input_preprocess,
    model_name,
    register_adapter,
    tokens_to_map,
)
from oodbench.errors import ConfigError

# isort: off
# the built-in adapters register in this order, which adapt() tries
from oodbench.adapters import torchvision, timm, hooks  # noqa: F401
# isort: on

__all__ = [
    "ADAPTERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelAdapter",
    "PreprocessConfig",
    "WrappedAdapter",
    "adapt",
    "input_preprocess",
    "model_name",
    "register_adapter",
    "tokens_to_map",
]


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
        f"no adapter takes a {model_name(model)}",
        "name its layers for the generic adapter: <feature_layer=NAME> (the module whose "
        "output is the last feature map) and <head_layer=NAME> (its nn.Linear head), or "
        "register an adapter for it (register_adapter)")

