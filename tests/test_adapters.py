"""The built-in model adapters: each picks its models, and its forward_all equals a forward
pass written out by hand, without touching the user's model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.convnext import CNBlockConfig

from oodbench.adapters import (
    ADAPTERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelAdapter,
    PreprocessConfig,
    adapt,
    input_preprocess,
)
from oodbench.adapters.timm import timm_data_config
from oodbench.data import Preprocess
from oodbench.errors import ConfigError

timm = pytest.importorskip("timm")

Out = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
PRE = Preprocess(28, 1, (0.3,), (0.3,))  # a benchmark's own (a net without its own gets it)


def timm_resnet() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = timm.create_model("resnet18", pretrained=False, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        x = m.maxpool(m.act1(m.bn1(m.conv1(x))))
        fmap = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        feats = fmap.mean(dim=(2, 3))
        return fmap, feats, m.fc(feats)

    return m, hand


def timm_vit() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2,
                          num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        patches = m.patch_embed(x)
        tokens = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        tokens = m.norm(m.blocks(m.norm_pre(m.pos_drop(tokens + m.pos_embed))))
        fmap = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, 2, 2)
        feats = m.fc_norm(tokens[:, 0])
        return fmap, feats, m.head(feats)

    return m, hand


def tv_resnet() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.resnet18(weights=None, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        fmap = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        feats = torch.flatten(m.avgpool(fmap), 1)
        return fmap, feats, m.fc(feats)

    return m, hand


def tv_densenet() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        fmap = F.relu(m.features(x))
        feats = fmap.mean(dim=(2, 3))
        return fmap, feats, m.classifier(feats)

    return m, hand


def tv_convnext() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        fmap = m.features(x)
        feats = torch.flatten(m.classifier[0](m.avgpool(fmap)), 1)
        return fmap, feats, m.classifier[2](feats)

    return m, hand


def tv_efficientnet() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.efficientnet_b0(weights=None, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        fmap = m.features(x)
        feats = torch.flatten(m.avgpool(fmap), 1)  # classifier[0] is dropout
        return fmap, feats, m.classifier[1](feats)

    return m, hand


def tv_mobilenet_v2() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.mobilenet_v2(weights=None, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        fmap = m.features(x)
        feats = fmap.mean(dim=(2, 3))
        return fmap, feats, m.classifier[1](feats)

    return m, hand


def tv_mobilenet_v3() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.mobilenet_v3_small(weights=None, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        fmap = m.features(x)
        feats = F.hardswish(m.classifier[0](torch.flatten(m.avgpool(fmap), 1)))
        return fmap, feats, m.classifier[3](feats)

    return m, hand


def tv_vit() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = tvm.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                              hidden_dim=16, mlp_dim=32, num_classes=10)

    def hand(x: torch.Tensor) -> Out:
        patches = m.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([m.class_token.expand(x.shape[0], -1, -1), patches], dim=1)
        tokens = m.encoder.ln(m.encoder.layers(tokens + m.encoder.pos_embedding))
        fmap = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], 16, 2, 2)
        return fmap, tokens[:, 0], m.heads.head(tokens[:, 0])

    return m, hand


class SmallNet(nn.Module):
    """A user's own network: conv body, pooling, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.body(x)), 1))


def small_net() -> tuple[nn.Module, Callable[[torch.Tensor], Out]]:
    m = SmallNet()

    def hand(x: torch.Tensor) -> Out:
        fmap = m.body(x)
        feats = fmap.mean(dim=(2, 3))
        return fmap, feats, m.classifier(feats)

    return m, hand


