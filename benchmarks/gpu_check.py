"""One check of oodbench on a CUDA machine in under 8 minutes; writes results/gpu-check.json.

    bash benchmarks/gpu_check.sh [--data-root DIR] [--out FILE] [--logs DIR] [--budget S]
    bash benchmarks/gpu_check.sh --dry-run [--out FILE]

Each step runs oodbench's command line in a subprocess (``detector`` runs in this process),
timed and given a status, under one time budget (default 450 s; the tests get what is left):

- ``env``: the device, torch / CUDA / cuDNN versions, GPU memory, cores.
- ``data``: the ID set's splits and which OOD sets are present (``oodbench list``'s
  ``dataset_status``); the generated config (``--config``): the packaged benchmarks.toml, which
  ``extends`` reads, and the check's benchmarks after it.
- ``epoch-resident`` / ``epoch-host``: the ``cifar10-gpu`` recipe (ResNet-18 32x32, bfloat16
  autocast, channels-last) in benchmarks that ``extends`` it, with the uint8 training set on
  the GPU, crop and flip made there (``data_on_device = true``; ``oodbench train --nproc 1``),
  and without (``false``: preprocessed on the host, copied per batch). One process trains 1,
  1 and 2 epochs; the epoch time is the 2-epoch training's seconds minus the second 1-epoch
  training's (the first warms cuDNN and the allocator up).
- ``ddp-nproc2``: ``oodbench train --nproc 2``: nccl DistributedDataParallel with two GPUs;
  with one, the refusal it must give (one GPU per process).
- ``detector``: ``oodbench.Detector`` (knn, and odin's input gradients) on its default
  device (CUDA when present): fit, score, save, load, same scores.
- ``matrix``: ``oodbench run --device auto``: one-epoch trainings of the recipe's
  objectives (the last in float16 autocast with a GradScaler, the others bfloat16), with
  ``data_on_device = "auto"`` (decided from the free GPU memory), every scorer, the OOD sets
  present (at most two from the catalogue), synthetic noise and a 64-image image list
  (streamed: the pinned data-loader path); its metrics summary, and the manifest's device,
  CUDA version and extraction batch ("auto": sized from the free GPU memory).
- ``ray-gpu-check`` / ``ray-run``: the Ray executor refusing a CUDA benchmark whose jobs ask
  for no GPU, then a run whose jobs ask for one.
- ``tests-cuda`` / ``tests-suite``: pytest with CUDA visible, first the test files that
  mention CUDA, then the rest in the time left (``-n auto`` where pytest-xdist is
  installed), with passed / failed counts.

``--dry-run`` runs the same steps on the CPU at tiny sizes to check the plumbing: fmnist cut
to 320 train / 160 test images (and MNIST to 160) in a temporary data root, one epoch, the
tests of one file collected and two of them run (pytest in subprocesses, the command line in
this process: a process start would cost more than the work); the Ray run only validates its
config there
(a ``--dry-run`` job graph), and ``ddp-nproc2`` and ``ray-gpu-check`` (CUDA-only refusals)
are skipped. It writes the JSON to a temporary file unless ``--out`` is given, never to
results/. Each step's output goes to ``--logs`` (default: a temporary folder), the rest of
its files are removed at the end. Exits 1 when a step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.util
import io
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "gpu-check.json"
LIST_IMAGES = 64  # images of the streamed image-list OOD set
TAIL = 3000  # characters of a failed step's output kept in the JSON
TEST_RESERVE = 60.0  # seconds the steps before the tests leave them at least
MARGIN = 25.0  # seconds the tests leave: an interrupted pytest's exit, writing the JSON
OODBENCH = [sys.executable, "-m", "oodbench"]
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU check and its CPU dry run."""

    dry: bool
    device: str  # the device of every training and pass
    base: str  # the benchmark the generated ones extend
    id_set: str
    catalogue_ood: int  # catalogue OOD sets of ``base`` used in the matrix, at most
    noise: bool  # add synthetic noise to the matrix's OOD sets
    scorers: str | list[str]  # the matrix's
    detector_images: int


