"""Training: one (benchmark, training, seed) -> one checkpoint, reused when its config hash matches.

SGD with Nesterov momentum and a OneCycle or cosine schedule; crop-and-flip augmentation for
RGB sets when the benchmark asks for it; fixed seeds. channels_last memory format (faster on
CPU too, for these ResNets) unless the model has a layer that oneDNN #6035 breaks
(:mod:`oodbench.layout`) and, on CUDA, AMP (float16 or bfloat16). A set held in memory is
preprocessed once into one tensor (:class:`InMemory`), or, when it needs no resize, kept as
uint8 on the device with every batch made there (:class:`OnDevice`, the benchmark's
``data_on_device``); a file-backed one is decoded batch by batch by data-loader workers in the
same shuffled order (:class:`Streamed`). All three give the same batches. Under torchrun each
checkpoint is one DistributedDataParallel training of all its processes
(:mod:`oodbench.distributed`). ``epochs = 0`` keeps the init weights (a pretrained model
scored as it is).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from oodbench import compat, distributed
from oodbench.adapters import ModelAdapter, input_preprocess
from oodbench.check import override
from oodbench.checkpoint import save_checkpoint
from oodbench.config import (
    DATA_ROOT_TOKEN,
    INIT_MODEL,
    Benchmark,
    TrainingSpec,
    TrainSpec,
)
from oodbench.data import ImageArray, ImageSet, Preprocess, resolve_data_root
from oodbench.device import resolve_device
from oodbench.errors import ConfigError, TrainingError
from oodbench.fileio import Owned, check_disjoint, check_writable, file_hash, inside
from oodbench.layout import CONTIGUOUS, MemoryFormat, model_format
from oodbench.models import create_model
from oodbench.objectives import Objective, Stat, create_objective, get_objective
from oodbench.progress import ProgressCallback, console, make_progress, no_progress
from oodbench.provenance import code_version, library_versions
from oodbench.splits import IDSplits, load_id_splits
from oodbench.threads import job_threads
from oodbench.weights import first_non_finite, load_into, read_checkpoint


def to_tensor(preprocess: Preprocess, images: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    """Preprocess a whole uint8 array in chunks into one float tensor."""
    return torch.cat([preprocess(images[i : i + chunk]) for i in range(0, len(images), chunk)])


Batch = tuple[torch.Tensor, torch.Tensor]


class InMemory:
    """A split preprocessed once into one tensor: batches are index lookups."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    @classmethod
    def of(cls, preprocess: Preprocess, arr: ImageArray) -> InMemory:
        """``arr`` preprocessed."""
        return cls(to_tensor(preprocess, arr.images), torch.as_tensor(arr.labels,
                                                                      dtype=torch.long))

    def __len__(self) -> int:
        return len(self.y)

    def epoch(self, order: torch.Tensor, batch_size: int, steps: int) -> Iterator[Batch]:
        """``steps`` batches of ``order`` (CPU tensors)."""
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield self.x[idx], self.y[idx]

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split in its stored order."""
        for i in range(0, len(self.y), batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


class Streamed:
    """A file-backed split decoded per batch by ``workers`` data-loader processes."""

    def __init__(self, preprocess: Preprocess, arr: ImageSet, workers: int | str) -> None:
        self.preprocess, self.arr, self.workers = preprocess, arr, workers

    def __len__(self) -> int:
        return len(self.arr)

    def epoch(self, order: torch.Tensor, batch_size: int, steps: int) -> Iterator[Batch]:
        """``steps`` batches of ``order`` (CPU tensors)."""
        yield from self.arr.batches(self.preprocess, batch_size, torch.device("cpu"),
                                    order[: steps * batch_size].numpy(), self.workers)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split in its stored order."""
        yield from self.arr.batches(self.preprocess, batch_size, torch.device("cpu"),
                                    workers=self.workers)


