"""Adapters of torchvision's classification models, matched by their torchvision classes:
ResNet (and WideResNet), DenseNet, ConvNeXt, EfficientNet, MobileNetV2/V3 and
VisionTransformer. Each is the generic hook adapter (:class:`~oodbench.adapters.hooks.
HookAdapter`) with its family's layer names: the model's own forward runs once, and forward
hooks keep the last feature map and the input of the linear head, so features and logits are
exactly the model's. Preprocessing is ImageNet's mean/std, 3 channels, at a ViT's
``image_size``; the convolutional models take any size and state none (``input_size = None``:
the benchmark's size, unless the caller gives one; torchvision's ImageNet weights expect 224),
unless the ``preprocess`` option gives another :class:`~oodbench.adapters.PreprocessConfig`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from oodbench.adapters._base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    register_adapter,
)
from oodbench.adapters.hooks import HookAdapter


def imagenet(input_size: int | None = None) -> PreprocessConfig:
    """ImageNet's preprocessing of RGB inputs of ``input_size`` pixels (None: any size)."""
    return PreprocessConfig(input_size, 3, IMAGENET_MEAN, IMAGENET_STD)


@register_adapter("torchvision-resnet")
class ResNetAdapter(HookAdapter):
    """torchvision ``ResNet`` (also WideResNet, ResNeXt): fmap = ``layer4`` output,
    feats = the input of the head ``fc`` (flatten(avgpool(fmap)))."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "layer4", "fc", preprocess=preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.ResNet)


@register_adapter("torchvision-densenet")
class DenseNetAdapter(HookAdapter):
    """torchvision ``DenseNet``: fmap = relu(``features`` output), feats = the input of the
    head ``classifier`` (its global average)."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "features", "classifier", preprocess=preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.DenseNet)

    def feature_map(self, out: Any) -> torch.Tensor:
        """The ``features`` output after the ReLU that the model's forward applies to it."""
        return F.relu(super().feature_map(out))


@register_adapter("torchvision-convnet")
class PooledConvNetAdapter(HookAdapter):
    """torchvision ``ConvNeXt``, ``EfficientNet``, ``MobileNetV2`` and ``MobileNetV3``:
    fmap = ``features`` output; feats = the input of the ``classifier`` Sequential's last
    Linear (the head): the global average of fmap through the classifier's other layers."""

    families = (models.ConvNeXt, models.EfficientNet, models.MobileNetV2, models.MobileNetV3)

    def __init__(self, model: models.ConvNeXt | models.EfficientNet | models.MobileNetV2
                 | models.MobileNetV3, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "features", f"classifier.{len(model.classifier) - 1}",
                         preprocess=preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, cls.families)


@register_adapter("torchvision-vit")
class VisionTransformerAdapter(HookAdapter):
    """torchvision ``VisionTransformer``: fmap = the ``encoder``'s patch tokens on their grid
    (``image_size / patch_size`` a side), feats = the input of the head ``heads.head`` (the
    class token after the encoder, through ``heads.pre_logits`` + activation where the model
    has them). Input size ``image_size``."""

    def __init__(self, model: models.VisionTransformer,
                 preprocess: PreprocessConfig | None = None) -> None:
        side = model.image_size // model.patch_size
        super().__init__(model, "encoder", "heads.head", grid=(side, side),
                         preprocess=preprocess or imagenet(model.image_size))

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.VisionTransformer)
