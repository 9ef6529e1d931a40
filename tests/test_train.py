"""Training options: bfloat16 autocast on CPU, checkpoint reuse by key, logged progress, the
loop's device reads (every ``READ_EVERY`` steps) and its refusal of a non-finite loss."""

import dataclasses
import math
from collections import Counter
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from rich.console import Console

from oodbench.check import load_benchmark
from oodbench.config import TrainSpec
from oodbench.errors import TrainingError
from oodbench.models import create_model
from oodbench.objectives import (
    BackgroundNorm,
    CrossEntropy,
    LogitNorm,
    Objective,
    SelfSupervisedSampling,
    T2FNorm,
    create_objective,
)
from oodbench.progress import LoggingProgress
from oodbench.train import (
    READ_EVERY,
    InMemory,
    Trainer,
    cpu_bf16_supported,
    fit,
    train_fields,
)
from oodbench.weights import read_checkpoint
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
    assert sorted(p.name for p in first.parent.glob("*.safetensors")) == [first.name]


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


def test_progress_called_shows_one_bar_per_task() -> None:
    with LoggingProgress(console=Console(file=StringIO())) as progress:
        progress("train", 0, 20)
        progress("train", 10, 20, "loss 1.0")
        progress("extract", 5, 5)
        progress("train", 20, 20, "loss 0.5")
        progress("extract", 0, 5)  # the same name again: a new pass
        tasks = [(t.description, t.completed, t.total, t.fields["stats"]) for t in progress.tasks]
    assert tasks == [("train", 20, 20, "loss 0.5"), ("extract", 5, 5, ""), ("extract", 0, 5, "")]


# what takes a tensor's value to the host (and on CUDA waits for the device)
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__",
         "__format__")


class _Counted(Objective):
    """An objective that counts its steps and optionally makes the loss of one step NaN."""

    def __init__(self, objective: Objective, nan_at: int | None = None) -> None:
        self.objective, self.nan_at, self.calls = objective, nan_at, 0

    def step(self, *args: Any) -> tuple[torch.Tensor, dict[str, Any], torch.Tensor]:
        self.calls += 1
        loss, parts, logits = self.objective.step(*args)
        return (loss * math.nan if self.calls == self.nan_at else loss), parts, logits

    def extra_modules(self, head: torch.nn.Linear) -> list[torch.nn.Module]:
        return self.objective.extra_modules(head)


def _data(n: int) -> InMemory:
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return InMemory(x, torch.arange(n) % 10)


# RegMixup draws its mixing from the training's CPU generator each step (host reads that are
# no device sync); every other built-in objective leaves the device alone between reads
@pytest.mark.parametrize("objective", [
    CrossEntropy(), BackgroundNorm(warmup_start=0.0), LogitNorm(), SelfSupervisedSampling(),
    T2FNorm()], ids=lambda o: o.name)
def test_fit_reads_the_device_every_read_every_steps_and_at_epoch_ends(
    objective: Objective, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = _Counted(objective)
    reads: Counter[int] = Counter()  # reads by the number of steps taken before them
    for name in READS:
        def read(self: torch.Tensor, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            reads[counted.calls] += 1
            return getattr(torch._C.TensorBase, _name)(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, read)
    steps, epochs = 2 * READ_EVERY + 5, 2
    spec = TrainSpec(epochs=epochs, batch_size=8, lr=0.05, augment="crop-flip")
    stats = fit(create_model("resnet8", 10, 1, widths=(4, 4, 8)), counted, _data(8 * steps),
                spec, 0, torch.device("cpu"))
    monkeypatch.undo()
    ends = {steps * (e + 1) for e in range(epochs)}
    every = {steps * e + k for e in range(epochs) for k in range(READ_EVERY, steps, READ_EVERY)}
    assert counted.calls == steps * epochs
    assert set(reads) == every | ends  # nothing read in between
    assert all(reads[step] == 1 for step in every)  # one transfer each
    assert set(stats) >= {"loss", "ce", "acc"} and all(map(math.isfinite, stats.values()))


def test_a_non_finite_loss_is_refused_naming_its_step() -> None:
    spec = TrainSpec(epochs=2, batch_size=8, lr=0.05)
    counted = _Counted(CrossEntropy(), nan_at=13)
    with pytest.raises(TrainingError, match=r"^t: the loss became nan at epoch 1, step 13 of 25 "
                       r"\(lr 0\.05\); nothing was saved"):
        fit(create_model("resnet8", 10, 1, widths=(4, 4, 8)), counted, _data(8 * 25), spec, 0,
            torch.device("cpu"), desc="t")
    assert counted.calls == 2 * READ_EVERY  # stopped at the first read after it


def test_key_covers_objective_defaults(bench: SimpleNamespace, tiny_bench: SimpleNamespace,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from oodbench.objectives import OBJECTIVES, BackgroundNorm
    from oodbench.train import training_key

    trainer = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu")
    spec = bench.training("bgnorm")
    explicit = dataclasses.replace(spec, params={**spec.params, "q": 0.5})
    key = training_key(bench, spec, 0, trainer.splits, None)
    assert training_key(bench, explicit, 0, trainer.splits, None) == key  # q = 0.5 is default

    class QuarterQ(BackgroundNorm):
        """BG-norm whose default ``q`` is 0.25: what a changed default looks like."""

        def __init__(self, lam: float = 0.5, select: str = "cam-quantile", q: float = 0.25,
                     tau: float = 0.1, form: str = "ratio", margin: float = 1.0,
                     warmup_start: float = 2.0, warmup_epochs: float = 1.0) -> None:
            super().__init__(lam, select, q, tau, form, margin, warmup_start, warmup_epochs)

    with OBJECTIVES.scoped():
        OBJECTIVES.restore({**OBJECTIVES.snapshot(), "bgnorm": QuarterQ})
        assert training_key(bench, spec, 0, trainer.splits, None) != key  # a changed default
    assert training_key(bench, spec, 0, trainer.splits, None) == key


@pytest.mark.kernels
def test_relative_data_root_finds_the_same_checkpoint(
    bench: SimpleNamespace, tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Trainer(bench, tiny_bench.runs, tiny_bench.root, "cpu").ensure("ce", 0)
    monkeypatch.chdir(tiny_bench.root.parent)
    relative = Trainer(bench, tiny_bench.runs, Path(tiny_bench.root.name), "cpu")
    assert relative.find("ce", 0) == path


@pytest.mark.parametrize("name", ["ssod", "regmixup", "t2fnorm"])
def test_objectives_with_steps_or_modules_of_their_own_train(name: str) -> None:
    objective = create_objective(name)
    made: list[tuple[torch.nn.Module, torch.Tensor]] = []  # each module, its initial weight
    extra = objective.extra_modules

    def keep(head: torch.nn.Linear) -> list[torch.nn.Module]:
        modules = extra(head)
        made.extend((m, m.weight.detach().clone()) for m in modules)
        return modules

    objective.extra_modules = keep  # type: ignore[method-assign]
    torch.manual_seed(0)
    stats = fit(create_model("resnet8", 10, 1, widths=(4, 4, 8)), objective, _data(16 * 6),
                TrainSpec(epochs=1, batch_size=16, lr=0.05), 0, torch.device("cpu"))
    assert all(map(math.isfinite, stats.values())) and 0.0 <= stats["acc"] <= 1.0
    assert len(made) == (name == "ssod")
    for module, initial in made:  # SSOD's OOD head is in the optimiser
        assert not torch.equal(module.weight, initial)