class OnDevice:
    """A uint8 split moved once to ``device``: each batch is indexed, converted and normalised
    there (the same values as :class:`InMemory`). Only for images that need no resize or
    channel conversion (:func:`resident_reason`)."""

    def __init__(self, preprocess: Preprocess, arr: ImageArray, device: torch.device) -> None:
        self.preprocess = preprocess
        self.images = torch.from_numpy(arr.images).to(device)
        self.y = torch.as_tensor(arr.labels, dtype=torch.long).to(device)

    def __len__(self) -> int:
        return len(self.y)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC images as model input, as :meth:`Preprocess.__call__` makes it."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        return self.preprocess.finish(self.preprocess.fit(x))

    def epoch(self, order: torch.Tensor, batch_size: int, steps: int) -> Iterator[Batch]:
        """``steps`` batches of ``order`` (a CPU tensor), made on the device."""
        order = order.to(self.y.device)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield self._input(self.images[idx]), self.y[idx]

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split in its stored order."""
        for i in range(0, len(self.y), batch_size):
            yield self._input(self.images[i : i + batch_size]), self.y[i : i + batch_size]


TrainData = InMemory | OnDevice | Streamed


def resident_reason(preprocess: Preprocess, arr: ImageSet, device: torch.device,
                    auto: bool) -> str | None:
    """Why ``arr`` cannot be an :class:`OnDevice` set (None: it can). With ``auto`` it must
    also be on CUDA and take at most a quarter of the free device memory."""
    if not isinstance(arr, ImageArray):
        return f"{arr.name}/{arr.split} is read from files batch by batch, not held in memory"
    height, width, channels = arr.shape
    side, crop = preprocess.size, preprocess.resize_size != preprocess.size
    if (height, width, channels) != (side, side, preprocess.channels) or crop:
        return (f"{arr.name}/{arr.split} holds {height}x{width}x{channels} images and the model "
                f"takes {side}x{side}x{preprocess.channels}{' (centre crop)' * crop}: they are "
                "converted once on the CPU")
    if not auto:
        return None
    if device.type != "cuda":
        return f"the device is {device}, not CUDA"
    free = torch.cuda.mem_get_info(device)[0]
    if arr.images.nbytes > free / 4:
        return (f"{arr.name}/{arr.split} takes {arr.images.nbytes / 2**20:.0f} MiB, more than a "
                f"quarter of the {free / 2**20:.0f} MiB free on {device}")
    return None


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding (the normalised mean colour) and random horizontal flip,
    on ``x``'s device; the draws come from the CPU ``generator``, so every device crops alike."""
    b, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
    out = padded[torch.arange(b, device=device)[:, None, None, None],
                 torch.arange(c, device=device)[None, :, None, None], rows, cols]
    flip = (torch.rand(b, generator=generator) < 0.5).to(device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(spec: TrainSpec, device: torch.device) -> AbstractContextManager[Any]:
    """Autocast in ``amp_dtype`` on CUDA when ``amp``; bfloat16 on CPU when ``cpu_amp`` and
    supported."""
    if device.type == "cuda" and spec.amp:
        return torch.autocast("cuda", dtype=getattr(torch, spec.amp_dtype))
    if device.type == "cpu" and spec.cpu_amp:
        if cpu_bf16_supported():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        console.print("[yellow]cpu_amp: this CPU has no native bfloat16; training in float32 "
                      "(slower, and not the weights a bfloat16 CPU would give)[/yellow]")
    return nullcontext()


def local_batch(spec: TrainSpec, world: int, what: str) -> int:
    """Each of ``world`` processes' share of ``spec.batch_size``; a :class:`ConfigError` naming
    ``what`` when it does not split evenly."""
    share, rest = divmod(spec.batch_size, world)
    if rest:
        raise ConfigError(f"{what}: train.batch_size = {spec.batch_size} does not split evenly "
                          f"over {world} processes",
                          f"use a train.batch_size divisible by {world} in the benchmark file, "
                          "or another number of processes (<nproc>)")
    return share


def check_world_size(bench: Benchmark, world: int) -> None:
    """That every training :func:`train_benchmark` trains (its inits too) splits its batch over
    ``world`` processes."""
    names = [t.name for t in bench.trainings]
    for name in names:  # grows by the inits
        spec = bench.training(name)
        local_batch(spec.train, world, f"{bench.source}: [benchmarks.{bench.name}] training "
                    f"{name!r}")
        if spec.init is not None and spec.init not in (INIT_MODEL, *names):
            names.append(spec.init)


def training_format(model: ModelAdapter, spec: TrainSpec) -> MemoryFormat:
    """The memory format :func:`fit` trains ``model`` in: contiguous when the benchmark turns
    ``train.channels_last`` off, else the model's own (:func:`oodbench.layout.model_format`)."""
    if not spec.channels_last:
        return MemoryFormat(CONTIGUOUS, "train.channels_last = false")
    return model_format(model)


READ_EVERY = 10
"""Steps between two reads of a training's device values (the running stats, the loss's
finiteness, the progress line), and at every epoch's end: the loop's only host syncs."""


def _float64(value: Stat, device: torch.device) -> torch.Tensor:
    """``value`` (a tensor or a number) as a detached float64 0-d tensor on ``device``."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
    return torch.as_tensor(value, dtype=torch.float64, device=device)


class Reading(NamedTuple):
    """What one read of a :class:`RunningStats` gives."""

    stats: dict[str, float]  # the running means so far and ``acc``
    loss: float  # the last step's
    bad_step: int | None  # the first step (from 0) whose loss was not finite
    bad_loss: float  # that loss


class RunningStats:
    """An epoch's per-step values summed on the device where the steps run, in float64 (the
    sums that adding Python floats gives), and the first step whose loss is not finite:
    :meth:`read` takes them to the host in one transfer."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.correct, self.loss, self.bad_loss = self._zero(), self._zero(), self._zero()
        self.bad_step = self._zero() - 1
        self.seen = self.steps = 0

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64, device=self.device)

    def add(self, loss: torch.Tensor, parts: dict[str, Stat], logits: torch.Tensor,
            labels: torch.Tensor) -> None:
        """One step's loss, objective stats and predictions; nothing is read."""
        self.loss = _float64(loss, self.device)
        for key, value in {"loss": self.loss, **parts}.items():
            self.sums.setdefault(key, self._zero()).add_(_float64(value, self.device))
        self.correct = self.correct + (logits.argmax(1) == labels).sum()
        self.seen += len(labels)
        first = ~torch.isfinite(self.loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, float(self.steps), self.bad_step)
        self.bad_loss = torch.where(first, self.loss, self.bad_loss)
        self.steps += 1

    def read(self) -> Reading:
        """The values so far, in one device-to-host transfer."""
        *sums, correct, loss, bad_step, bad_loss = torch.stack(
            [*self.sums.values(), self.correct, self.loss, self.bad_step, self.bad_loss]).tolist()
        stats = {k: v / self.steps for k, v in zip(self.sums, sums, strict=True)}
        return Reading(stats | {"acc": int(correct) / self.seen}, loss,
                       int(bad_step) if bad_step >= 0 else None, bad_loss)


