"""The generic adapter: any ``nn.Module`` whose last feature map and linear head are named."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from oodbench.adapters._base import (
    PreprocessConfig,
    WrappedAdapter,
    model_name,
    register_adapter,
    tokens_to_map,
)
from oodbench.errors import ConfigError
from oodbench.registry import did_you_mean


def submodule(model: nn.Module, option: str, name: str | None) -> nn.Module:
    """The module ``name`` of ``model`` (as in ``named_modules()``), given as ``option``."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[-8:]) + (", ..." if len(names) > 8 else "")
        raise ConfigError(
            f"<{option}={name}> is not a module of {model_name(model)};"
            f"{did_you_mean(name, names)} its last modules: {shown or 'none'}",
            "name a module as in model.named_modules()")
    return modules[name]


@register_adapter("hooks")
class HookAdapter(WrappedAdapter):
    """Any ``nn.Module``: forward hooks, registered only during :meth:`forward_all`, capture
    the output of ``feature_layer`` (fmap: a B x C x H x W map, or B x N x C tokens laid out
    on ``grid=(H, W)``, any leading prefix tokens dropped) and the input of ``head_layer``
    (feats; an ``nn.Linear``); logits = the model's output, which must be the head's output.
    ``preprocess``: the model's own preprocessing, or ``None`` for the benchmark's."""

    def __init__(
        self,
        model: nn.Module,
        feature_layer: str | None = None,
        head_layer: str | None = None,
        grid: tuple[int, int] | None = None,
        preprocess: PreprocessConfig | None = None,
    ) -> None:
        submodule(model, "feature_layer", feature_layer)
        submodule(model, "head_layer", head_layer)
        super().__init__(model, str(head_layer), preprocess)
        self.feature_layer = str(feature_layer)
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))

    def feature_map(self, out: Any) -> torch.Tensor:
        """The feature layer's output ``out`` as B x C x H x W."""
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            return out
        if isinstance(out, torch.Tensor) and out.dim() == 3:
            if self.grid is None:
                raise ConfigError(
                    f"<feature_layer={self.feature_layer}> returns B x N x C tokens",
                    "give their patch grid with <grid=(H, W)>")
            h, w = self.grid
            return tokens_to_map(out[:, out.shape[1] - h * w:], self.grid)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"<feature_layer={self.feature_layer}> returns {shape}, not a B x C x H x W map "
            "or B x N x C tokens", "name the module whose output is the last feature map")

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seen: dict[str, Any] = {}

        def keep_fmap(module: nn.Module, args: Any, out: Any) -> None:
            seen["fmap"] = out

        def keep_head(module: nn.Module, args: Any, out: Any) -> None:
            seen["feats"], seen["logits"] = args[0], out

        handles = [self.model.get_submodule(self.feature_layer).register_forward_hook(keep_fmap),
                   self.fc.register_forward_hook(keep_head)]
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        for key, option, name in (("fmap", "feature_layer", self.feature_layer),
                                  ("feats", "head_layer", self.head_name)):
            if key not in seen:
                raise ConfigError(
                    f"<{option}={name}> did not run in the forward pass of "
                    f"{model_name(self.model)}", "name a module the model's forward uses")
        if logits is not seen["logits"] and not (
            isinstance(logits, torch.Tensor) and logits.shape == seen["logits"].shape
            and torch.equal(logits, seen["logits"])
        ):
            raise ConfigError(
                f"the output of {model_name(self.model)} is not its head's "
                f"<head_layer={self.head_name}> output",
                "name the nn.Linear that computes the logits last")
        return self.feature_map(seen["fmap"]), seen["feats"], logits
