"""Training throughput of CE vs BG-norm on one benchmark's model; prints the overhead ratio.

    python benchmarks/train_speed.py [--benchmark fmnist] [--images 12800] [--repeats 3]

Uses random inputs of the benchmark's shape (speed does not depend on the pixels). Target:
BG-norm time per epoch <= 1.10x CE. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Sequence

import torch

from oodbench.check import load_benchmark
from oodbench.config import Benchmark
from oodbench.device import resolve_device
from oodbench.models import create_model
from oodbench.objectives import create_objective
from oodbench.progress import make_progress
from oodbench.train import InMemory, fit


def measure_rates(
    bench: Benchmark,
    images: int,
    repeats: int,
    device: torch.device,
    trainings: Sequence[str] | None = None,
    cpu_amp: bool | None = None,
) -> dict[str, list[float]]:
    """Training images per second of one epoch on random inputs, per training and repeat.

    ``trainings`` names the benchmark's trainings to time (default: all of them); ``cpu_amp``
    overrides their bfloat16-autocast setting when given.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(images, bench.channels, bench.image_size, bench.image_size, generator=gen)
    y = torch.randint(0, bench.num_classes, (images,), generator=gen)
    specs = [t for t in bench.trainings if trainings is None or t.name in trainings]
    rates: dict[str, list[float]] = {}
    for rep in range(repeats):
        for t in specs:
            params = {**t.params, "warmup_start": 0.0, "warmup_epochs": 0.0} \
                if t.objective == "bgnorm" else t.params
            spec = dataclasses.replace(t.train, epochs=1)
            if cpu_amp is not None:
                spec = dataclasses.replace(spec, cpu_amp=cpu_amp)
            model = create_model(bench.model, bench.num_classes, bench.channels,
                                 **bench.model_kwargs())
            with make_progress(transient=True) as prog:
                stats = fit(model, create_objective(t.objective, **params), InMemory(x, y), spec,
                            rep, device, progress=prog, desc=f"{t.name} rep {rep}")
            rates.setdefault(t.name, []).append(stats["images_per_s"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="fmnist")
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    bench = load_benchmark(args.benchmark)
    device = resolve_device(args.device)
    rates = measure_rates(bench, args.images, args.repeats, device)
    base = bench.trainings[0].name
    print(f"{bench.name} ({bench.model} {bench.widths}, {device}, {args.images} images, "
          f"median of {args.repeats}):")
    for name, r in rates.items():
        ratio = statistics.median(rates[base]) / statistics.median(r)
        print(f"  {name:10s} {statistics.median(r):8.0f} img/s   time ratio vs {base}: "
              f"{ratio:.3f}x")


if __name__ == "__main__":
    main()
