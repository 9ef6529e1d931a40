"""The ray executor's figures, each printed as one line (``python -m benchmarks.cluster``, or
``python -m benchmarks.perf --only ray``, which adds them to results/perf.md):

- ``ray-overhead``: wall time of ``run_benchmark(executor="ray")`` on a 1-CPU local Ray
  cluster over ``executor="local"`` (one torch thread a job on both), on the tiny matrix (2
  trainings x 2 seeds, 320 images): the same jobs run one at a time, so the difference is
  Ray's cost (worker start, each worker loading the data, task dispatch). Target <= 1.3x, or
  <= 10 s more.
- ``ray-speedup``: the ray executor with 2 workers (a 2-CPU cluster) over 1 worker on a
  4-training matrix (2 trainings x 2 seeds, the fmnist preset's ResNet-8 16/32/64 on 8,000
  images, 3 epochs). Target >= 1.6x.

Each run uses a fresh runs folder (every job runs). Ray's own start (``ray.init``) is timed
apart and left out of the ratios: a cluster is started once and serves many runs. Not a test:
timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oodbench.check import load_benchmark
from oodbench.matrix import run_benchmark
from tests.conftest import write_tiny_bench

TARGETS = {"ray-overhead": (1.3, 10.0), "ray-speedup": 1.6}
SCORERS = ["msp", "energy", "knn", "mahalanobis"]


def make_benchmark(folder: Path, n_train: int, epochs: int,
                   widths: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """The tests' tiny benchmark (``tests.conftest.write_tiny_bench``) with ``n_train``
    images, ``epochs`` and the ResNet-8 ``widths`` (default: the tests' 8/8/16); returns
    (config file, data root)."""
    tiny = write_tiny_bench(folder, n_train, 500, noise=False)
    text = tiny.config.read_text().replace("epochs = 8", f"epochs = {epochs}")
    if widths:  # the fmnist preset's ResNet-8 instead of the tests' tiny one
        text = text.replace("widths = [8, 8, 16]", f"widths = {list(widths)}")
    tiny.config.write_text(text)
    return tiny.config, tiny.root


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_once(config: Path, root: Path, runs: Path, executor: str) -> float:
    """Seconds of one full run (2 trainings x 2 seeds) into a fresh runs folder."""
    bench = load_benchmark("tiny", config)
    return timed(lambda: run_benchmark(bench, seeds=2, out_dir=runs / "results",
                                       scorers=SCORERS, executor=executor, runs_dir=runs,
                                       data_root=root, quiet=True))


def on_ray(cpus: int, fn: Callable[[], float]) -> tuple[float, float]:
    """(``ray.init`` seconds, ``fn()``) on a fresh local Ray cluster of ``cpus`` CPUs."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - start
    try:
        return init, fn()
    finally:
        ray.shutdown()


def overhead(work: Path) -> dict[str, Any]:
    config, root = make_benchmark(work / "tiny", 320, 8)
    local = run_once(config, root, work / "tiny-local", "local")  # 1 thread a job, as on Ray
    init, ray_s = on_ray(1, lambda: run_once(config, root, work / "tiny-ray", "ray"))
    ratio = ray_s / local
    low, extra = TARGETS["ray-overhead"]
    met = ratio <= low or ray_s - local <= extra
    line = (f"ray overhead: {ratio:.2f}x = ray executor, 1 CPU {ray_s:.1f} s / local, 1 thread "
            f"{local:.1f} s (+{ray_s - local:.1f} s; tiny matrix, 2 trainings x 2 seeds; "
            f"ray.init {init:.1f} s apart; target <= {low}x or <= {extra:g} s: "
            f"{'met' if met else 'NOT met'})")
    return {"name": "ray-overhead", "value": round(ratio, 3), "met": met, "line": line,
            "seconds": {"local": round(local, 2), "ray": round(ray_s, 2),
                        "ray_init": round(init, 2)}}


def speedup(work: Path, n_train: int, epochs: int) -> dict[str, Any]:
    config, root = make_benchmark(work / "four", n_train, epochs, (16, 32, 64))
    init1, one = on_ray(1, lambda: run_once(config, root, work / "four-1", "ray"))
    init2, two = on_ray(2, lambda: run_once(config, root, work / "four-2", "ray"))
    ratio = one / two
    met = ratio >= TARGETS["ray-speedup"]
    line = (f"ray speed-up, 2 workers over 1: {ratio:.2f}x = {one:.1f} s / {two:.1f} s "
            f"(4 trainings of {n_train:,} images x {epochs} epochs, then their evals; "
            f"ResNet-8 16/32/64, {os.cpu_count()} cores; target >= {TARGETS['ray-speedup']}x: "
            f"{'met' if met else 'NOT met'})")
    return {"name": "ray-speedup", "value": round(ratio, 3), "met": met, "line": line,
            "seconds": {"one_worker": round(one, 2), "two_workers": round(two, 2),
                        "ray_init": [round(init1, 2), round(init2, 2)]}}


def figures(work: Path, quick: bool = False) -> list[dict[str, Any]]:
    """Both figures, measured under ``work`` (``quick``: small sizes, a smoke test)."""
    n_train, epochs = (640, 1) if quick else (8_000, 3)
    return [overhead(work), speedup(work, n_train, epochs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measured = figures(Path(tmp), args.quick)
    for figure in measured:
        print(figure["line"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
