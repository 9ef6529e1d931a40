"""The training set held on the device (``data_on_device``): the same batches, crops and weights
as the in-memory path, chosen only where it applies; ``amp_dtype`` keeps the old keys."""

from __future__ import annotations

import dataclasses
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from oodbench.check import load_benchmark, load_config
from oodbench.config import TrainSpec
from oodbench.data import ImageArray, Preprocess
from oodbench.errors import ConfigError
from oodbench.models import create_model
from oodbench.objectives import create_objective
from oodbench.train import (
    InMemory,
    OnDevice,
    Trainer,
    autocast_context,
    crop_flip,
    fit,
    train_fields,
    training_key,
)
from tests.conftest import random_images

CPU = torch.device("cpu")
PRE = Preprocess(32, 3, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def _rgb(n: int = 48) -> ImageArray:
    return ImageArray(random_images(n, 32, 32, 3, seed=5), np.arange(n, dtype=np.int64) % 10,
                      "rgb", "train", "test")


def test_on_device_batches_and_crops_equal_in_memory() -> None:
    arr = _rgb()
    memory, device = InMemory.of(PRE, arr), OnDevice(PRE, arr, CPU)
    order = torch.randperm(len(arr), generator=torch.Generator().manual_seed(1))
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pairs = list(zip(memory.epoch(order, 16, 3), device.epoch(order, 16, 3), strict=True))
    assert len(pairs) == 3
    for (xa, ya), (xb, yb) in pairs:
        torch.testing.assert_close(xb, xa, rtol=0, atol=1e-6)
        torch.testing.assert_close(crop_flip(xb, gen_b), crop_flip(xa, gen_a), rtol=0,
                                   atol=1e-6)
        assert torch.equal(ya, yb)
    for (xa, _), (xb, _) in zip(memory.batches(20), device.batches(20), strict=True):
        torch.testing.assert_close(xb, xa, rtol=0, atol=1e-6)


@pytest.mark.kernels
def test_a_short_fit_gives_the_same_weights_on_both_paths() -> None:
    arr = _rgb()
    spec = TrainSpec(epochs=2, batch_size=16, lr=0.05, augment="crop-flip")
    states = []
    for data in (InMemory.of(PRE, arr), OnDevice(PRE, arr, CPU)):
        torch.manual_seed(0)
        model = create_model("resnet8", 10, 3, widths=(8, 8, 16))
        fit(model, create_objective("ce"), data, spec, 0, CPU)
        states.append(model.state_dict())
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-5, atol=1e-5, msg=key)


def _bench(tb: SimpleNamespace, setting: str, size: int = 28):
    text = tb.config.read_text().replace("image_size = 28", f"image_size = {size}")
    text = text.replace('extract_batch = 128', f'extract_batch = 128\ndata_on_device = {setting}')
    path = tb.config.with_name(f"on-device-{setting.strip(chr(34))}-{size}.toml")
    path.write_text(text)
    return load_benchmark("tiny", path)


def test_the_setting_picks_the_path_and_changes_no_key(tiny_bench: SimpleNamespace) -> None:
    benches = {s: _bench(tiny_bench, s) for s in ('"auto"', "true", "false")}
    kinds, keys = {}, set()
    for setting, bench in benches.items():
        trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
        kinds[setting] = type(trainer.data("train"))
        assert isinstance(trainer.data("test"), InMemory)
        keys.add(training_key(bench, bench.trainings[0], 0, trainer.splits, None,
                              trainer.preprocess))
    assert kinds == {'"auto"': InMemory, "true": OnDevice, "false": InMemory}  # auto: not CUDA
    assert len(keys) == 1
    assert len({b.config_hash() for b in benches.values()}) == 1
    plain = load_benchmark("tiny", tiny_bench.config)
    assert benches['"auto"'].config_hash() == plain.config_hash()


def test_required_on_an_ineligible_set_is_a_clear_error(tiny_bench: SimpleNamespace) -> None:
    trainer = Trainer(_bench(tiny_bench, "true", size=32), tiny_bench.runs, tiny_bench.root, "cpu")
    with pytest.raises(ConfigError, match=r"\[benchmarks\.tiny\] data_on_device = true, but "
                       r"fashion-mnist/train holds 28x28x1 images and the model takes 32x32x1"):
        trainer.data("train")
    with pytest.raises(ConfigError, match=r"data_on_device = 'yes' is not accepted"):
        _bench(tiny_bench, '"yes"')


def test_amp_dtype_keeps_old_keys_and_the_gpu_preset_uses_bfloat16() -> None:
    assert "amp_dtype" not in train_fields(TrainSpec())
    assert train_fields(TrainSpec(amp_dtype="bfloat16"))["amp_dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="amp_dtype = 'half' is not accepted"):
        dataclasses.replace(TrainSpec(), amp_dtype="half")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CUDA here: autocast says it is disabled
        ctx = autocast_context(TrainSpec(amp_dtype="bfloat16"), torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    gpu = load_config()["cifar10-gpu"]
    assert {t.train.amp_dtype for t in (*gpu.trainings, *gpu.ablate)} == {"bfloat16"}
    assert gpu.data_on_device == "auto"
    assert {t.train.amp_dtype for t in load_config()["cifar10"].trainings} == {"float16"}


def test_on_device_holds_the_uint8_images() -> None:
    arr = _rgb(8)
    data = OnDevice(PRE, arr, CPU)
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (8, 32, 32, 3)
    assert len(data) == 8
