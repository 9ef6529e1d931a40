"""One training over two processes (DistributedDataParallel, gloo on CPU): `train --nproc 2`
writes one checkpoint from rank 0, as good as one process's with the same global batch, and the
ranks' gradients (a head term outside the forward included) are all-reduced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch.nn import functional as F

from oodbench import distributed
from oodbench.check import load_benchmark
from oodbench.checkpoint import load_checkpoint
from oodbench.cli import main
from oodbench.config import TrainSpec
from oodbench.data import Preprocess
from oodbench.errors import ConfigError
from oodbench.models import create_model
from oodbench.objectives import Objective
from oodbench.progress import console, quiet_console
from oodbench.train import InMemory, Trainer, fit, to_tensor, training_key
from oodbench.weights import read_checkpoint
from tests.conftest import pattern_images

REPO = Path(__file__).resolve().parent.parent
BGNORM = '[[benchmarks.tiny.trainings]]\nname = "bgnorm"'


def _env(home: Path) -> dict[str, str]:
    """One thread per process; no data from the user's caches; not itself under torchrun."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OODBENCH_DATA", *distributed.ENV)}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HOME": str(home),
                  "MPLCONFIGDIR": str(home / "mpl"), "PYTHONPATH": str(REPO)}


def _config(tb: SimpleNamespace) -> Path:
    """The tiny benchmark with its CE training alone, long enough for both runs to converge
    (global batch 32: 16 per rank)."""
    text = tb.config.read_text()
    text = text[:text.index(BGNORM)] + text[text.index("[[benchmarks.tiny.ood]]"):]
    path = tb.config.with_name("ddp.toml")
    path.write_text(text.replace("epochs = 8", "epochs = 20").replace("lr = 0.05", "lr = 0.1"))
    return path


def test_train_nproc_2_writes_one_checkpoint_like_one_process(
    tiny_bench: SimpleNamespace,
) -> None:
    config = _config(tiny_bench)
    runs = tiny_bench.runs / "ddp"
    command = [sys.executable, "-m", "oodbench", "train", "--nproc", "2", "--benchmark", "tiny",
               "--config", str(config), "--data-root", str(tiny_bench.root), "--runs-dir",
               str(runs), "--device", "cpu"]
    home = tiny_bench.root.parent / "home"
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(home),
                          cwd=tiny_bench.root.parent, timeout=240)
    assert proc.returncode == 0, proc.stderr
    # rank 0 alone prints: one "trained" line, each tenth of the progress logged once
    assert proc.stderr.count("trained ce s0") == 1, proc.stderr
    assert proc.stderr.count("(100%)") == 1, proc.stderr
    [path] = (runs / "tiny").glob("*.safetensors")
    model, meta = load_checkpoint(path)
    assert meta["world_size"] == 2 and meta["train"]["batch_size"] == 32
    assert model.fc.out_features == 10 and not model.training
    assert not list((runs / "tiny").glob("*.claim"))

    bench = load_benchmark("tiny", config)
    trainer = Trainer(bench, tiny_bench.runs / "one", tiny_bench.root, "cpu")
    single = trainer.ensure("ce", 0)
    one = read_checkpoint(single)[1]
    assert one["world_size"] == 1
    assert abs(meta["test_acc"] - one["test_acc"]) <= 0.01, (meta["test_acc"], one["test_acc"])
    # the key has the world size only when > 1: one process keeps its old key
    spec = bench.training("ce")
    key = training_key(bench, spec, 0, trainer.splits, None, trainer.preprocess)
    assert key == training_key(bench, spec, 0, trainer.splits, None, trainer.preprocess, 1)
    assert single.stem.endswith(key[:12]) and not path.stem.endswith(key[:12])
    assert path.stem.endswith(training_key(bench, spec, 0, trainer.splits, None,
                                           trainer.preprocess, 2)[:12])


class HeadDecay(Objective):
    """Cross-entropy plus a penalty on the head's weights, computed outside the forward."""

    name = "head-decay"

    def __call__(self, fmap, logits, labels, head, epoch):  # type: ignore[override]
        return F.cross_entropy(logits, labels) + 0.05 * head.weight.square().sum(), {}


def _rank(rank: int, store: str, out: str) -> None:
    """One rank of a two-process fit on the pattern images; saves its parameters."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        images, labels = pattern_images(128, 0)
        pre = Preprocess(28, 1, (0.2,), (0.3,))
        data = InMemory(to_tensor(pre, images[..., None]), torch.as_tensor(labels))
        torch.manual_seed(0)
        model = create_model("resnet8", 10, 1, widths=(8, 8, 16))
        fit(model, HeadDecay(), data, TrainSpec(epochs=2, batch_size=32, lr=0.05), 0,
            torch.device("cpu"))
        torch.save({k: p.detach() for k, p in model.named_parameters()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys() and "fc.weight" in a
    start = create_model("resnet8", 10, 1, widths=(8, 8, 16)).state_dict()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert not torch.equal(a["fc.weight"], start["fc.weight"])


def test_nproc_checks_the_batch_before_it_launches(
    tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda *a: launched.append(a))
    common = ["--benchmark", "tiny", "--config", str(tiny_bench.config), "--data-root",
              str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs), "--device", "cpu"]
    assert main(["train", "--nproc", "3", *common]) == 1
    assert not launched
    assert ("[benchmarks.tiny] training 'ce': train.batch_size = 32 does not split evenly over "
            "3 processes; use a train.batch_size divisible by 3 in the benchmark file, or another "
            "number of processes (--nproc)") in " ".join(capsys.readouterr().err.split())
    assert main(["train", "--nproc", "2", "--seeds", "2", "--download", *common]) == 0
    assert launched == [(2, ["train", "--benchmark", "tiny", "--runs-dir", str(tiny_bench.runs),
                             "--config", str(tiny_bench.config), "--data-root",
                             str(tiny_bench.root), "--device", "cpu", "--seeds", "2",
                             "--download"])]


def test_a_batch_that_does_not_split_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    data = InMemory(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"t: train\.batch_size = 32 does not split evenly "
                       r"over 3 processes; use a train\.batch_size divisible by 3"):
        fit(create_model("resnet8", 10, 1, widths=(8, 8, 16)), HeadDecay(), data,
            TrainSpec(batch_size=32), 0, torch.device("cpu"), desc="t")


def test_a_quiet_block_gives_the_console_back_as_it_was(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    with quiet_console():
        console.print("rank 1")
        with quiet_console(False):  # an inner block cannot turn it back on
            console.print("rank 1 again")
        assert console.quiet
    assert not console.quiet
    console.quiet = True  # a caller's own setting survives the block
    try:
        with quiet_console():
            pass
        assert console.quiet
    finally:
        console.quiet = False
    console.print("rank 0")
    assert capsys.readouterr().err == "rank 0\n"
