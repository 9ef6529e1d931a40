"""Training options: bfloat16 autocast on CPU, checkpoint reuse by key, logged progress."""

import dataclasses
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from oodbench.checkpoint import read_checkpoint
from oodbench.config import TrainSpec, load_benchmark
from oodbench.progress import LoggingProgress
from oodbench.train import Trainer, cpu_bf16_supported, train_fields
from tests.conftest import TINY_CONFIG

EXTRA = """
[[benchmarks.tiny.trainings]]
name = "ce-again"
objective = "ce"

[[benchmarks.tiny.trainings]]
name = "ce-bf16"
objective = "ce"
train = { epochs = 8, batch_size = 32, lr = 0.05, cpu_amp = true }
"""


@pytest.fixture
def bench(tiny_bench: SimpleNamespace) -> SimpleNamespace:
    config = Path(tiny_bench.config)
    config.write_text(TINY_CONFIG + EXTRA)
    return load_benchmark("tiny", config)


def test_cpu_amp_enters_the_key_only_when_on() -> None:
    assert "cpu_amp" not in train_fields(TrainSpec())
    assert train_fields(TrainSpec(cpu_amp=True))["cpu_amp"] is True
    assert set(train_fields(TrainSpec())) == {f.name for f in dataclasses.fields(TrainSpec)} - {
        "cpu_amp", "amp_dtype"}


@pytest.mark.kernels
def test_identical_training_under_another_name_is_reused(
    bench: SimpleNamespace, tiny_bench: SimpleNamespace
) -> None:
    trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
    first = trainer.ensure("ce", 0)
    mtime = first.stat().st_mtime_ns
    assert trainer.ensure("ce-again", 0) == first
    assert first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in first.parent.glob("*.pt")) == [first.name]


@pytest.mark.kernels
@pytest.mark.skipif(not cpu_bf16_supported(), reason="CPU without native bfloat16")
def test_cpu_amp_trains_a_different_deterministic_checkpoint(
    bench: SimpleNamespace, tiny_bench: SimpleNamespace
) -> None:
    trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
    fp32, bf16 = trainer.ensure("ce", 0), trainer.ensure("ce-bf16", 0)
    assert fp32 != bf16
    meta = read_checkpoint(bf16)[1]
    assert meta["train"]["cpu_amp"] is True and meta["test_acc"] > 0.5
    again = Trainer(bench, tiny_bench.runs / "again", tiny_bench.root, "cpu").ensure("ce-bf16", 0)
    a, b = read_checkpoint(bf16)[0], read_checkpoint(again)[0]
    assert all((a[k] == b[k]).all() for k in a)


def test_progress_logs_tenths_off_a_terminal() -> None:
    out = StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with LoggingProgress(console=console) as progress:
        task = progress.add_task("train", total=20)
        for _ in range(20):
            progress.advance(task)
    lines = [line for line in out.getvalue().splitlines() if "%)" in line]
    assert [line.split("(")[1].split(")")[0] for line in lines] == [f"{p}%" for p in
                                                                      range(10, 101, 10)]


def test_key_covers_objective_defaults(bench: SimpleNamespace, tiny_bench: SimpleNamespace,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from oodbench.objectives import BackgroundNorm
    from oodbench.train import training_key

    trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
    spec = bench.training("bgnorm")
    explicit = dataclasses.replace(spec, params={**spec.params, "q": 0.5})
    key = training_key(bench, spec, 0, trainer.splits, None)
    assert training_key(bench, explicit, 0, trainer.splits, None) == key  # q = 0.5 is default
    defaults = BackgroundNorm.__init__.__defaults__
    monkeypatch.setattr(BackgroundNorm.__init__, "__defaults__",
                        tuple(0.25 if d == 0.5 and i == 2 else d for i, d in enumerate(defaults)))
    assert BackgroundNorm().q == 0.25
    assert training_key(bench, spec, 0, trainer.splits, None) != key  # a changed default


@pytest.mark.kernels
def test_relative_data_root_finds_the_same_checkpoint(
    bench: SimpleNamespace, tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu").ensure("ce", 0)
    monkeypatch.chdir(tiny_bench.root.parent)
    relative = Trainer(bench, tiny_bench.runs, Path(tiny_bench.root.name), "cpu")
    assert relative.find("ce", 0) == path