@dataclass
class _Loop:
    """What every step of :func:`fit` uses, and what it reports to."""

    model: ModelAdapter
    objective: Objective
    spec: TrainSpec
    device: torch.device
    steps: int  # per epoch
    gen: torch.Generator  # the augmentation's draws
    layout: MemoryFormat
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    progress: ProgressCallback
    desc: str

    def __post_init__(self) -> None:
        cuda = self.device.type == "cuda"
        self.forward = distributed.parallel(self.model, self.device)
        # bfloat16 has float32's range: no loss scaling
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and self.spec.amp
                                           and self.spec.amp_dtype == "float16")
        self.autocast = autocast_context(self.spec, self.device)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, epoch: float, running: RunningStats
             ) -> None:
        """One optimiser step on a batch at (fractional) ``epoch``, added to ``running``."""
        if self.spec.augment == "crop-flip":
            xb = crop_flip(xb, self.gen)
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        xb = self.layout.batch(xb)  # batches come channels-last
        with self.autocast:
            loss, parts, logits = self.objective.step(self.forward, xb, yb, self.model.fc,
                                                      epoch, self.gen)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        running.add(loss, parts, logits, yb)

    def epoch(self, data: TrainData, order: torch.Tensor, local: int, epoch: int) -> Reading:
        """One epoch over ``order``, read every :data:`READ_EVERY` steps and at its end; a
        :class:`TrainingError` at the first read after the loss stops being finite."""
        running = RunningStats(self.device)
        for i, (xb, yb) in enumerate(data.epoch(order, local, self.steps)):
            self.step(xb, yb, epoch + i / self.steps, running)
            if (i + 1) % READ_EVERY and i + 1 < self.steps:
                continue
            reading = running.read()
            if reading.bad_step is not None:
                raise TrainingError(
                    f"{self.desc}: the loss became {reading.bad_loss} at epoch {epoch + 1}, step "
                    f"{reading.bad_step + 1} of {self.steps} (lr {self.spec.lr}); nothing was "
                    "saved", "the learning rate is the usual cause: lower train.lr, or the "
                    "weight of the objective's extra term, in the benchmark file")
            shown = " ".join(f"{k} {v:.3f}" for k, v in reading.stats.items())
            self.progress(self.desc, epoch * self.steps + i + 1, self.spec.epochs * self.steps,
                          f"ep {epoch + 1}/{self.spec.epochs} {shown}")
        return reading


