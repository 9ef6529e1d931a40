"""Adapters of torchvision's classification models, matched by their torchvision classes:
ResNet (and WideResNet), DenseNet, ConvNeXt, EfficientNet, MobileNetV2/V3 and
VisionTransformer. Each re-runs the model's own forward step by step, once, keeping the last
feature map; dropout is identity in eval mode, as in the model's forward. Preprocessing is
ImageNet's mean/std, 3 channels, at a ViT's ``image_size``; the convolutional models take any
size and state none (``input_size = None``: the benchmark's size, unless the caller gives
one; torchvision's ImageNet weights expect 224), unless the ``preprocess`` option gives
another :class:`~oodbench.adapters.PreprocessConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from oodbench.adapters import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    register_adapter,
    tokens_to_map,
)
from oodbench.adapters._base import WrappedAdapter


def imagenet(input_size: int | None = None) -> PreprocessConfig:
    """ImageNet's preprocessing of RGB inputs of ``input_size`` pixels (None: any size)."""
    return PreprocessConfig(input_size, 3, IMAGENET_MEAN, IMAGENET_STD)


@register_adapter("torchvision-resnet")
class ResNetAdapter(WrappedAdapter):
    """torchvision ``ResNet`` (also WideResNet, ResNeXt): fmap = ``layer4`` output,
    feats = flatten(avgpool(fmap)), head ``fc``."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "fc", preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.ResNet)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        fmap = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        feats = torch.flatten(m.avgpool(fmap), 1)
        return fmap, feats, self.fc(feats)


@register_adapter("torchvision-densenet")
class DenseNetAdapter(WrappedAdapter):
    """torchvision ``DenseNet``: fmap = relu(features(x)), feats = its global average, head
    ``classifier``."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "classifier", preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.DenseNet)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = F.relu(self.model.features(x))
        feats = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return fmap, feats, self.fc(feats)


@register_adapter("torchvision-convnet")
class PooledConvNetAdapter(WrappedAdapter):
    """torchvision ``ConvNeXt``, ``EfficientNet``, ``MobileNetV2`` and ``MobileNetV3``:
    fmap = features(x); feats = the ``classifier`` Sequential without its last Linear (the
    head) applied to the global average of fmap (flattened first, except for ConvNeXt, whose
    classifier starts with LayerNorm2d + Flatten)."""

    families = (models.ConvNeXt, models.EfficientNet, models.MobileNetV2, models.MobileNetV3)

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, f"classifier.{len(model.classifier) - 1}",
                         preprocess or imagenet())

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, cls.families)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap = self.model.features(x)
        feats = F.adaptive_avg_pool2d(fmap, 1)
        if not isinstance(self.model, models.ConvNeXt):
            feats = torch.flatten(feats, 1)
        for layer in list(self.model.classifier)[:-1]:
            feats = layer(feats)
        return fmap, feats, self.fc(feats)


@register_adapter("torchvision-vit")
class VisionTransformerAdapter(WrappedAdapter):
    """torchvision ``VisionTransformer``: feats = the class token after the encoder (and its
    final norm), through ``heads.pre_logits`` + activation where the model has them; head
    ``heads.head``; fmap = the encoded patch tokens on their grid. Input size ``image_size``."""

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__(model, "heads.head", preprocess or imagenet(model.image_size))

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, models.VisionTransformer)

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        grid = (x.shape[-2] // m.patch_size, x.shape[-1] // m.patch_size)
        tokens = m._process_input(x)
        tokens = torch.cat([m.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = m.encoder(tokens)
        feats = tokens[:, 0]
        for layer in list(m.heads)[:-1]:
            feats = layer(feats)
        return tokens_to_map(tokens[:, 1:], grid), feats, self.fc(feats)