IMAGENET_ANY = PreprocessConfig(None, 3, IMAGENET_MEAN, IMAGENET_STD)  # convnets: any size
# builder, input side, adapter, fmap channels, adapt() options, preprocess_config
CASES = {
    "timm-resnet18": (timm_resnet, 64, "timm", 512, {},
                      PreprocessConfig(224, 3, IMAGENET_MEAN, IMAGENET_STD, 0.95, "bicubic")),
    "timm-vit": (timm_vit, 32, "timm", 192, {},
                 PreprocessConfig(32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.9, "bicubic")),
    "tv-resnet18": (tv_resnet, 64, "torchvision-resnet", 512, {}, IMAGENET_ANY),
    "tv-densenet": (tv_densenet, 32, "torchvision-densenet", 32, {}, IMAGENET_ANY),
    "tv-convnext": (tv_convnext, 32, "torchvision-convnet", 32, {}, IMAGENET_ANY),
    "tv-efficientnet_b0": (tv_efficientnet, 64, "torchvision-convnet", 1280, {}, IMAGENET_ANY),
    "tv-mobilenet_v2": (tv_mobilenet_v2, 64, "torchvision-convnet", 1280, {}, IMAGENET_ANY),
    "tv-mobilenet_v3_small": (tv_mobilenet_v3, 64, "torchvision-convnet", 576, {},
                              IMAGENET_ANY),
    "tv-vit": (tv_vit, 32, "torchvision-vit", 16, {},
               PreprocessConfig(32, 3, IMAGENET_MEAN, IMAGENET_STD)),
    "hooks": (small_net, 32, "hooks", 12,
              {"feature_layer": "body", "head_layer": "classifier"}, None),
}


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("case", list(CASES))
def test_adapter_matches_hand_written_forward(case: str) -> None:
    build, side, name, channels, options, preprocess = CASES[case]
    torch.manual_seed(0)
    model, hand = build()
    model.eval()
    x = torch.randn(2, 3, side, side)
    before = flags(model)

    adapter = adapt(model, **options)
    assert isinstance(adapter, ModelAdapter) and adapter.name == name
    assert adapter.model is model
    # the head is registered once, as part of the model
    assert len(list(adapter.parameters())) == len(list(model.parameters()))
    with torch.no_grad():
        fmap, feats, logits = adapter.forward_all(x)
        want_fmap, want_feats, want_logits = hand(x)
        direct = model(x)
        via_fc = adapter.fc(feats)
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, channels)
    torch.testing.assert_close(fmap, want_fmap, rtol=0, atol=1e-5)
    torch.testing.assert_close(feats, want_feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-5)
    # the model's own forward, to the bit: its logits, and its head applied to the features
    assert torch.equal(logits, direct) and torch.equal(via_fc, logits)
    assert isinstance(adapter.fc, nn.Linear)
    assert adapter.preprocess_config == preprocess
    assert flags(model) == before and no_hooks(model)
    assert all(p.device.type == "cpu" for p in model.parameters())

    clone = copy.deepcopy(adapter)
    assert clone.model is not model and clone.fc is not adapter.fc
    with torch.no_grad():
        torch.testing.assert_close(clone.forward_all(x)[2], logits, rtol=0, atol=1e-6)


def test_adapt_leaves_training_mode_alone() -> None:
    model = tvm.resnet18(weights=None, num_classes=3).train()
    adapter = adapt(model)
    assert model.training and all(flags(model))
    adapter.forward_all(torch.randn(2, 3, 32, 32))
    assert model.training and all(flags(model))


def test_preprocess_option_overrides() -> None:
    own = PreprocessConfig(64, 1, (0.5,), (0.25,))
    assert adapt(tvm.resnet18(weights=None), preprocess=own).preprocess_config == own
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    assert adapt(vit, preprocess=own).preprocess_config == own


@pytest.mark.parametrize(("name", "kwargs", "side"), [
    ("resnet18", {}, 224),  # bicubic, crop_pct 0.95
    ("convnext_atto", {}, 224),  # crop_pct 0.875
    ("vit_tiny_patch16_224", {"depth": 1}, 224),  # mean and std 0.5, crop_pct 0.9
    ("vit_tiny_patch16_224", {"depth": 1, "img_size": 32}, 32),  # its patch grid's size
])
def test_timm_preprocessing_is_timms_own(name: str, kwargs: dict[str, Any], side: int) -> None:
    from timm.data import resolve_model_data_config

    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    config = timm_data_config(model)
    assert config == resolve_model_data_config(model) | {"input_size": (3, side, side)}
    own = adapt(model).preprocess_config
    assert own == PreprocessConfig(side, 3, tuple(config["mean"]), tuple(config["std"]),
                                   config["crop_pct"], config["interpolation"])
    assert own.crop_pct != 1.0  # each model here states its own
    # the model's crop_pct where the caller gives none, the caller's where it does (a
    # benchmark's protocol); the interpolation the model was trained with either way
    for given, crop_pct in ((None, config["crop_pct"]), (1.0, 1.0), (0.875, 0.875)):
        pre = own.preprocess(crop_pct=given)
        assert (pre.size, pre.crop_pct, pre.interpolation) == (
            side, crop_pct, config["interpolation"])
    net = adapt(model)
    assert input_preprocess(net, lambda: PRE, 64).crop_pct == config["crop_pct"]
    assert input_preprocess(net, lambda: PRE, 64, crop_pct=1.0).crop_pct == 1.0


def test_a_preprocess_config_without_a_crop_pct_crops_the_callers_or_none() -> None:
    bare = PreprocessConfig(32, 3, IMAGENET_MEAN, IMAGENET_STD)
    assert (bare.crop_pct, bare.interpolation) == (None, "bilinear")
    assert bare.preprocess() == Preprocess(32, 3, IMAGENET_MEAN, IMAGENET_STD)
    assert bare.preprocess(crop_pct=0.875).crop_pct == 0.875
    # a net with no preprocessing of its own gets the fallback (the benchmark's) as it is
    hooked = adapt(small_net()[0], "body", "classifier")
    assert input_preprocess(hooked, lambda: PRE, 64, crop_pct=0.5) is PRE