def fit(
    model: ModelAdapter,
    objective: Objective,
    data: TrainData,
    spec: TrainSpec,
    seed: int,
    device: torch.device,
    *,
    progress: ProgressCallback | None = None,
    desc: str = "train",
) -> dict[str, float]:
    """Train ``model`` in place; returns the last epoch's running stats and the throughput.

    Weights and batches are in the :func:`training_format`. In a process group each rank
    takes ``batch_size / world_size`` of every (global) batch, from its share of the epoch's
    shuffle, and DDP averages the gradients. The device's values are read every
    :data:`READ_EVERY` steps and at each epoch's end (then reported to ``progress`` as task
    ``desc``), never in between."""
    local = local_batch(spec, distributed.world_size(), desc)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(distributed.rank_seed(seed))
    layout = training_format(model, spec)
    model.to(device).to(memory_format=layout.torch)
    extra = objective.extra_modules(model.fc)
    if extra and distributed.world_size() > 1:
        raise TrainingError(f"{desc}: objective {objective.name!r} trains modules of its own, "
                            "which DistributedDataParallel does not synchronise",
                            "train it with one process (no --nproc)")
    params = [*model.parameters(), *(p for m in extra for p in m.to(device).parameters())]
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                          nesterov=True, weight_decay=spec.weight_decay)
    n = len(data)
    steps = n // spec.batch_size if n >= 2 * spec.batch_size else math.ceil(n / spec.batch_size)
    total = spec.epochs * steps
    if total == 0:
        return {"seconds": 0.0, "images_per_s": 0.0}
    if spec.schedule == "onecycle":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=spec.lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    report = progress or no_progress
    loop = _Loop(model, objective, spec, device, steps, gen, layout, opt, sched, report, desc)
    sampler = distributed.rank_sampler(n, seed)
    report(desc, 0, total)
    start = time.perf_counter()
    model.train()
    for epoch in range(spec.epochs):
        if sampler is None:
            order = torch.randperm(n, generator=gen)
        else:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler))
        reading = loop.epoch(data, order, local, epoch)
        bad = first_non_finite(model.state_dict())
        if bad is not None:  # a last step can overflow the weights while its loss was finite
            raise TrainingError(
                f"{desc}: the weights became non-finite (NaN/inf, first at {bad!r}) in epoch "
                f"{epoch + 1} (lr {spec.lr}, last loss {reading.loss:.3g}); nothing was saved",
                "the learning rate is the usual cause: lower train.lr, or the weight of the "
                "objective's extra term, in the benchmark file")
    elapsed = time.perf_counter() - start
    return reading.stats | {"seconds": elapsed, "images_per_s": spec.epochs * steps
                            * spec.batch_size / max(elapsed, 1e-9)}