GPU = Mode(False, "cuda", "cifar10-gpu", "cifar10", 2, True, "all", 512)
# one scorer of each group (the plots of all of them alone would take 20 s on 2 cores)
DRY = Mode(True, "cpu", "fmnist", "fashion-mnist", 1, False,
           ["msp", "knn", "odin"], 32)
DRY_SIZES = {"train": 320, "test": 160, "ood": 160}


@dataclass
class Step:
    """One step of the check, as the JSON records it."""

    name: str
    status: str = "pending"  # ok, failed, timeout, partial (tests cut by the budget), skipped
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    log: str = ""


class Failed(Exception):
    """A step's check did not hold; the message says which."""


class Check:
    """The steps, their shared budget and work folders, and the results they gather."""

    def __init__(self, mode: Mode, data_root: Path | None, work: Path, logs: Path,
                 budget: float) -> None:
        self.mode = mode
        self.source_root = data_root
        self.work = work
        self.logs = logs
        self.deadline = time.monotonic() + budget
        self.budget = budget
        self.steps: list[Step] = []
        self.results: dict[str, Any] = {}
        self.config = work / "benchmarks.toml"
        self.runs = work / "runs"
        self.data_root = work / "data"  # the source root's entries as links, plus the list set
        self.available: dict[str, dict[str, Any]] = {}
        self.until = 0.0  # the running step's deadline (time.monotonic)

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def step(self, name: str, fn: Callable[[Step], None], cap: float,
             needs: tuple[str, ...] = ()) -> Step:
        """Run ``fn`` as step ``name`` (``cap``: its own time limit), unless a step it
        ``needs`` did not succeed or the budget is spent."""
        blocked = [s.name for s in self.steps if s.name in needs and s.status != "ok"]
        limit = min(cap, self.left() - (MARGIN if name.startswith("tests") else TEST_RESERVE))
        step = Step(name, detail={"time_limit_s": round(limit, 1)})
        self.steps.append(step)
        if blocked:
            step.status, step.error = "skipped", f"needs {', '.join(blocked)}"
        elif limit < 5:
            step.status, step.error = "timeout", "no time left in the budget"
        else:
            start = time.monotonic()
            self.until = start + limit
            try:
                fn(step)
                if step.status == "pending":
                    step.status = "ok"
            except subprocess.TimeoutExpired:
                step.status, step.error = "timeout", f"over its {limit:.0f} s limit"
            except Exception as e:  # record any failure and go on with the next step
                step.status, step.error = "failed", f"{type(e).__name__}: {e}"
            step.seconds = round(time.monotonic() - start, 2)
        print(f"[gpu-check] {name}: {step.status} ({step.seconds:.1f} s)"
              + (f" {step.error.splitlines()[0]}" if step.error else ""), flush=True)
        return step

    def command(self, step: Step, args: list[str]) -> tuple[int, str]:
        """Run ``args`` within the step's time limit, its output into the step's log; (exit
        status, output). Over the limit it is interrupted (SIGINT, as Ctrl-C: pytest still
        prints its summary), then killed; a ``TimeoutExpired`` except for the tests."""
        log = self.logs / f"{step.name}.log"
        step.command, step.log = args, str(log)
        env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
        timed_out = False
        with log.open("w") as out:
            proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
            try:
                proc.wait(timeout=max(1.0, self.until - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        text = log.read_text(errors="replace")
        if timed_out:
            step.detail["interrupted"] = True
            if not step.name.startswith("tests"):
                raise subprocess.TimeoutExpired(args, 0, text)
        return proc.returncode, text

    def cli(self, step: Step, args: list[str]) -> tuple[int, str]:
        """Run ``oodbench ARGS``: (exit status, output). A subprocess, except in the dry run,
        which calls the command line's ``main`` in this process: each process start (some
        5 s of imports on two busy cores) would be most of its time."""
        if not self.mode.dry:
            return self.command(step, [*OODBENCH, *args])
        from oodbench.cli import main

        log = self.logs / f"{step.name}.log"
        step.command, step.log = [*OODBENCH, *args], str(log)
        step.detail["in_process"] = True
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main(args)
            except SystemExit as e:  # argparse's errors
                code = e.code if isinstance(e.code, int) else 1
        log.write_text(out.getvalue())
        return code, out.getvalue()

    def cli_ok(self, step: Step, args: list[str]) -> str:
        """Run ``oodbench ARGS``; a failure (with the output's tail) unless it exits 0."""
        code, text = self.cli(step, args)
        if code != 0:
            raise Failed(f"exit status {code}: ...{text[-TAIL:]}")
        return text

    def common(self, bench: str) -> list[str]:
        """--config, --benchmark, --runs-dir and --data-root of a generated benchmark."""
        return ["--config", str(self.config), "--benchmark", bench, "--runs-dir",
                str(self.runs), "--data-root", str(self.data_root)]


# ------------------------------------------------------------------ configs


def _toml(value: Any) -> str:
    """A TOML value (strings, numbers, booleans, lists and inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def _tables(benches: dict[str, dict[str, Any]]) -> str:
    """``[benchmarks.NAME]`` tables of ``benches``' keys."""
    return "\n".join(f"[benchmarks.{name}]\n" + "".join(f"{k} = {_toml(v)}\n"
                                                       for k, v in keys.items())
                     for name, keys in benches.items())


def ood_sets(check: Check) -> list[dict[str, str]]:
    """The matrix's OOD sets: at most ``catalogue_ood`` of the base benchmark's that are
    present (in memory before image lists, which decode on every pass), noise, the list."""
    from oodbench.check import load_benchmark

    present = [o for o in load_benchmark(check.mode.base).ood
               if check.available.get(o.name, {}).get("available") and not o.imglist
               and "noise" not in o.name]
    present.sort(key=lambda o: "image list" in check.available[o.name]["detail"])
    sets = [{"name": o.name, "group": o.group} for o in present[: check.mode.catalogue_ood]]
    if check.mode.noise:
        sets.append({"name": "gaussian-noise", "group": "sanity"})
    return [*sets, {"name": "gpucheck-list", "group": "extra", "imglist": "gpucheck/list.txt",
                    "images": "gpucheck/images"}]


def write_config(check: Check) -> dict[str, dict[str, Any]]:
    """The packaged benchmarks.toml (``extends`` reads the same file) and the check's own
    benchmarks after it; returns those."""
    from oodbench.check import load_benchmark
    from oodbench.config import DEFAULT_CONFIG
    from oodbench.objectives import create_objective

    base = check.mode.base
    ce = {"objective": "ce"}

    def from_start(objective: str, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the objective's own term on from the first step (a warm-up after
        the check's one epoch would make it cross-entropy, which the config refuses)."""
        start = create_objective(objective, **params).term_start()
        return params | ({start[0]: 0.0} if start else {})

    # the recipe's trainings, the last in float16 (autocast + GradScaler)
    recipe = [{"name": t.name, "objective": t.objective,
               "params": from_start(t.objective, t.params)}
              | ({"init": t.init} if t.init else {}) for t in load_benchmark(base).trainings]
    recipe[-1]["train"] = {"amp_dtype": "float16"}
    # warmup's other lr keeps it from being the same checkpoint as one (reused, not trained)
    epochs = [ce | {"name": "warmup", "train": {"lr": 0.05}}, ce | {"name": "one"},
              ce | {"name": "two", "train": {"epochs": 2}}]
    one = {"extends": base, "val_ood": [], "ablate": [], "train": {"epochs": 1}}
    small = one | {"trainings": [ce | {"name": "ce"}], "scorers": ["msp", "energy", "knn"]}
    sets = ood_sets(check)

    def gpus(n: int) -> dict[str, dict[str, int]]:
        return {"train": {"num_gpus": n, "num_cpus": 2}, "eval": {"num_gpus": n, "num_cpus": 2}}

    benches: dict[str, dict[str, Any]] = {
        "gpucheck-resident": one | {"data_on_device": True, "trainings": epochs},
        "gpucheck-host": one | {"data_on_device": False, "trainings": epochs},
        "gpucheck-ddp": small,
        "gpucheck-matrix": one | {"ood": sets, "trainings": recipe,
                                  "data_on_device": "auto", "scorers": check.mode.scorers},
        "gpucheck-ray-nogpu": small | {"ood": sets[-1:], "resources": gpus(0)},
        "gpucheck-ray": small | {"ood": sets[-1:], "resources": gpus(1)},
    }
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    check.config.write_text(f"{text}\n\n# ---- generated by benchmarks/gpu_check.py\n\n"
                            + _tables(benches))
    return benches


# ------------------------------------------------------------------ data


def tiny_root(folder: Path) -> Path:
    """The dry run's data root: fmnist and MNIST cut to ``DRY_SIZES``, as .npz files."""
    import numpy as np

    from oodbench.data import load_dataset

    for name, split, n in (("fashion-mnist", "train", DRY_SIZES["train"]),
                           ("fashion-mnist", "test", DRY_SIZES["test"]),
                           ("mnist", "test", DRY_SIZES["ood"])):
        arr = load_dataset(name, split)
        (folder / name).mkdir(parents=True, exist_ok=True)
        np.savez(folder / name / f"{split}.npz", images=arr.images[:n], labels=arr.labels[:n])
    return folder


def link_root(check: Check) -> None:
    """``check.data_root``: a link to every entry of the source root, and ``gpucheck/``, an
    image list of ``LIST_IMAGES`` random PNGs at the base benchmark's size."""
    import numpy as np
    from PIL import Image

    from oodbench.check import load_benchmark

    root = check.data_root
    root.mkdir(parents=True, exist_ok=True)
    if check.source_root is not None:
        for entry in check.source_root.iterdir():
            if entry.name != "gpucheck":
                (root / entry.name).symlink_to(entry.resolve())
    bench = load_benchmark(check.mode.base)
    images = root / "gpucheck" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(LIST_IMAGES):
        pixels = rng.integers(0, 256, (bench.image_size, bench.image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
        lines.append(f"{i:03d}.png 0")
    (root / "gpucheck" / "list.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ steps


def env_info(check: Check) -> Callable[[Step], None]:
    """The step recording the device, versions and cores (a CUDA GPU required)."""
    def run(step: Step) -> None:
        import torch

        from oodbench.provenance import code_version

        info: dict[str, Any] = {
            "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
            else None, "cuda_available": torch.cuda.is_available(),
            "gpus": torch.cuda.device_count(), "cores": os.cpu_count(),
            "xdist": importlib.util.find_spec("xdist") is not None,
            "ray": importlib.util.find_spec("ray") is not None,
            "git_commit": code_version().get("git_commit"),
        }
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            info |= {"device_name": torch.cuda.get_device_name(0),
                     "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                     "bf16_supported": torch.cuda.is_bf16_supported(),
                     "memory_gib": round(total / 2**30, 1),
                     "free_memory_gib": round(free / 2**30, 1)}
        else:
            info["device_name"] = platform.processor() or "cpu"
        step.detail |= info
        check.results["env"] = info
        if not check.mode.dry and not info["cuda_available"]:
            raise Failed("torch.cuda.is_available() is False: this check needs a CUDA GPU "
                         "(--dry-run checks its plumbing on the CPU)")

    return run


def data_check(check: Check) -> Callable[[Step], None]:
    """The step finding the ID and OOD sets, then writing the data root and the config."""
    def run(step: Step) -> None:
        from oodbench.check import load_benchmark
        from oodbench.data import dataset_status

        root, mode = check.source_root, check.mode

        def status(name: str, split: str) -> dict[str, Any]:
            ok, where = dataset_status(name, split, root)
            return {"available": ok, "detail": where}

        id_splits = {s: status(mode.id_set, s) for s in ("train", "test")}
        check.available = {o.name: status(o.name, "test")
                           for o in load_benchmark(mode.base).ood if not o.imglist}
        step.detail |= {"data_root": str(root), "id_set": id_splits,
                        "ood_present": sorted(n for n, d in check.available.items()
                                              if d["available"])}
        missing = [s for s, d in id_splits.items() if not d["available"]]
        if missing:
            raise Failed(f"{mode.id_set} {'/'.join(missing)} not found: "
                         + "; ".join(id_splits[s]["detail"] for s in missing))
        link_root(check)
        step.detail["benchmarks"] = list(write_config(check))
        step.detail["config"] = str(check.config)

    return run


def _metas(check: Check, bench: str) -> dict[str, dict[str, Any]]:
    """Every checkpoint's meta of ``bench`` under the runs folder, by training."""
    from oodbench.weights import read_checkpoint

    return {meta["training"]: meta for meta in
            (read_checkpoint(p)[1] for p in sorted((check.runs / bench).glob("*.safetensors")))}


def epoch_time(check: Check, resident: bool) -> Callable[[Step], None]:
    """The step timing an epoch with the training set on the device, or on the host."""
    bench = "gpucheck-resident" if resident else "gpucheck-host"

    def run(step: Step) -> None:
        nproc = ["--nproc", "1"] if resident else []  # the one-process path of --nproc
        check.cli_ok(step, ["train", *check.common(bench), *nproc, "--device",
                            check.mode.device])
        stats = {t: m["train_stats"] for t, m in _metas(check, bench).items()}
        if set(stats) != {"warmup", "one", "two"}:
            raise Failed(f"expected the checkpoints warmup, one, two; found {sorted(stats)}")
        epoch = stats["two"]["seconds"] - stats["one"]["seconds"]
        step.detail |= {"epoch_seconds": round(epoch, 3),
                        "train_seconds": {t: round(s["seconds"], 3) for t, s in stats.items()},
                        "images_per_s_two_epochs": round(stats["two"]["images_per_s"], 1),
                        "data_on_device": resident}
        check.results.setdefault("epoch_times", {})["resident" if resident else "host"] = \
            step.detail["epoch_seconds"]

    return run


def ddp(check: Check) -> Callable[[Step], None]:
    """The step training with two processes (or seeing it refused with one GPU)."""
    def run(step: Step) -> None:
        if check.mode.dry:
            step.status, step.error = "skipped", "dry run: two CPU processes would take longer"
            return
        import torch

        code, text = check.cli(step, ["train", *check.common("gpucheck-ddp"), "--nproc", "2",
                                      "--device", "cuda"])
        gpus = torch.cuda.device_count()
        step.detail["gpus"] = gpus
        if gpus >= 2:
            meta = _metas(check, "gpucheck-ddp").get("ce")
            if code != 0 or meta is None or meta["world_size"] != 2:
                raise Failed(f"exit status {code}; two-process training expected: "
                             f"...{text[-TAIL:]}")
            step.detail |= {"world_size": meta["world_size"], "test_acc": meta["test_acc"]}
        elif code == 0 or "CUDA devices" not in text:
            raise Failed(f"exit status {code}: with one GPU, --nproc 2 must be refused naming "
                         f"the CUDA devices: ...{text[-TAIL:]}")
        else:
            step.detail["refused_as_expected"] = text.strip().splitlines()[-1][-300:]

    return run


def detector(check: Check) -> Callable[[Step], None]:
    """The step fitting, scoring, saving and loading ``oodbench.Detector``s."""
    def run(step: Step) -> None:
        import numpy as np
        import torch
        import torchvision
        from torch.utils.data import TensorDataset

        import oodbench

        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None)
        net.fc = torch.nn.Linear(512, 10)
        preprocess = oodbench.adapt(net).preprocess_config.preprocess(32)
        n = check.mode.detector_images
        pixels = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        ids = TensorDataset(preprocess(pixels), torch.arange(n) % 10)
        x = ids.tensors[0][:16]
        for name, params in (("knn", {"k": 5}), ("odin", {})):
            det = oodbench.Detector(net, name, **params).fit(ids)
            scores = det(x)
            folder = check.work / f"detector-{name}"
            det.save(folder)
            again = oodbench.Detector.load(folder, net)(x)
            # bit-identical on the CPU; cuDNN may pick other kernels for the reloaded copy
            step.detail[name] = {"device": str(det.device),
                                 "finite": bool(np.isfinite(scores).all()),
                                 "reloaded_max_abs_diff": float(np.abs(again - scores).max())}
            if not (np.isfinite(scores).all() and np.allclose(again, scores, rtol=1e-4,
                                                              atol=1e-6)):
                raise Failed(f"{name}: {step.detail[name]}")
            if not check.mode.dry and det.device.type != "cuda":
                raise Failed(f"{name}: the default device was {det.device}, not CUDA")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the steps after it size batches from the free memory

    return run


def _metrics_summary(path: Path) -> dict[str, Any]:
    """Per scorer, the mean AUROC and FPR95 over trainings and OOD sets; NaN cells."""
    by: dict[str, dict[str, list[float]]] = {}
    nan = 0
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        if not row["scorer"]:
            continue
        value = float(row["value"] or "nan")
        if math.isnan(value):
            nan += 1
            continue
        by.setdefault(row["scorer"], {}).setdefault(row["metric"], []).append(value)
    return {"rows": len(rows), "nan_values": nan,
            "trainings": sorted({r["training"] for r in rows}),
            "ood_sets": sorted({r["ood_set"] for r in rows if r["ood_set"]}),
            "scorers": sorted(by),
            "mean_by_scorer": {s: {m: round(statistics.fmean(v), 4) for m, v in ms.items()
                                   if m in ("auroc", "fpr95")} for s, ms in by.items()}}


def matrix(check: Check) -> Callable[[Step], None]:
    """The step running the training x scorer matrix and checking its results."""
    def run(step: Step) -> None:
        from oodbench.check import load_benchmark

        out = check.work / "results"
        check.cli_ok(step, ["run", *check.common("gpucheck-matrix"), "--out", str(out),
                            "--device", "auto"])
        folder = out / "gpucheck-matrix"
        summary = _metrics_summary(folder / "metrics.csv")
        manifest = json.loads((folder / "manifest.json").read_text())
        amp = {t: m["train"]["amp_dtype"] for t, m in _metas(check, "gpucheck-matrix").items()}
        summary |= {"device": manifest["device"], "runtime_cuda": manifest["runtime"]["cuda"],
                    "extraction": manifest["extraction"], "amp_dtype": amp,
                    "skipped_ood_sets": list(manifest["skipped_ood_sets"])}
        step.detail |= summary
        check.results["matrix"] = summary
        bench = load_benchmark("gpucheck-matrix", check.config)
        problems = []
        if set(summary["scorers"]) != set(bench.scorers):
            problems.append(f"scored {summary['scorers']}, not {list(bench.scorers)}")
        if len(summary["trainings"]) != len(bench.trainings):
            problems.append(f"trainings {summary['trainings']}")
        if amp.get(bench.trainings[-1].name) != "float16":
            problems.append(f"amp_dtype by training {amp}")
        if "gpucheck-list" not in summary["ood_sets"]:
            problems.append("the image-list set was not scored")
        if summary["nan_values"]:
            problems.append(f"{summary['nan_values']} NaN metric values")
        if not check.mode.dry:
            setting = next(iter(manifest["extraction"].values()), {})
            if not manifest["device"].startswith("cuda") or not manifest["runtime"]["cuda"]:
                problems.append(f"manifest device {manifest['device']!r}, cuda "
                                f"{manifest['runtime']['cuda']!r}")
            if setting.get("setting") != "auto" or not setting.get("amp"):
                problems.append(f"extraction {manifest['extraction']}")
        if problems:
            raise Failed("; ".join(problems))

    return run


def ray_check(check: Check) -> Callable[[Step], None]:
    """The step expecting the Ray executor to refuse GPU-less jobs of a CUDA benchmark."""
    def run(step: Step) -> None:
        if check.mode.dry:
            step.status, step.error = "skipped", "dry run: the refusal is for CUDA benchmarks"
            return
        code, text = check.cli(step, ["run", *check.common("gpucheck-ray-nogpu"), "--executor",
                                      "ray", "--out", str(check.work / "ray-nogpu")])
        if code == 0 or "num_gpus is 0" not in text:
            raise Failed(f"exit status {code}: expected the refusal of num_gpus = 0 on CUDA: "
                         f"...{text[-TAIL:]}")
        step.detail["refused_as_expected"] = True

    return run


def ray_run(check: Check) -> Callable[[Step], None]:
    """The step running a small benchmark with the Ray executor, one GPU per job."""
    def run(step: Step) -> None:
        if check.mode.dry:
            check.cli_ok(step, ["run", *check.common("gpucheck-ray"), "--executor", "ray",
                                "--dry-run"])
            step.detail["note"] = "dry run: the job graph only (starting Ray takes too long)"
            return
        if importlib.util.find_spec("ray") is None:
            raise Failed("ray is not installed (pip install 'oodbench[ray]')")
        out = check.work / "ray-results"
        check.cli_ok(step, ["run", *check.common("gpucheck-ray"), "--executor", "ray",
                            "--out", str(out)])
        manifest = json.loads((out / "gpucheck-ray" / "manifest.json").read_text())
        step.detail |= {"device": manifest["device"],
                        "rows": _metrics_summary(out / "gpucheck-ray" / "metrics.csv")["rows"]}

    return run


_RESULT = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def pytest_counts(text: str) -> dict[str, Any]:
    """Counts of a ``pytest -v -rN`` output: from its last summary line when it has one, else
    from the per-test lines (a run interrupted before its summary)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    failed = []
    for line in text.splitlines():
        match = _RESULT.search(line)
        if match and "::" in line:
            word = {"XFAIL": "xfailed", "XPASS": "xpassed"}.get(match[1], match[1].lower())
            counts[word] += 1
            if word in ("failed", "error"):
                failed.append(next(t for t in line.split() if "::" in t))
    summaries = [ln for ln in text.splitlines() if ln.startswith("=") and " in " in ln
                 and _SUMMARY.search(ln)]
    if summaries:
        found = {("error" if w.startswith("error") else w): int(n)
                 for n, w in _SUMMARY.findall(summaries[-1])}
        counts = {k: found.get(k, 0) for k in OUTCOMES}
        counts["summary"] = summaries[-1].strip("= ")
    collected = re.search(r"(\d+) tests? collected", text)
    per_file = re.findall(r"^\S+\.py: (\d+)$", text, re.MULTILINE)  # pytest -q --collect-only
    if collected or per_file:
        counts["collected"] = int(collected[1]) if collected else sum(map(int, per_file))
    return counts | {"failed_tests": failed[:30]}


def cuda_test_files() -> list[str]:
    """The test files that mention CUDA (they branch on it), this check's own aside."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if p.name != "test_gpu_check.py" and "cuda" in p.read_text().lower())


def tests(check: Check, cuda_files: bool) -> Callable[[Step], None]:
    """The step running pytest: the files that mention CUDA, or all the others."""
    def run(step: Step) -> None:
        files = cuda_test_files()
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rN"]
        if check.mode.dry:
            one = "tests/test_metrics.py"
            args = ([*base, "--collect-only", "-q", one] if cuda_files
                    else [*base, "-v", one, "-k", "perfect_separation or reversed"])
        else:
            if cuda_files:  # at most half the time left: the rest of the suite gets the other
                check.until = min(check.until, time.monotonic() + (check.left() - MARGIN) / 2)
            parallel = ["-n", "auto"] if importlib.util.find_spec("xdist") else []
            rest = [f"--ignore={f}" for f in files] + ["--ignore=tests/test_gpu_check.py",
                                                       "tests"]
            args = [*base, "-v", *parallel, *(files if cuda_files else rest)]
        step.detail["files"] = files if cuda_files else "tests/ without those files"
        code, text = check.command(step, args)
        counts = pytest_counts(text)
        step.detail |= counts
        check.results.setdefault("tests", {})["cuda_files" if cuda_files else "suite"] = \
            counts | {"exit_status": code, "interrupted": step.detail.get("interrupted", False)}
        interrupted = step.detail.get("interrupted", False)
        if counts["failed"] or counts["error"] or (code not in (0, 5) and not interrupted):
            raise Failed(f"exit status {code}; {counts.get('summary', counts)}")
        if interrupted:
            step.status = "partial"

    return run


# ------------------------------------------------------------------ main


def run_check(check: Check) -> dict[str, Any]:
    """Every step in order; the JSON's content."""
    started = datetime.datetime.now(datetime.UTC)
    check.step("env", env_info(check), 30)
    check.step("data", data_check(check), 60, ("env",))
    data = ("env", "data")
    check.step("epoch-resident", epoch_time(check, True), 150, data)
    check.step("epoch-host", epoch_time(check, False), 150, data)
    check.step("ddp-nproc2", ddp(check), 90, data)
    check.step("detector", detector(check), 60, ("env",))
    check.step("matrix", matrix(check), 240, data)
    check.step("ray-gpu-check", ray_check(check), 60, data)
    check.step("ray-run", ray_run(check), 120, data)
    check.step("tests-cuda", tests(check, True), 300, ("env",))
    check.step("tests-suite", tests(check, False), 600, ("env",))
    times = check.results.get("epoch_times", {})
    if {"resident", "host"} <= set(times) and times["resident"] > 0:
        times["ratio_host_over_resident"] = round(times["host"] / times["resident"], 3)
    failed = [s.name for s in check.steps if s.status in ("failed", "timeout")]
    finished = datetime.datetime.now(datetime.UTC)
    env = check.results.get("env", {})
    return {
        "mode": "dry-run" if check.mode.dry else "gpu", "ok": not failed, "failed": failed,
        "device": env.get("device_name"), "torch": env.get("torch"), "cuda": env.get("cuda"),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 1),
        "budget_seconds": check.budget, "data_root": str(check.source_root),
        "epoch_times": times, "tests": check.results.get("tests", {}),
        "matrix": check.results.get("matrix", {}), "env": env,
        "steps": [asdict(s) for s in check.steps], "logs": str(check.logs),
        "command": " ".join(["bash benchmarks/gpu_check.sh", *sys.argv[1:]]),
    }


def default_root() -> Path | None:
    """$OODBENCH_DATA, else the checkout's shared/data, else none (the catalogue's other
    places: torchvision's cache)."""
    if os.environ.get("OODBENCH_DATA"):
        return Path(os.environ["OODBENCH_DATA"])
    shared = ROOT / "shared" / "data"
    return shared if shared.is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on the CPU at tiny sizes (the plumbing); the JSON "
                             "goes to a temp file unless --out is given")
    parser.add_argument("--data-root", type=Path, help="datasets (default: $OODBENCH_DATA, "
                        "else shared/data of the checkout)")
    parser.add_argument("--out", type=Path, help="the JSON (default: results/gpu-check.json; "
                        "with --dry-run a temp file)")
    parser.add_argument("--logs", type=Path, help="each step's output (default: a temp folder)")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for every step together (default 450)")
    args = parser.parse_args()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="oodbench-gpu-check-logs-"))
    out = args.out or (logs / "gpu-check.json" if args.dry_run else DEFAULT_OUT)
    if args.dry_run and out.resolve().is_relative_to((ROOT / "results").resolve()):
        parser.error("--dry-run never writes to results/: give --out another path")
    logs.mkdir(parents=True, exist_ok=True)
    mode = DRY if args.dry_run else GPU
    if args.dry_run:  # tiny work: one thread is faster than two fighting for busy cores
        import torch

        torch.set_num_threads(1)
    # checkpoints, caches, configs and results of the steps: removed at the end
    with tempfile.TemporaryDirectory(prefix="oodbench-gpu-check-") as tmp:
        work = Path(tmp)
        root = (tiny_root(work / "tiny-data") if args.dry_run
                else args.data_root or default_root())
        result = run_check(Check(mode, root, work, logs, args.budget))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"[gpu-check] {'ok' if result['ok'] else 'FAILED: ' + ', '.join(result['failed'])} "
          f"in {result['seconds']:.0f} s; written: {out}")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
