"""Models named by reference, as ``oodbench eval --model`` takes them: ``timm:NAME``,
``torchvision:NAME`` or ``FILE.py:FACTORY``, with optional weights from a ``.safetensors`` or
``.pt`` file (read with ``weights_only``; oodbench's checkpoints and plain state_dicts alike).

Nothing is downloaded unless ``pretrained=True`` (timm's and torchvision's default weights,
for a machine with a network).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path

import torch
from torch import nn

from oodbench.checkpoint import first_non_finite, load_into, read_checkpoint
from oodbench.errors import CheckpointError, ConfigError

# timm:NAME, torchvision:NAME or FILE.py:FACTORY
REFERENCE = re.compile(r"(?:timm|torchvision):[\w.-]+|[^:]+\.py:[A-Za-z_]\w*")


def is_reference(value: str) -> bool:
    """Whether ``value`` names a model by reference rather than by oodbench's registry."""
    return ":" in value


def check_reference(value: str) -> str:
    """``value`` if it is a well-formed reference (nothing is imported), else ValueError."""
    if not REFERENCE.fullmatch(value):
        raise ValueError(f"{value!r} is not a model reference: use timm:NAME, "
                         "torchvision:NAME or FILE.py:FACTORY")
    return value


def _timm(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    try:
        import timm
    except ModuleNotFoundError:
        raise ConfigError(f"<model=timm:{name}>: timm models need the timm package, which is "
                          "not installed", "install it with pip install 'oodbench[models]'"
                          ) from None

    if name not in timm.list_models():
        from oodbench.registry import did_you_mean

        raise ConfigError(f"<model=timm:{name}>: timm has no model {name!r};"
                          f"{did_you_mean(name, timm.list_models())}",
                          "see timm.list_models()")
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)


def _torchvision(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision import models

    names = models.list_models(module=models)
    if name not in names:
        from oodbench.registry import did_you_mean

        raise ConfigError(f"<model=torchvision:{name}>: torchvision has no classification "
                          f"model {name!r};{did_you_mean(name, names)}",
                          "see torchvision.models.list_models()")
    if pretrained:
        return models.get_model(name, weights="DEFAULT")
    return models.get_model(name, weights=None, num_classes=num_classes)


def _factory(file: str, factory: str, num_classes: int) -> nn.Module:
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"<model={file}:{factory}>: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"oodbench_model_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ConfigError(f"<model={file}:{factory}>: {path} defines no function {factory!r}")
    takes = inspect.signature(fn).parameters
    return fn(num_classes=num_classes) if "num_classes" in takes else fn()


def load_model(ref: str, num_classes: int, weights: Path | str | None = None,
               pretrained: bool = False) -> nn.Module:
    """The model ``ref`` names (see the module docstring) with ``num_classes`` outputs, in
    eval mode, with ``weights`` loaded when given."""
    try:
        check_reference(ref)
    except ValueError as e:
        raise ConfigError(f"<model={ref}>: {e}") from None
    kind, _, name = ref.rpartition(":")
    if kind == "timm":
        model = _timm(name, num_classes, pretrained)
    elif kind == "torchvision":
        model = _torchvision(name, num_classes, pretrained)
    elif kind.endswith(".py"):
        model = _factory(kind, name, num_classes)
    else:
        raise ConfigError(f"<model={ref}>: unknown kind {kind!r}",
                          "use timm:NAME, torchvision:NAME or FILE.py:FACTORY")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"<model={ref}> gave a {type(model).__name__}, not an nn.Module")
    if weights is not None:
        load_into(model, read_weights(weights), weights)
    return model.eval()


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or from a ``.pt`` (``weights_only``); non-finite
    weights are refused."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return read_checkpoint(path)[0]
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"weights {path} do not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})",
                              "save or copy it again") from e
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{path} holds non-finite (NaN/inf) weights, first at {bad!r}")
    return state
