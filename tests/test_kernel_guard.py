"""The guard against oneDNN #6035 (README, "Failure modes"): a model with a strided 1x1
convolution of fewer than 8 input channels trains and extracts in the contiguous memory
format, every other one channels-last; the AVX2 kernels that the bug lives in are forced with
``ONEDNN_MAX_CPU_ISA=AVX2``, in subprocesses, since the bug corrupts the heap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

from oodbench.config import TrainSpec
from oodbench.layout import CHANNELS_LAST, CONTIGUOUS, model_format
from oodbench.models import create_model
from oodbench.train import training_format
from tests.conftest import FAST_CONFIG

REPO = Path(__file__).resolve().parent.parent
SHORTCUT = "Conv2d stages.1.shortcut.0: 1x1 stride 2 with 4 input channels hits oneDNN #6035"


def _env(home: Path) -> dict[str, str]:
    """oneDNN's AVX2 kernels on any x86 CPU; one thread; no data from the user's caches."""
    env = {k: v for k, v in os.environ.items() if k != "OODBENCH_DATA"}
    return env | {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1", "HOME": str(home),
                  "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO)}


def _net(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), *layers)


@pytest.mark.parametrize(("layer", "reason"), [
    (nn.Conv2d(4, 8, 1, 2), "1: 1x1 stride 2 with 4 input channels hits oneDNN #6035"),
    (nn.Conv2d(7, 7, 1, (2, 1)), "1: 1x1 stride 2x1 with 7 input channels"),
    (nn.Conv2d(16, 16, 1, 2, groups=4), "1: 1x1 stride 2 with 4 input channels per group"),
    (nn.Conv2d(1, 8, 1, 3), "1: 1x1 stride 3 with 1 input channels"),
])
def test_a_thin_strided_1x1_conv_is_refused_channels_last(layer: nn.Module, reason: str) -> None:
    layout = model_format(_net(layer))
    assert layout.format == CONTIGUOUS and f"Conv2d {reason}" in layout.reason
    assert layout.to_dict() == {"format": CONTIGUOUS, "reason": layout.reason}


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 8, 1, 1), nn.Conv2d(4, 8, 3, 2, 1),
                                   nn.Conv2d(8, 16, 1, 2), nn.Conv2d(12, 12, 1, 2),
                                   nn.Conv2d(16, 16, 1, 2, groups=2)])
def test_other_convs_keep_channels_last(layer: nn.Module) -> None:
    assert model_format(_net(layer)).format == CHANNELS_LAST


def test_the_benchmark_nets_keep_channels_last_and_the_tiny_one_does_not() -> None:
    for widths, channels in (((16, 32, 64), 1), ((32, 64, 128), 3), ((8, 16, 32), 1)):
        assert model_format(create_model("resnet8", 10, channels, widths=widths)).format \
            == CHANNELS_LAST
    tiny = create_model("resnet8", 10, 1, widths=(4, 4, 8))
    assert model_format(tiny).reason == SHORTCUT
    assert training_format(tiny, TrainSpec()).reason == SHORTCUT
    off = training_format(create_model("resnet8", 10, 1), TrainSpec(channels_last=False))
    assert off.format == CONTIGUOUS and off.reason == "train.channels_last = false"


# one SGD step of the library's training path on the 4-channel net under AVX2: asked for
# channels-last (the guard's choice) and asked for contiguous; prints whether they are equal
ONE_STEP = """
import torch
from oodbench.models import create_model
from oodbench.objectives import create_objective
from oodbench.progress import make_progress
from oodbench.train import InMemory, fit
from oodbench.config import TrainSpec

x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
x = x.contiguous(memory_format=torch.channels_last)  # as the preprocessing gives it
y = torch.arange(64) % 10
states = []
for channels_last in (True, False):
    torch.manual_seed(0)
    net = create_model("resnet8", 10, 1, widths=(4, 4, 8))
    spec = TrainSpec(epochs=1, batch_size=64, lr=0.1, channels_last=channels_last)
    with make_progress(transient=True) as progress:
        fit(net, create_objective("ce"), InMemory(x, y), spec, 0, torch.device("cpu"),
            progress=progress, desc="one step")
    states.append(net.state_dict())
torch.manual_seed(0)
init = create_model("resnet8", 10, 1, widths=(4, 4, 8)).state_dict()
print(all(torch.equal(states[0][k], v) for k, v in states[1].items()),
      not torch.equal(states[0]["stages.1.shortcut.0.weight"], init["stages.1.shortcut.0.weight"]))
"""


@pytest.mark.kernels
def test_one_training_step_equals_the_contiguous_one_under_avx2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", ONE_STEP], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"], done.stdout


@pytest.mark.kernels
def test_the_4_channel_net_runs_under_avx2_three_times_alike(tiny_bench: SimpleNamespace
                                                             ) -> None:
    tiny_bench.config.write_text(FAST_CONFIG)
    metrics = []
    for i in range(3):  # heap corruption shows by chance: three fresh runs, each training
        base = tiny_bench.root.parent / f"run{i}"
        done = subprocess.run(
            [sys.executable, "-m", "oodbench.cli", "run", "--benchmark", "tiny", "--config",
             str(tiny_bench.config), "--data-root", str(tiny_bench.root), "--runs-dir",
             str(base / "runs"), "--out", str(base / "results"), "--device", "cpu",
             "--scorers", "msp,odin"],  # odin: passes with gradients
            capture_output=True, text=True, env=_env(tiny_bench.root.parent), timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"contiguous memory format, not channels-last: {SHORTCUT}" in done.stderr
        result = base / "results" / "tiny"
        manifest = json.loads((result / "manifest.json").read_text())
        formats = [c["memory_format"] for c in manifest["checkpoints"].values()]
        formats.append(manifest["extraction"]["cpu"]["memory_format"])
        assert formats == [{"format": CONTIGUOUS, "reason": SHORTCUT}] * 3
        metrics.append((result / "metrics.csv").read_bytes())
    assert metrics[0] == metrics[1] == metrics[2]