@torch.no_grad()
def test_accuracy(
    model: ModelAdapter,
    data: TrainData,
    device: torch.device,
    diagnose: tuple[type[Objective], ...] = (),
    batch: int = 512,
) -> dict[str, float]:
    """Accuracy on ``data`` (an ID test or validation split), and the mean of every diagnostic
    of the objective classes ``diagnose``; summed on the device and read once."""
    model.eval().to(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for xb, yb in data.batches(batch):
        xb, yb = xb.to(device), yb.to(device)
        fmap, _, logits = model.forward_all(xb)
        correct += (logits.argmax(1) == yb).sum()
        for objective in diagnose:
            for key, (total, count) in objective.diagnostics(fmap, yb, model.fc).items():
                acc = sums.setdefault(key, (_float64(0.0, device), _float64(0, device)))
                acc[0].add_(_float64(total, device))
                acc[1].add_(_float64(count, device))
    read = torch.stack([correct.double(), *(t for pair in sums.values() for t in pair)]).tolist()
    means = {k: t / max(c, 1) for k, t, c in zip(sums, read[1::2], read[2::2], strict=True)}
    return {"acc": int(read[0]) / len(data)} | means


def model_weights(bench: Benchmark, data_root: Path | None) -> Path:
    """The file ``bench.model_weights`` names (``{data_root}/...``: below ``data_root``);
    a :class:`ConfigError` saying where it is expected and how to get it when it is missing."""
    name = bench.model_weights or ""
    howto = bench.model_weights_howto or "point it at a .safetensors or .pt state_dict of the model"
    if name.startswith(DATA_ROOT_TOKEN):
        if data_root is None:
            raise ConfigError(f"{bench.source}: model_weights = {name!r} of benchmark "
                              f"{bench.name!r} lies below the data root, and none was given",
                              f"pass <data_root=PATH>; {howto}")
        name = str(data_root) + name.removeprefix(DATA_ROOT_TOKEN)
    if not name or not Path(name).is_file():
        raise ConfigError(f"{bench.source}: model_weights of benchmark {bench.name!r}: "
                          f"{name or None!r} is not a file", howto)
    return Path(name)


def train_fields(spec: TrainSpec) -> dict[str, Any]:
    """The train settings that enter a checkpoint's key (:func:`oodbench.compat.key_train_fields`:
    settings added later are left out at their old behaviour, so older checkpoints keep
    their keys)."""
    return compat.key_train_fields(asdict(spec))


def training_key(
    bench: Benchmark, training: TrainingSpec, seed: int, splits: IDSplits, init_hash: str | None,
    preprocess: Preprocess | None = None, world_size: int = 1,
) -> str:
    """Hash of everything that determines a checkpoint's weights (``preprocess``: the model's
    input, default the splits'; ``world_size``: the processes of a DDP training)."""
    data = {
        "id": bench.id_dataset, "source": splits.train.source, "n_train": len(splits.train.labels),
        "preprocess": (preprocess or splits.preprocess).key(), "model": bench.model,
        "widths": bench.widths,
        "num_classes": bench.num_classes, "channels": bench.channels,
        "objective": training.objective,
        # every parameter, defaults included: a changed default must not reuse old weights
        "params": create_objective(training.objective, **training.params).get_params(),
        "train": train_fields(training.train), "seed": seed, "init": init_hash,
    }
    if world_size > 1:  # other weights than one process's; one process keeps its old keys
        data["world_size"] = world_size
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


CHECKPOINT_SUFFIX = ".safetensors"  # of the checkpoints a training writes


class Trainer:
    """Trains or reuses the checkpoints of one benchmark; loads the ID data once. A checkpoint
    is found by its key in ``runs_dir/<benchmark>/``, then in the ``committed`` folders (a
    results folder's ``checkpoints/``, which the report copies its checkpoints into); a new one
    is trained into ``runs_dir/<benchmark>/``."""

    def __init__(
        self,
        bench: Benchmark,
        runs_dir: Path | str = "runs",
        data_root: Path | str | None = None,
        device: str | None = None,
        splits: IDSplits | None = None,
        download: bool = False,
        committed: tuple[Path, ...] = (),
    ) -> None:
        self.bench = bench
        self.dir = inside(runs_dir, bench.name)
        self.committed = committed  # read-only folders of finished checkpoints, searched after
        self.device = resolve_device(device or bench.device)
        self.data_root = resolve_data_root(data_root)
        self.splits = splits or load_id_splits(bench, data_root, download)
        # the input the model takes: the benchmark's statistics for oodbench's own nets, the
        # model's own preprocessing (at the benchmark's size unless it fixes one) for others
        self.preprocess = input_preprocess(self.create(), lambda: self.splits.preprocess,
                                           self.splits.size, crop_pct=self.splits.crop_pct)
        self._data: dict[str, TrainData] = {}
        self.trained: list[Path] = []  # the checkpoints this trainer made (not found)

    def data(self, split: str) -> TrainData:
        """An ID split as training input: preprocessed once in memory, or streamed; the
        training set on the device where ``data_on_device`` says so."""
        if split not in self._data:
            arr = getattr(self.splits, split)
            if split == "train" and self._resident(arr):
                self._data[split] = OnDevice(self.preprocess, arr, self.device)
            elif isinstance(arr, ImageArray):
                self._data[split] = InMemory.of(self.preprocess, arr)
            else:
                self._data[split] = Streamed(self.preprocess, arr, self.bench.loader_workers)
        return self._data[split]

    def _resident(self, arr: ImageSet) -> bool:
        """Whether the training set ``arr`` is held on the device (``data_on_device``)."""
        setting, bench = self.bench.data_on_device, self.bench
        if setting is False:
            return False
        why = resident_reason(self.preprocess, arr, self.device, auto=setting == "auto")
        if why is not None and setting is True:
            raise ConfigError(f"{bench.source}: [benchmarks.{bench.name}] data_on_device = true, "
                              f"but {why}", 'set data_on_device = "auto" (on the device where '
                              "it can be) or false")
        return why is None

    def create(self, weights: Path | None = None) -> ModelAdapter:
        """The benchmark's model, random-initialised or with ``weights``."""
        bench = self.bench
        return create_model(bench.model, bench.num_classes, bench.channels, weights=weights,
                            **bench.model_kwargs())

    def _weights(self) -> Path:
        """The benchmark's ``model_weights`` file (for ``init = "model"``)."""
        return model_weights(self.bench, self.data_root)

    def path_of(self, training: str, seed: int) -> Path | None:
        """Where the checkpoint of (training, seed) is or will be; None while the checkpoint
        it starts from (its init) is missing."""
        return self._path(training, seed, create=False)

    def find(self, training: str, seed: int) -> Path | None:
        """The matching checkpoint on disk, if any (no training)."""
        path = self._path(training, seed, create=False)
        return path if path is not None and path.is_file() else None

    def _path(self, training: str, seed: int, create: bool) -> Path | None:
        spec = self.bench.training(training)
        init_hash = None
        if spec.init == INIT_MODEL:
            init_hash = file_hash(self._weights())
        elif spec.init is not None:
            parent = self.ensure(spec.init, seed) if create else self.find(spec.init, seed)
            if parent is None:
                return None
            init_hash = file_hash(parent)
        key = training_key(self.bench, spec, seed, self.splits, init_hash, self.preprocess,
                           distributed.world_size())[:12]
        path = inside(self.dir, f"{training}-s{seed}-{key}{CHECKPOINT_SUFFIX}")
        if path.is_file():  # one stat; listings of the folders only for a missing one
            return path
        # the key covers everything that sets the weights, so an identical training stored under
        # another name (an ablation variant that became the default), by an older version
        # (.pt), or committed beside a results folder is the same checkpoint
        for folder in (self.dir, *self.committed):
            same = sorted(p for suffix in (CHECKPOINT_SUFFIX, ".pt")
                          for p in folder.glob(f"*-s{seed}-{key}{suffix}"))
            if same:
                return same[0]
        return path

    def ensure(self, training: str, seed: int, progress: ProgressCallback | None = None
               ) -> Path:
        """Return the checkpoint for (training, seed), training it (and its init) if missing.

        Training holds the checkpoint's claim (:func:`~oodbench.lock.claim`): another process
        of a shared runs folder that needs it waits, then reuses it. In a process group rank 0
        holds it, and all ranks train (:func:`oodbench.distributed.rank0_unless_done`), each on
        the torch threads of ``resources.train`` (:mod:`oodbench.threads`). The training
        reports to ``progress``, by default a bar on the stderr console."""
        path = self._path(training, seed, create=True)
        assert path is not None
        with distributed.rank0_unless_done(path) as missing:
            if missing:
                shown = make_progress() if progress is None else nullcontext(progress)
                with job_threads(self.bench.resources.train), shown as report:
                    self._train(training, seed, path, report)
                self.trained.append(path)
                return path
        console.print(f"[dim]reusing {path}[/dim]")
        return path

    def _train(self, training: str, seed: int, path: Path, progress: ProgressCallback) -> None:
        bench, spec = self.bench, self.bench.training(training)
        torch.manual_seed(seed)
        init_path = self._weights() if spec.init == INIT_MODEL else None
        model = self.create(init_path)
        if spec.init not in (None, INIT_MODEL):
            init_path = self.find(spec.init, seed)
            assert init_path is not None
            load_into(model, read_checkpoint(init_path)[0], init_path)
        objective = create_objective(spec.objective, **spec.params)
        layout = training_format(model, spec.train)
        if spec.train.channels_last and layout.format == CONTIGUOUS:
            console.print(f"[yellow]note: {training} s{seed} trains in the contiguous memory "
                          f"format, not channels-last: {layout.reason}[/yellow]")
        stats = fit(model, objective, self.data("train"), spec.train, seed, self.device,
                    progress=progress, desc=f"train {training} s{seed}")
        if not distributed.is_main():
            return  # rank 0 evaluates and writes
        diagnose = tuple(dict.fromkeys(get_objective(t.objective)
                                       for t in (*bench.trainings, *bench.ablate)))
        test = test_accuracy(model, self.data("test"), self.device, diagnose)
        val = test_accuracy(model, self.data("val"), self.device) if len(self.splits.val) else {}
        diagnostics = {f"{k}_test": v for k, v in test.items() if k != "acc"}
        model.cpu()
        meta: dict[str, Any] = {
            "benchmark": bench.name, "training": training, "arch": bench.model,
            "widths": list(getattr(model, "widths", ())), "num_classes": bench.num_classes,
            "in_channels": self.preprocess.channels, "image_size": self.preprocess.size,
            "id_dataset": bench.id_dataset, "id_source": self.splits.train.source,
            "objective": spec.objective,
            "objective_params": create_objective(spec.objective, **spec.params).get_params(),
            "train": asdict(spec.train), "seed": seed, "epochs": spec.train.epochs,
            "init": {"training": spec.init, "checkpoint": str(init_path),
                     "sha256": file_hash(init_path)} if init_path else None,
            "normalisation": {"mean": self.preprocess.mean, "std": self.preprocess.std},
            "preprocess": self.preprocess.key(),
            "config_hash": path.stem.rsplit("-", 1)[-1],
            "device": str(self.device), "world_size": distributed.world_size(),
            "memory_format": layout.to_dict(),
            "train_stats": stats,
            "test_acc": test["acc"], "val_acc": val.get("acc"), "diagnostics": diagnostics,
            "versions": library_versions(), "code": code_version(),
        }
        save_checkpoint(path, model, meta)
        shown = "".join(f", {k} {v:.3f}" for k, v in diagnostics.items())
        console.print(f"[green]trained[/green] {training} s{seed}: test acc {test['acc']:.4f}"
                      f"{shown}, {stats['images_per_s']:.0f} img/s -> {path}")


def train_benchmark(
    bench: Benchmark,
    *,
    seeds: int | None = None,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    download: bool = False,
) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every training x seed of a benchmark; returns the checkpoint paths.

    ``seeds`` and ``device`` override the benchmark's, checked before any training. Launched
    by torchrun, the processes train each checkpoint together (DDP; rank 0 writes it)."""
    bench = override(bench, seeds=seeds, device=device)
    check_writable(runs_dir, "runs_dir")
    root = resolve_data_root(data_root)
    check_disjoint(Owned("runs_dir", runs_dir, inside(runs_dir, bench.name), "checkpoints"),
                   Owned("data_root", root, root, "datasets") if root else None)
    with distributed.process_group(resolve_device(bench.device)) as rank_device:
        check_world_size(bench, distributed.world_size())
        with distributed.main_first(download):
            trainer = Trainer(bench, runs_dir, data_root, str(rank_device), download=download)
        return {(t.name, s): trainer.ensure(t.name, s)
                for s, t in bench.cells()}