def test_builtin_adapters_keep_the_contract() -> None:
    # the torchvision adapters are hook adapters, so the generic one registers first; it
    # matches no model by itself (adapt() takes it only for named layers)
    assert ADAPTERS.ordered()[:6] == [
        "hooks", "torchvision-resnet", "torchvision-densenet", "torchvision-convnet",
        "torchvision-vit", "timm"]
    for name in ("torchvision-resnet", "torchvision-convnet", "timm", "hooks"):
        ADAPTERS.check(name, ADAPTERS.get(name), ModelAdapter)


def test_unmatched_model_needs_layer_names() -> None:
    with pytest.raises(ConfigError, match="feature_layer"):
        adapt(SmallNet())
    with pytest.raises(ConfigError, match="head_layer"):
        adapt(SmallNet(), feature_layer="body")


def test_unknown_layer_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'classifier'") as err:
        adapt(SmallNet(), feature_layer="body", head_layer="clasifier")
    assert "body.0" in str(err.value)
    with pytest.raises(ConfigError, match=r"nn\.Linear"):
        adapt(SmallNet(), feature_layer="body", head_layer="pool")


def test_head_must_be_linear() -> None:
    model = tvm.resnet18(weights=None)
    model.fc = nn.Identity()
    with pytest.raises(ConfigError, match=r"nn\.Linear"):
        adapt(model)
    with pytest.raises(ConfigError, match="generic adapter"):
        adapt(timm.create_model("resnet18", pretrained=False, num_classes=0))


def test_hooks_tokens_need_a_grid() -> None:
    torch.manual_seed(0)
    vit = tvm.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                hidden_dim=16, mlp_dim=32, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    tokenwise = adapt(vit, feature_layer="encoder", head_layer="heads.head")
    with pytest.raises(ConfigError, match="grid"):
        tokenwise.forward_all(x)
    assert no_hooks(vit)
    gridded = adapt(vit, feature_layer="encoder", head_layer="heads.head", grid=(2, 2))
    with torch.no_grad():
        got = gridded.forward_all(x)
        want = adapt(vit).forward_all(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    copy.deepcopy(gridded)


def test_hooks_reject_a_model_whose_output_is_not_the_head() -> None:
    class Scaled(SmallNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = Scaled().eval()
    adapter = adapt(model, feature_layer="body", head_layer="classifier")
    with pytest.raises(ConfigError, match="head"):
        adapter.forward_all(torch.randn(2, 3, 16, 16))
    assert no_hooks(model)


def nchw(out: torch.Tensor) -> torch.Tensor:
    return out


def nhwc(out: torch.Tensor) -> torch.Tensor:
    return out.permute(0, 3, 1, 2)


def tokens_3x4(out: torch.Tensor) -> torch.Tensor:
    return out[:, 3:].transpose(1, 2).reshape(2, 192, 3, 4)  # 1 class + 2 register tokens


@pytest.mark.parametrize(("name", "kwargs", "size", "to_map", "shape", "input_size"), [
    ("convnext_atto", {}, (32, 32), nchw, (2, 320, 1, 1), 224),  # NormMlp head
    ("swin_tiny_patch4_window7_224",
     {"img_size": 64, "window_size": 2, "depths": (1, 1, 1, 1), "embed_dim": 16,
      "num_heads": (1, 1, 1, 1)}, (64, 64), nhwc, (2, 128, 2, 2), 64),
    ("vit_tiny_patch16_224",  # dynamic grid of a 48 x 64 input
     {"img_size": 32, "depth": 1, "dynamic_img_size": True, "reg_tokens": 2}, (48, 64),
     tokens_3x4, (2, 192, 3, 4), 224),
])
def test_timm_feature_layouts(
    name: str, kwargs: dict[str, Any], size: tuple[int, int],
    to_map: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...], input_size: int,
) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, *size)
    adapter = adapt(model)
    with torch.no_grad():
        fmap, feats, logits = adapter.forward_all(x)
        out = model.forward_features(x)
        want_feats = model.forward_head(out, pre_logits=True)
        direct = model(x)
    assert fmap.shape == shape
    torch.testing.assert_close(fmap, to_map(out), rtol=0, atol=1e-6)
    torch.testing.assert_close(feats, want_feats, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, direct, rtol=0, atol=1e-5)
    assert adapter.preprocess_config.input_size == input_size
