"""The adapter of timm models, matched by timm's model interface (``forward_features``,
``forward_head``, ``get_classifier`` and a ``pretrained_cfg`` dict), so this module loads
without timm; timm itself is imported only to resolve a timm model's preprocessing."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oodbench.adapters._base import (
    ModelAdapter,
    PreprocessConfig,
    model_name,
    register_adapter,
    tokens_to_map,
)
from oodbench.errors import ConfigError


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """timm's own evaluation preprocessing of ``model``, as
    ``timm.data.resolve_model_data_config`` resolves it (``input_size`` (C, H, W),
    ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``), except that a model
    whose patch embedding only takes one image size (a ViT built with another ``img_size``
    than its config's) gets that size."""
    from timm.data import resolve_model_data_config  # installed: the model is timm's

    config = resolve_model_data_config(model)
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if getattr(embed, "strict_img_size", False) and size:
        config["input_size"] = (config["input_size"][0], *size)
    return config


def timm_preprocess(model: nn.Module) -> PreprocessConfig:
    """The input size, channels, ``mean``, ``std``, ``crop_pct`` and ``interpolation`` of
    :func:`timm_data_config` (its ``crop_mode`` taken as "center", the one crop oodbench
    does; a benchmark's own ``crop_pct`` wins over the model's)."""
    config = timm_data_config(model)
    channels, height, width = config["input_size"]
    if height != width:
        raise ConfigError(
            f"{model_name(model)} takes {height} x {width} inputs; oodbench's preprocessing "
            "is square", "give a square one with <preprocess=PreprocessConfig(...)>")
    return PreprocessConfig(int(height), int(channels), tuple(config["mean"]),
                            tuple(config["std"]), float(config["crop_pct"]),
                            config["interpolation"])


@register_adapter("timm")
class TimmAdapter(ModelAdapter):
    """Any timm model: fmap = ``forward_features(x)`` (B x C x H x W maps as they are, NHWC
    maps permuted; B x N x C tokens without the ``num_prefix_tokens`` on the patch grid of
    ``patch_embed``), feats = ``forward_head(..., pre_logits=True)`` of that same output, head
    = ``get_classifier()`` (an ``nn.Linear``). Preprocessing: :func:`timm_preprocess`, or the
    ``preprocess`` option."""

    model: Any  # an nn.Module with timm's model interface (:meth:`matches`), duck-typed

    def __init__(self, model: Any, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        self.model = model
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ConfigError(
                f"the classifier of {model_name(model)} is a {type(head).__name__}, not an "
                "nn.Linear",
                "create it with num_classes > 0 and a single linear head, or use the generic "
                "adapter: <feature_layer=NAME> and <head_layer=NAME>")
        self._preprocess = preprocess or timm_preprocess(model)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (isinstance(model, nn.Module)
                and all(callable(getattr(model, a, None))
                        for a in ("forward_features", "forward_head", "get_classifier"))
                and isinstance(getattr(model, "pretrained_cfg", None), dict))

    @property  # where the contract declares an attribute (mypy's override)
    def fc(self) -> nn.Linear:  # type: ignore[override]
        """The model's ``get_classifier()``."""
        return self.model.get_classifier()

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The model's own preprocessing."""
        return self._preprocess

    def feature_map(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``forward_features``' output ``out`` (of input ``x``) as B x C x H x W."""
        if out.dim() == 4:
            nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"  # e.g. timm's Swin
            return out.permute(0, 3, 1, 2) if nhwc else out
        if out.dim() == 3:
            embed = getattr(self.model, "patch_embed", None)
            if embed is None:
                raise ConfigError(
                    f"{model_name(self.model)} returns tokens but has no patch_embed grid",
                    "use the generic adapter with <grid=(H, W)>")
            grid = (embed.dynamic_feat_size(tuple(x.shape[-2:]))
                    if getattr(self.model, "dynamic_img_size", False) else embed.grid_size)
            return tokens_to_map(out[:, getattr(self.model, "num_prefix_tokens", 0):],
                                 tuple(grid))
        raise ConfigError(
            f"forward_features of {model_name(self.model)} returns a {out.dim()}-D tensor",
            "use the generic adapter: <feature_layer=NAME> and <head_layer=NAME>")

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.forward_features(x)
        feats = self.model.forward_head(out, pre_logits=True)
        return self.feature_map(out, x), feats, self.fc(feats)
