"""Training objectives on a model a user brings: a torchvision ResNet-18, from scratch and
fine-tuned from its own weights (safetensors) with BG-norm, end to end on CPU."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from oodbench.check import load_benchmark
from oodbench.checkpoint import load_checkpoint
from oodbench.config import ConfigError
from oodbench.matrix import run_benchmark

CONFIG = """
[benchmarks.tv]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "torchvision:resnet18"
model_weights = "resnet18.safetensors"
val_fraction = 0.2
scorers = ["msp", "energy"]
extract_batch = 64

[benchmarks.tv.train]
epochs = 1
batch_size = 64
lr = 0.01
schedule = "cosine"

[[benchmarks.tv.trainings]]
name = "ce"
objective = "ce"

[[benchmarks.tv.trainings]]
name = "bgnorm-ft"
objective = "bgnorm"
init = "model"
params = { lam = 0.5, warmup_start = 0.0, warmup_epochs = 0.0 }

[[benchmarks.tv.ood]]
name = "mnist"
group = "near"
"""


def test_a_torchvision_resnet_fine_tunes_with_bgnorm(tiny_bench: SimpleNamespace) -> None:
    torch.manual_seed(0)
    user = torchvision.models.resnet18(num_classes=10)
    save_file(user.state_dict(), tiny_bench.config.parent / "resnet18.safetensors")
    tiny_bench.config.write_text(CONFIG)
    bench = load_benchmark("tv", tiny_bench.config)
    df = run_benchmark(bench, out_dir=tiny_bench.out, data_root=tiny_bench.root,
                       runs_dir=tiny_bench.runs, quiet=True)
    assert set(df.training) == {"ce", "bgnorm-ft"} and df["value"].notna().all()
    manifest = json.loads((tiny_bench.out / "tv" / "manifest.json").read_text())
    ft = manifest["checkpoints"]["bgnorm-ft-s0"]
    assert ft["init"]["training"] == "model" and ft["diagnostics"]["bg_norm_test"] > 0
    model, meta = load_checkpoint(tiny_bench.out / "tv" / ft["path"])
    assert meta["arch"] == "torchvision:resnet18"
    assert (meta["in_channels"], meta["image_size"]) == (3, 28)  # grey copied to RGB
    assert type(model).__name__ != "ResNet" and model.fc is model.model.fc  # the adapter


def test_init_model_needs_model_weights(tiny_bench: SimpleNamespace) -> None:
    tiny_bench.config.write_text(CONFIG.replace('model_weights = "resnet18.safetensors"\n', ""))
    with pytest.raises(ConfigError, match="init = 'model' starts from the weights"):
        load_benchmark("tv", tiny_bench.config)


def test_a_bad_model_reference_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text(CONFIG.replace("torchvision:resnet18", "torchvision:res net"))
    with pytest.raises(ConfigError, match="not a model reference"):
        load_benchmark("tv", path)
