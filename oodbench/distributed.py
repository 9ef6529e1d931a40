"""One training over several processes: torch.distributed and DistributedDataParallel.

``torchrun --nproc_per_node N -m oodbench train ...`` (or :func:`launch`) starts N processes
with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set; :func:`process_group` joins them (gloo on
CPU, nccl on CUDA with ``cuda:LOCAL_RANK``). Each rank takes ``batch_size / N`` of every global
batch, in its share of a per-epoch shuffle (:func:`rank_sampler`), and DDP all-reduces the
gradients. Rank 0 alone claims, evaluates and writes a checkpoint (:func:`rank0_unless_done`); the
others learn from it whether to train and wait for it at a barrier. Only rank 0 prints, except
errors. Without torchrun's variables every helper is the one-process case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from oodbench.errors import ConfigError, DeviceError, TrainingError
from oodbench.lock import unless_done as claim_unless_done
from oodbench.progress import quiet_console

if TYPE_CHECKING:
    from oodbench.adapters import ModelAdapter

T = TypeVar("T")
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Launched:
    """This process's place in a torchrun launch."""

    world_size: int
    rank: int
    local_rank: int


def torchrun_env() -> Launched | None:
    """The torchrun variables of this process, or None when it was not launched by torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        values = [int(os.environ[name]) for name in ENV]
    except (KeyError, ValueError):
        shown = ", ".join(f"{n}={os.environ.get(n)!r}" for n in ENV)
        raise ConfigError(f"an incomplete torchrun environment ({shown})",
                          "launch with torchrun (or <nproc>), which sets all three, or unset "
                          "WORLD_SIZE") from None
    return Launched(*values)


def world_size() -> int:
    """The number of processes of the training (1 outside a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this is rank 0, the process that writes and prints."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """The augmentation seed of this rank: ``seed`` on rank 0 (and in one process), another
    stream on each other rank, so the ranks do not crop their images alike."""
    return seed + (rank() << 32)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the block (gloo on CPU, nccl on CUDA) and yield this
    rank's device (``cuda:LOCAL_RANK`` on CUDA); without torchrun (or with one process), or in
    a group the caller set up, yield ``device`` as it is. Ranks other than 0 print nothing in
    the block (their errors are printed after it)."""
    env = torchrun_env()
    if env is None or env.world_size == 1 or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise DeviceError(f"process {env.local_rank} of this host needs cuda:"
                              f"{env.local_rank}, but there are {torch.cuda.device_count()} "
                              "CUDA devices", "start at most one process per GPU (<nproc>)")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        with _quiet(env.rank != 0):
            yield device
    finally:
        dist.destroy_process_group()


@contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """No console output and no warnings in the block when ``on``; both come back after it."""
    if not on:
        yield
        return
    with warnings.catch_warnings(), quiet_console():
        warnings.simplefilter("ignore")
        yield


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank is here."""
    if world_size() > 1:
        dist.barrier()


@contextmanager
def main_first(enabled: bool = True) -> Iterator[None]:
    """Rank 0 runs the block first (a download, say), the other ranks once it is done."""
    if enabled and not is_main():
        barrier()
    yield
    if enabled and is_main():
        barrier()


@contextmanager
def rank0_unless_done(target: Path) -> Iterator[bool]:
    """:func:`oodbench.lock.unless_done` held by rank 0 alone: every rank learns from it
    whether ``target`` must be made, and all leave the block together (rank 0 holding the
    claim until then)."""
    if world_size() == 1:
        with claim_unless_done(target) as missing:
            yield missing
        return
    if is_main():
        with claim_unless_done(target) as missing:
            yield broadcast(missing)
            barrier()
    else:
        yield broadcast(False)
        barrier()


def rank_sampler(n: int, seed: int) -> DistributedSampler[int] | None:
    """This rank's share of a shuffle of ``range(n)``, reshuffled by ``set_epoch`` (None in
    one process: the caller shuffles it all)."""
    if world_size() == 1:
        return None
    indices: Any = range(n)  # a sized sequence is all the sampler reads
    return DistributedSampler(indices, num_replicas=world_size(), rank=rank(), shuffle=True,
                              seed=seed)


class _ForwardAll(nn.Module):
    """``model.forward_all`` as ``forward``, for DDP to wrap."""

    def __init__(self, model: ModelAdapter) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.forward_all(x)


def parallel(model: ModelAdapter, device: torch.device) -> Forward:
    """``model.forward_all``, through DistributedDataParallel when there are several ranks (so
    every gradient of the model's parameters is all-reduced, also those of a loss that uses
    the head outside the forward)."""
    if world_size() == 1:
        return model.forward_all
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_ForwardAll(model), device_ids=ids)


def launch(nproc: int, args: Sequence[str]) -> None:
    """Run ``python -m oodbench ARGS`` as ``nproc`` processes of this host
    (``torch.distributed.run --standalone``); a :class:`TrainingError` when they fail."""
    if torchrun_env() is not None:
        raise ConfigError(f"<nproc={nproc}> inside a torchrun launch",
                          "leave <nproc> out: torchrun has started the processes already")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "oodbench", *args]
    code = subprocess.run(command, check=False).returncode
    if code:
        raise TrainingError(f"the {nproc} training processes ended with exit status {code}",
                            "the error of the process that failed is printed above")
