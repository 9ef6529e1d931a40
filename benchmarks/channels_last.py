"""oneDNN #6035 and channels-last: which convolutions break, and what channels-last is worth.

    python -m benchmarks.channels_last sweep [--quick] [--python PY] [--isa AVX2] [--threads 1]
    python -m benchmarks.channels_last speed [--repeats 5] [--threads 2]

``sweep`` runs one Conv2d per shape (kernel 1 and 3, stride 1 to 3, 1 to 64 input channels, 8
and 32 output channels, a few groups and sizes) in a subprocess of its own, since the bug
corrupts the heap. It compares the weight and input gradients of five channels-last passes
and of a contiguous one with a float64 pass (which oneDNN does not run), and records the exit
status (abort, segfault; a hang is cut after 60 s) and the oneDNN backward-weights kernel and
source format that ran (``ONEDNN_VERBOSE``). ``--python`` runs the cases under another
interpreter (another torch release: they need torch alone); ``--isa`` sets
``ONEDNN_MAX_CPU_ISA`` (``native`` leaves it unset). One line per shape: channels-last
``crash`` / ``hang`` / ``wrong`` (relative error above 1e-4) / ``ok``, and whether oodbench's
rule (:func:`oodbench.layout.onednn_6035`) refuses it; the summary names any failing shape
the rule lets through and any shape whose contiguous gradients are wrong.

``speed`` times channels-last against contiguous on the benchmarks' nets (the fmnist and
cifar10 ResNet-8s): a training step (forward, backward, SGD, ``fit``'s path) and an extraction
pass (``forward_features``), median of interleaved repeats; then the cost of the rule
(:func:`oodbench.layout.model_format`) and of the alternative, a one-batch gradient check in
a subprocess. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from oodbench.config import Benchmark
from oodbench.layout import CHANNELS_LAST, CONTIGUOUS, MemoryFormat, model_format, onednn_6035

CASE = """
import json, sys, torch
from torch import nn
cin, cout, k, s, groups, hw, batch = map(int, sys.argv[1:8])
torch.manual_seed(0)
conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)
x0 = torch.randn(batch, cin, hw, hw)
def grads(layout, dtype=torch.float32):
    c = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)
    c.load_state_dict(conv.state_dict())
    c = c.to(dtype=dtype, memory_format=layout)
    x = x0.to(dtype).clone(memory_format=layout).requires_grad_(True)
    out = c(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
    return c.weight.grad, x.grad
def err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
ref = grads(torch.contiguous_format, torch.float64)  # not oneDNN's: it has no float64
runs = [grads(torch.contiguous_format)] + [grads(torch.channels_last) for _ in range(5)]
errors = [[err(g.double(), r) for g, r in zip(run, ref)] for run in runs]
print("RESULT", json.dumps([max(map(max, errors[1:])), max(errors[0])]), flush=True)
"""


def shapes(quick: bool) -> list[tuple[int, ...]]:
    """(in, out, kernel, stride, groups, side, batch) of every case."""
    cins = [*range(1, 17), 20, 24, 32, 64]
    if quick:
        return [(c, 8, 1, 2, 1, 14, 64) for c in cins[:17]]
    out = [(c, o, k, s, 1, 14, 64)
           for k, s, c, o in itertools.product((1, 3), (1, 2), cins, (8, 32))]
    for c in (3, 4, 6, 7, 12):
        out += [(c, 16, 1, 2, 1, 32, 16), (c, 16, 1, 2, 1, 7, 128), (c, 16, 1, 3, 1, 15, 64)]
    return out + [(c, 16, 1, 2, g, 14, 64) for c, g in ((8, 2), (16, 4), (8, 8), (16, 2))]


def run_case(python: str, shape: tuple[int, ...], env: dict[str, str]) -> dict[str, object]:
    """One shape in a subprocess: its channels-last outcome, the largest relative gradient
    errors of its channels-last and contiguous passes, and the backward-weights kernels
    (implementation and source format) that ran."""
    try:
        done = subprocess.run([python, "-c", CASE, *map(str, shape)], env=env, timeout=60,
                              capture_output=True, text=True)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        code, text = "hang", ""
    found = re.search(r"RESULT (\[.*\])", text)
    errors = json.loads(found.group(1)) if found else None
    kernels = sorted({" ".join(m.groups()) for m in re.finditer(
        r"exec,cpu,convolution,([^,]+),backward_weights,src[_:]f32:\w*:blocked:(\w+)", text)})
    outcome = ("hang" if code == "hang" else "crash" if code != 0 or errors is None
               else "wrong" if errors[0] > 1e-4 else "ok")
    return {"outcome": outcome, "exit": code, "errors": errors, "kernels": kernels}


def sweep(args: argparse.Namespace) -> None:
    """Print one line per shape and a summary."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", OMP_NUM_THREADS=str(args.threads))
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if args.isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    version = subprocess.run([args.python, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"torch {version}, ONEDNN_MAX_CPU_ISA={args.isa}, {args.threads} thread(s)")
    missed: list[tuple[int, ...]] = []
    contiguous: list[tuple[int, ...]] = []
    for shape in shapes(args.quick):
        cin, cout, k, s, groups = shape[:5]
        refused = onednn_6035(torch.nn.Conv2d(cin, cout, k, s, groups=groups)) is not None
        case = run_case(args.python, shape, env)
        print(json.dumps({"shape": dict(zip(("in", "out", "kernel", "stride", "groups", "side",
                                             "batch"), shape, strict=True)),
                          **case, "refused": refused}), flush=True)
        if case["outcome"] != "ok" and not refused:
            missed.append(shape)
        if case["errors"] is not None and case["errors"][1] > 1e-4:
            contiguous.append(shape)
    print(f"shapes that fail and the rule lets through: {missed or 'none'}; "
          f"shapes whose contiguous gradients are wrong: {contiguous or 'none'}")


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_and_pass(bench: Benchmark, layout: MemoryFormat, x: torch.Tensor, y: torch.Tensor,
                  images: np.ndarray) -> tuple[float, float]:
    """Seconds of one training step on (``x``, ``y``) (median of 5) and of one extraction pass
    over ``images`` in batches of 256, for a fresh net of ``bench`` in ``layout``."""
    from oodbench.data import Preprocess
    from oodbench.models import create_model
    from oodbench.objectives import create_objective

    torch.manual_seed(0)
    net = create_model(bench.model, bench.num_classes, bench.channels,
                       **bench.model_kwargs()).to(memory_format=layout.torch)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    ce, xb = create_objective("ce"), layout.batch(x.contiguous(memory_format=torch.channels_last))
    pre = Preprocess(bench.image_size, bench.channels, (0.5,) * bench.channels,
                     (0.25,) * bench.channels)

    def step() -> None:
        fmap, _, logits = net.forward_all(xb)
        opt.zero_grad(set_to_none=True)
        ce(fmap, logits, y, net.fc, 0.0)[0].backward()
        opt.step()

    def extract() -> None:
        with torch.inference_mode():
            for i in range(0, len(images), 256):
                net.forward_all(layout.batch(pre(images[i : i + 256])))

    train = median_seconds(step, 5)
    net.eval()
    return train, median_seconds(extract, 1)


def speed(args: argparse.Namespace) -> None:
    """Print, per net, the training-step and extraction speeds in both formats, the rule's
    cost and a subprocess check's."""
    from oodbench.check import load_benchmark
    from oodbench.models import create_model

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    for name in ("fmnist", "cifar10"):
        bench = load_benchmark(name)
        side, channels = bench.image_size, bench.channels
        batch = bench.training("ce").train.batch_size
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch, channels, side, side, generator=gen)
        y = torch.randint(0, bench.num_classes, (batch,), generator=gen)
        images = np.random.default_rng(0).integers(0, 256, (1024, side, side, channels),
                                                   dtype=np.uint8)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):  # interleaved, so load drifts hit both formats alike
            for layout in (MemoryFormat(CHANNELS_LAST, ""), MemoryFormat(CONTIGUOUS, "")):
                seconds = step_and_pass(bench, layout, x, y, images)
                for what, t in zip(("train", "extract"), seconds, strict=True):
                    times.setdefault((what, layout.format), []).append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for what, n in (("train", batch), ("extract", len(images))):
            cl, co = med[what, CHANNELS_LAST], med[what, CONTIGUOUS]
            print(f"{name} ResNet-8 {bench.widths} {what}: channels-last {n / cl:,.0f} img/s, "
                  f"contiguous {n / co:,.0f} img/s, channels-last {co / cl:.2f}x")
        net = create_model(bench.model, bench.num_classes, channels, **bench.model_kwargs())
        rule = median_seconds(lambda net=net: model_format(net), 101)
        print(f"{name}: the rule (model_format) takes {rule * 1e6:.0f} us")
    check = median_seconds(lambda: subprocess.run(
        [sys.executable, "-c", CASE, "4", "8", "1", "2", "1", "14", "64"],
        capture_output=True, check=False), max(1, args.repeats // 2))
    print(f"a one-conv gradient check in a subprocess (start, import torch, both formats): "
          f"{check:.2f} s; a whole model's check costs that plus its two passes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--quick", action="store_true",
                   help="1x1 stride 2 only, 1 to 16 and 20 input channels, 8 outputs")
    s.add_argument("--python", default=sys.executable)
    s.add_argument("--isa", default="native")
    s.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("speed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    (sweep if args.command == "sweep" else speed)(args)


if __name__ == "__main__":
    main()
