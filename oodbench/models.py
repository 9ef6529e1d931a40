"""Networks: a model registry (``register_model`` / ``create_model`` / ``list_models``) and ResNets.

Every model exposes the last convolutional feature map (after the final ReLU, before pooling),
the pooled penultimate features and the linear head ``fc``; ``forward`` returns logits.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from oodbench.adapters import ModelAdapter, adapt
from oodbench.errors import ConfigError
from oodbench.modelref import is_reference, load_model
from oodbench.registry import Registry
from oodbench.weights import load_into, read_weights

MODELS: Registry[Callable[..., ModelAdapter]] = Registry(
    "model", fixed=("num_classes", "in_channels"))
register_model = MODELS.register
list_models = MODELS.names


def create_model(name: str, num_classes: int, in_channels: int, *,
                 weights: Path | str | None = None, **kwargs: Any) -> ModelAdapter:
    """Build a registered model, ``fn(num_classes, in_channels, **kwargs) -> ModelAdapter``
    (oodbench's own nets are an :class:`OODNet`), or the model a reference names
    (``timm:NAME``, ``torchvision:NAME``, ``FILE.py:FACTORY``; see :mod:`oodbench.modelref`)
    as its adapter (which sets its input channels: a grey benchmark is copied to RGB for an
    RGB model); random-initialised, or with ``weights`` (a ``.safetensors`` or ``.pt``
    state_dict of the model, not of its adapter) loaded."""
    if is_reference(name):
        if kwargs:
            raise ConfigError(f"model {name!r} takes no {', '.join(kwargs)}",
                              "remove them (widths) from the benchmark file")
        return adapt(load_model(name, num_classes, weights))
    model = _build(name, num_classes, in_channels, kwargs)
    return model if weights is None else load_into(model, read_weights(weights), weights)


def _described(name: str, kwargs: dict[str, Any]) -> str:
    """``model 'resnet8' with widths (4, 4, 100000000)``, for messages."""
    given = ", ".join(f"{k} {tuple(v) if isinstance(v, list) else v!r}"
                      for k, v in kwargs.items())
    return f"model {name!r}" + (f" with {given}" if given else "")


def _build(name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]
           ) -> ModelAdapter:
    """The registered model ``name``, refused before it allocates when its parameters and
    buffers alone exceed this machine's memory (counted on the meta device), and when the
    allocator refuses them."""
    hint = "give it smaller widths (or another model) in the benchmark file"
    if not torch.empty(()).is_meta:  # not already a shape-only build (feature_size)
        try:
            with torch.device("meta"):
                shape = MODELS.create(name, num_classes, in_channels, **kwargs)
            size = sum(t.numel() * t.element_size()
                       for t in (*shape.parameters(), *shape.buffers()))
        except Exception:  # does not build on the meta device: built for real below
            size = 0
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if size > memory:
            raise ConfigError(f"{_described(name, kwargs)} does not fit in memory: its weights "
                              f"alone take {size:,} bytes, this machine has {memory:,}", hint)
    try:
        return MODELS.create(name, num_classes, in_channels, **kwargs)
    except (MemoryError, RuntimeError) as e:  # CUDA's OutOfMemoryError is a RuntimeError
        said = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not isinstance(e, MemoryError | torch.cuda.OutOfMemoryError) and \
                "can't allocate memory" not in said:
            raise
        raise ConfigError(f"{_described(name, kwargs)} does not fit in memory: building it "
                          f"failed ({type(e).__name__}: {said})", hint) from e


@functools.cache
def feature_size(name: str, num_classes: int, in_channels: int,
                 widths: tuple[int, ...] = ()) -> int | None:
    """The size D of the pooled features of model ``name`` (its head's input), read from the
    model built on the meta device (no memory, no weights); ``None`` for a ``FILE.py:FACTORY``
    reference (user code is not run for this) or a model that does not build here (its error
    is reported where it is built for use)."""
    if is_reference(name) and not name.startswith(("timm:", "torchvision:")):
        return None
    kwargs: dict[str, Any] = {"widths": widths} if widths else {}
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes, in_channels, **kwargs)
    except (ConfigError, ValueError, TypeError):
        return None
    return int(model.fc.in_features)


class OODNet(ModelAdapter):
    """Base of oodbench's own nets: ``feature_map`` -> global average pool -> ``fc``; the
    benchmark's preprocessing (no ``preprocess_config`` of its own)."""

    fc: nn.Linear

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map, B x C x H x W, after the final ReLU."""
        raise NotImplementedError

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (feature map, pooled penultimate features, logits) from one pass."""
        fmap = self.feature_map(x)
        feats = fmap.mean(dim=(2, 3))
        return fmap, feats, self.fc(feats)



class BasicBlock(nn.Module):
    """The two-conv residual block of He et al. (2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(OODNet):
    """CIFAR-style ResNet: 3x3 stem, then stages of BasicBlocks (first stage stride 1)."""

    def __init__(
        self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} must be non-empty, same length")
        self.widths = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.stages = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


@register_model("resnet8")
def resnet8(
    num_classes: int, in_channels: int, widths: tuple[int, ...] = (16, 32, 64)
) -> ResNet:
    """ResNet-8: stem + three stages of one BasicBlock; the CPU model."""
    return ResNet(tuple(widths), (1,) * len(widths), num_classes, in_channels)


@register_model("resnet18_32x32")
def resnet18_32x32(
    num_classes: int, in_channels: int, widths: tuple[int, ...] = (64, 128, 256, 512)
) -> ResNet:
    """The CIFAR-style ResNet-18 of OpenOOD and the paper (four stages of two blocks)."""
    return ResNet(tuple(widths), (2,) * len(widths), num_classes, in_channels)
