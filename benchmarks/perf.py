"""Performance figures of oodbench's evaluation path, each printed as one line.

    python -m benchmarks.perf [--quick] [--only floor,overhead,...] [--benchmark fmnist]
        [--data-root DIR] [--device auto] [--threads N] [--repeats N] [--out DIR]

Every ratio compares two things timed in the same process:

- ``floor``: ``oodbench.evaluation.score_model`` (extraction + msp, energy, react, ash, knn,
  mahalanobis + metrics, with a fresh feature cache) over a bare ``torch.inference_mode``
  ``model(x)`` loop over the same images (ID train + ID test + OOD sets), preprocessed the same
  way in the same batches, with the same (channels-last) model. Target <= 1.25.
- ``overhead``: the six scorers (fit + score of every set, from extracted features) over the
  extraction. Target <= 0.10.
- ``pytorch-ood``: pytorch-ood's six detectors used as its documentation shows (detector objects
  around the model, ``fit(loader)``, ``detector(x)`` per batch, ``OODMetrics``) over
  ``score_model``. Target >= 5.
- ``pytorch-ood-all``: the same for every scorer the two libraries share (the 17 of
  ``benchmarks/crosscheck_pytorch_ood.py``, whose mapping to pytorch-ood's detectors and their
  settings it uses): pytorch-ood runs each detector with its own passes over the data,
  oodbench one shared extraction for all (``score_model`` with the 17). The model's head is
  set to the nearest class mean of its fresh features, as pytorch-ood's SHE needs every class
  to have correctly classified ID-train samples. Target >= 10.
- ``knn``: oodbench's knn scorer (fit + score) on 50,000 x 512 random float32 ID-train features
  and 10,000 queries, k = 50, on the CPU, with its chunked torch backend and, when faiss-cpu
  is installed, its faiss backend. Target <= 3 s.
- ``bgnorm``: BG-norm's training time per step over CE's (``benchmarks/train_speed.py``).
  Target <= 1.10.
- ``bf16``: CE training time per step in float32 over bfloat16 autocast on the CPU
  (``train.cpu_amp``), no target; skipped on a CPU without native bfloat16 or on CUDA.
- ``batch``: extraction speed (images/s, ``forward_features`` over the ID test set) at batch
  sizes 32 to 512, beside the size ``extract_batch = "auto"`` picks; no target.
- ``evaluate``: ``oodbench.evaluate`` of an adapted model (timm resnet18, fresh weights, at
  the benchmark's image size; ID set whole, OOD sets as cut) over bare passes of the same
  model over the same images plus the six scorers' fit + score. Target <= 1.10.
- ``ray``: the ray executor's wall time on a 1-CPU local Ray cluster over the local
  executor's with one torch thread (tiny matrix, 2 trainings x 2 seeds; target <= 1.3, or
  <= 10 s more), and its speed-up with 2 workers over 1 on 4 trainings (target >= 1.6);
  ``benchmarks/cluster.py``.
- ``growth``: the cost of one OOD set (extraction + scoring + metrics) at 1x, 2x and 4x its
  size; and the peak memory of knn and mahalanobis (fit + score) as the ID-train features grow
  1x, 2x and 4x, each measured in a fresh process (``ru_maxrss``).

The model is the benchmark's architecture, freshly initialised (seed 0): speed does not depend
on the weights, so nothing is trained. A full run writes ``results/perf.md`` and
``results/perf.json``; ``--quick`` (tiny sizes, a smoke test, not the figures), ``--only`` and
``--repeats`` write to a new temporary folder unless ``--out`` is given. A run into a folder
that already has a perf.json keeps the figures it does not re-measure (``--only floor --out
results`` re-measures the floor, keeps the rest; perf.md then says per row when, at which
commit, it was measured, and perf.json's ``figures`` also by which command). Not a test:
timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oodbench.check import load_benchmark
from oodbench.config import Benchmark
from oodbench.context import EvalContext
from oodbench.data import ImageArray, Preprocess
from oodbench.device import resolve_device
from oodbench.evaluation import score_model
from oodbench.extract import (
    FeatureCache,
    batches,
    forward_features,
    prepare_model,
    resolve_batch_size,
)
from oodbench.fileio import atomic_write_bytes
from oodbench.metrics import ood_metrics
from oodbench.models import OODNet, create_model
from oodbench.oodsets import OODSets, load_ood_sets
from oodbench.provenance import code_version
from oodbench.scoring import Features, Head, create_scorer, fit_and_score
from oodbench.splits import IDSplits, load_id_splits

if TYPE_CHECKING:
    from benchmarks.crosscheck_pytorch_ood import Wrapped

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("floor", "overhead", "pytorch-ood", "pytorch-ood-all", "knn", "bgnorm", "bf16",
           "batch", "growth", "evaluate", "ray")
# the figures a step of FIGURES measures, where they are not the step's own
STEP_FIGURES = {"growth": ("growth", "memory"), "ray": ("ray-overhead", "ray-speedup")}
SIX = ("msp", "energy", "react", "ash", "knn", "mahalanobis")
MEMORY_SCORERS = ("knn", "mahalanobis")
FACTORS = (1, 2, 4)
KNN_K = 50
CKPT_HASH = "perf-untrained-seed0"
INSTALL_HINT = ("pytorch-ood is not importable; install it without touching torch: "
                ".venv/bin/pip install --no-deps pytorch-ood")


@dataclass(frozen=True)
class Sizes:
    """How much data each figure uses; ``None`` means the whole set."""

    id_train: int | None
    id_test: int | None
    ood: int | None
    knn_bank: int
    knn_queries: int
    knn_dim: int
    train_images: int
    memory_train: int
    memory_dim: int
    memory_queries: int
    repeats: int


FULL = Sizes(None, None, None, 50_000, 10_000, 512, 12_800, 20_000, 128, 10_000, 3)
QUICK = Sizes(2_000, 500, 500, 5_000, 1_000, 512, 512, 2_000, 32, 1_000, 1)


@dataclass(frozen=True)
class Setup:
    """The benchmark, a fresh model on its device, and the data every figure evaluates."""

    bench: Benchmark
    model: OODNet
    splits: IDSplits
    ood: OODSets
    device: torch.device
    sizes: Sizes
    data_root: str | None = None

    @property
    def preprocess(self) -> Preprocess:
        return self.splits.preprocess

    @property
    def arrays(self) -> list[ImageArray]:
        """ID train, ID test and the OOD sets: every array ``score_model`` extracts."""
        return [self.splits.train, self.splits.test, *self.ood.sets.values()]

    @property
    def head(self) -> Head:
        return Head(self.model.fc.weight.detach().float().cpu(),
                    self.model.fc.bias.detach().float().cpu())

    def params(self, scorer: str) -> dict[str, Any]:
        """The benchmark's parameters for ``scorer``."""
        return dict(self.bench.scorer_params.get(scorer, {}))

    def extract(self, arr: ImageArray) -> Features:
        return forward_features(self.model, arr, self.preprocess, self.device,
                                self.bench.extract_batch)


JSON_KEYS = {"floor": "floor_ratio", "overhead": "scorer_overhead",
             "pytorch-ood": "speedup_vs_pytorch_ood",
             "pytorch-ood-all": "speedup_vs_pytorch_ood_all", "knn": "knn_50k_seconds",
             "bgnorm": "bgnorm_train_overhead", "evaluate": "evaluate_ratio",
             "ray-overhead": "ray_overhead_ratio", "ray-speedup": "ray_speedup_2_workers"}
TARGETS: dict[str, tuple[str, float]] = {"floor": ("<=", 1.25), "overhead": ("<=", 0.10),
                                         "pytorch-ood": (">=", 5.0),
                                         "pytorch-ood-all": (">=", 10.0), "knn": ("<=", 3.0),
                                         "bgnorm": ("<=", 1.10), "evaluate": ("<=", 1.10),
                                         "ray-overhead": ("<=", 1.3), "ray-speedup": (">=", 1.6)}


@dataclass
class Figure:
    """One measured figure: its printed line and its row of perf.md / entry of perf.json."""

    name: str  # a key of TARGETS, or "growth" / "memory"
    label: str  # the figure column of the perf.md table
    value: float | None  # the headline number; None when skipped or not one number
    shown: str  # the value column of the perf.md table
    target: str
    met: bool | None  # None: skipped, or no pass / fail target
    line: str  # the line printed
    details: dict[str, Any] = field(default_factory=dict)
    # the run that measured it: date, git_commit, command, sizes (``main`` fills it in)
    measured: dict[str, Any] = field(default_factory=dict)


def _target(name: str) -> str:
    op, bound = TARGETS[name]
    return f"{op} {bound:g}"


def _met(name: str, value: float) -> bool:
    op, bound = TARGETS[name]
    return value <= bound if op == "<=" else value >= bound


def _verdict(name: str, value: float) -> str:
    return f"target {_target(name)}: {'met' if _met(name, value) else 'NOT met'}"


def _figure(name: str, label: str, value: float, line: str, details: dict[str, Any]) -> Figure:
    """A figure with a target, judged."""
    return Figure(name, label, value, f"{value:.3f}", _target(name), _met(name, value), line,
                  details)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, waiting for queued CUDA work on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _first(arr: ImageArray, n: int | None) -> ImageArray:
    """The first ``n`` images of ``arr`` (all when ``n`` is None)."""
    if n is None or n >= len(arr):
        return arr
    return ImageArray(arr.images[:n], arr.labels[:n], arr.name, arr.split, arr.source, arr.files)


def _tile(arr: ImageArray, times: int) -> ImageArray:
    """``arr`` repeated ``times`` times."""
    return ImageArray(np.tile(arr.images, (times, 1, 1, 1)), np.tile(arr.labels, times),
                      arr.name, arr.split, arr.source, arr.files)


def load_setup(bench: Benchmark, data_root: str | None, device: torch.device,
               sizes: Sizes) -> Setup:
    """Load the ID splits and OOD sets (cut to ``sizes``), build a seeded model and warm it up."""
    splits = load_id_splits(bench, data_root)
    splits = replace(splits, train=_first(splits.train, sizes.id_train),
                     test=_first(splits.test, sizes.id_test))
    ood = load_ood_sets(bench, data_root)
    for name, why in ood.skipped.items():
        print(f"skipped OOD set {name}: {why.splitlines()[0]}")
    ood = OODSets({n: _first(a, sizes.ood) for n, a in ood.sets.items()}, ood.groups, ood.skipped)
    torch.manual_seed(0)
    model = create_model(bench.model, bench.num_classes, bench.channels, **bench.model_kwargs())
    # the model as oodbench's passes prepare it (channels-last), so that the bare loop and
    # pytorch-ood run the same weights in the same layout; every figure uses the batch size
    # the pipeline would ("auto" resolved once, here)
    model, _ = prepare_model(model, device)
    if not isinstance(model, OODNet):  # pytorch-ood's wrapping (_model_parts) needs feature_map
        raise SystemExit(f"the figures time oodbench's own nets; {bench.model!r} is not one")
    bench = replace(bench, extract_batch=resolve_batch_size(bench.extract_batch, model,
                                                            splits.preprocess, device))
    with torch.inference_mode():  # first calls pick kernels and allocate buffers
        model(splits.preprocess(splits.train.images[: bench.extract_batch], device))
    return Setup(bench, model, splits, ood, device, sizes, data_root)


LABEL_POD = "speedup vs pytorch-ood: its time / oodbench's"


def bare_loop(s: Setup) -> None:
    """The floor: preprocess each batch and run ``model(x)``, nothing else."""
    with torch.inference_mode():
        for arr in s.arrays:
            for x in batches(arr, s.preprocess, s.device, s.bench.extract_batch, None, ""):
                s.model(x)


def oodbench_seconds(s: Setup, scorers: tuple[str, ...] = SIX) -> float:
    """Seconds of ``score_model`` with ``scorers`` and a fresh, empty feature cache."""
    with tempfile.TemporaryDirectory(prefix="oodbench-perf-cache-") as tmp:
        ctx = EvalContext(replace(s.bench, scorers=scorers), s.splits, s.ood, FeatureCache(tmp),
                          s.device)
        return _timed(lambda: score_model(ctx, s.model, CKPT_HASH, "perf", 0), s.device)


def evaluate_ratio(s: Setup) -> Figure:
    """(g) ``oodbench.evaluate`` of an adapted model (timm resnet18, fresh weights, at the
    benchmark's image size) over bare ``model(x)`` passes over the same images plus the six
    scorers' fit + score on its features; median of repeats. ``evaluate`` loads the whole ID
    set itself, so both sides use all of it, and the (cut) OOD sets are passed to it."""
    import timm

    from oodbench.adapters import adapt
    from oodbench.context import model_preprocess
    from oodbench.pipeline import evaluate

    torch.manual_seed(0)
    net = adapt(timm.create_model("resnet18", pretrained=False,
                                  num_classes=s.bench.num_classes)).eval()
    splits = load_id_splits(s.bench, s.data_root)
    preprocess = model_preprocess(net, s.bench, splits, s.bench.image_size)
    arrays = [splits.train, splits.test, *s.ood.sets.values()]
    ready, _ = prepare_model(net, s.device)
    batch = resolve_batch_size(s.bench.extract_batch, ready, preprocess, s.device)

    def bare() -> None:
        with torch.inference_mode():
            for arr in arrays:
                for x in batches(arr, preprocess, s.device, batch, None, ""):
                    ready(x)

    feats = [forward_features(net, a, preprocess, s.device, batch) for a in arrays]
    head = Head.from_linear(net.fc)
    sets = {a.name: f for a, f in zip(arrays[1:], feats[1:], strict=True)}

    def scoring() -> None:
        for name in SIX:
            fit_and_score(create_scorer(name, **s.params(name)), feats[0], head, sets)

    base, ours = [], []
    for _ in range(s.sizes.repeats):
        base.append(_timed(bare, s.device) + _timed(scoring, s.device))
        ours.append(_timed(lambda: evaluate(
            net, s.bench, ood=s.ood.sets, scorers=list(SIX), data_root=s.data_root,
            input_size=s.bench.image_size, extract_batch=batch, device=str(s.device)), s.device))
    ratio = statistics.median(ours) / statistics.median(base)
    n = sum(len(a) for a in arrays)
    line = (f"evaluate ratio: {ratio:.3f} = oodbench.evaluate (timm resnet18, adapted) "
            f"{statistics.median(ours):.2f} s / bare passes + six scorers "
            f"{statistics.median(base):.2f} s ({n:,} images at {preprocess.size} px, batch "
            f"{batch}, median of {len(base)}; {_verdict('evaluate', ratio)})")
    return _figure("evaluate", "evaluate() of an adapted timm model / bare passes + scoring",
                   ratio, line, {"images": n, "evaluate_seconds": ours, "base_seconds": base})


def floor_ratio(s: Setup) -> Figure:
    """(a) score_model over the bare inference loop, alternating the two, median of repeats."""
    bare, ours = [], []
    for _ in range(s.sizes.repeats):
        bare.append(_timed(lambda: bare_loop(s), s.device))
        ours.append(oodbench_seconds(s))
    ratio = statistics.median(ours) / statistics.median(bare)
    n = sum(len(a) for a in s.arrays)
    line = (f"floor ratio: {ratio:.3f} = oodbench evaluation {statistics.median(ours):.2f} s / "
            f"bare inference_mode loop {statistics.median(bare):.2f} s ({n:,} images, batch "
            f"{s.bench.extract_batch}, median of {len(bare)}; {_verdict('floor', ratio)})")
    return _figure("floor", "floor ratio: score_model / bare inference loop", ratio, line,
                   {"images": n, "oodbench_seconds": ours, "bare_seconds": bare})


def _scorer_seconds(s: Setup, train: Features, sets: dict[str, Features]) -> dict[str, float]:
    """Seconds of each of the six scorers to fit on ``train`` and score every set."""
    head = s.head
    out = {}
    for name in SIX:
        start = time.perf_counter()
        fit_and_score(create_scorer(name, **s.params(name)), train, head, sets)
        out[name] = time.perf_counter() - start
    return out


def scorer_overhead(s: Setup) -> Figure:
    """(b) the six scorers (fit + score of every set) over the extraction, median of repeats.
    With faiss installed (knn's "auto" backend uses it), knn is also timed with its torch
    backend, as an install without the extra would run it."""
    extraction, scoring, knn_torch = [], [], []
    per_scorer: dict[str, list[float]] = {name: [] for name in SIX}
    for _ in range(s.sizes.repeats):
        start = time.perf_counter()
        train, test = s.extract(s.splits.train), s.extract(s.splits.test)
        sets = {s.bench.id_dataset: test} | {n: s.extract(a) for n, a in s.ood.sets.items()}
        extraction.append(time.perf_counter() - start)
        seconds = _scorer_seconds(s, train, sets)
        for name, value in seconds.items():
            per_scorer[name].append(value)
        scoring.append(sum(seconds.values()))
        if _faiss_version():
            start = time.perf_counter()
            knn = create_scorer("knn", **s.params("knn") | {"backend": "torch"})
            fit_and_score(knn, train, s.head, sets)
            knn_torch.append(time.perf_counter() - start)
    ratio = statistics.median(scoring) / statistics.median(extraction)
    slowest = max(SIX, key=lambda n: statistics.median(per_scorer[n]))
    line = (f"scorer overhead: {ratio:.3f} = six scorers {statistics.median(scoring):.2f} s / "
            f"extraction {statistics.median(extraction):.2f} s (slowest: {slowest} "
            f"{statistics.median(per_scorer[slowest]):.2f} s; {_verdict('overhead', ratio)})")
    details: dict[str, Any] = {"extraction_seconds": extraction, "scorer_seconds": scoring,
                               "per_scorer_seconds": per_scorer}
    if knn_torch:
        without = (statistics.median(scoring) - statistics.median(per_scorer["knn"])
                   + statistics.median(knn_torch)) / statistics.median(extraction)
        details |= {"knn_torch_backend_seconds": knn_torch, "ratio_with_knn_torch": without}
        line += (f"; with knn's torch backend (no faiss): knn {statistics.median(knn_torch):.2f}"
                 f" s, ratio {without:.3f}")
    return _figure("overhead", "scorer overhead: six scorers / extraction", ratio, line, details)


class _Batches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One array as ``(x, y)`` batches indexed by slices, preprocessed as oodbench does."""

    def __init__(self, arr: ImageArray, preprocess: Preprocess, ood: bool) -> None:
        self.images = arr.images
        self.labels = torch.full((len(arr),), -1) if ood else torch.from_numpy(arr.labels)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess(self.images[rows]), self.labels[rows]


def _loader(arr: ImageArray, s: Setup, ood: bool = False) -> DataLoader:
    """A single-process loader of ``arr`` in oodbench's batches (OOD labels -1, as pytorch-ood
    expects)."""
    step = s.bench.extract_batch
    return DataLoader(_Batches(arr, s.preprocess, ood), batch_size=None,
                      sampler=[slice(i, i + step) for i in range(0, len(arr), step)])


def _model_parts(s: Setup) -> Wrapped:
    """The model as pytorch-ood's detectors wrap it: the whole model (logits), the pooled
    features as encoder, the pooled features as a B x D x 1 x 1 map as backbone (ReAct, ASH,
    SCALE), ``fc`` as head, and GradNorm's gradients of ``fc.weight`` through the model."""
    from benchmarks.crosscheck_pytorch_ood import Wrapped

    model = s.model

    def features(x: torch.Tensor) -> torch.Tensor:
        return model.feature_map(x).mean(dim=(2, 3))

    def pooled_map(x: torch.Tensor) -> torch.Tensor:
        return features(x)[:, :, None, None]

    return Wrapped(model, features, pooled_map, model.fc, model, "fc.weight")


def pytorch_ood_seconds(s: Setup, scorers: tuple[str, ...]) -> dict[str, float]:
    """Seconds for pytorch-ood to evaluate the detectors of ``scorers``, per detector.

    Each detector (``benchmarks.crosscheck_pytorch_ood``'s mapping, with oodbench's parameters)
    wraps the model (``_model_parts``), is fitted on the ID-train loader where it needs
    fitting, scores the ID test set once (reused for every OOD set) and each OOD set once,
    under ``torch.no_grad()``, and ``OODMetrics`` computes the metrics of each (ID test, OOD
    set) pair. sklearn's KNN gets as many jobs as torch has threads.
    """
    from pytorch_ood.metrics import OODMetrics

    from benchmarks.crosscheck_pytorch_ood import SHARED, pod_detector, pod_settings

    device, parts = s.device, _model_parts(s)
    params = {name: create_scorer(name, **s.params(name)).get_params() for name in SHARED}
    settings = pod_settings(s.model.fc.in_features, params)
    train, test = _loader(s.splits.train, s), _loader(s.splits.test, s)
    oods = [_loader(arr, s, ood=True) for arr in s.ood.sets.values()]
    id_labels = torch.from_numpy(s.splits.test.labels).to(device)

    def evaluate(name: str) -> None:
        detector = pod_detector(name, settings[name], parts)
        if name == "knn":
            detector.knn.set_params(n_jobs=torch.get_num_threads())
        with torch.no_grad():
            detector.to(device).fit(train)
            id_scores = torch.cat([detector(x) for x, _ in test])
            for loader in oods:
                metrics = OODMetrics()
                metrics.update(id_scores, id_labels)
                for x, y in loader:
                    metrics.update(detector(x), y.to(device))
                metrics.compute()

    return {name: _timed(lambda name=name: evaluate(name), device) for name in scorers}


HEAD_IMAGES = 5_000


def _class_mean_head(s: Setup) -> Setup:
    """``s`` with a copy of its model whose head is the nearest-class-mean classifier of its
    (fresh) features on the first ``HEAD_IMAGES`` ID-train images, so that every class has
    correctly classified training samples, which pytorch-ood's SHE needs (a fresh head can
    leave a class without any). Speed does not depend on the weights."""
    feats = s.extract(_first(s.splits.train, HEAD_IMAGES))
    classes = s.bench.num_classes
    counts = torch.bincount(feats.labels, minlength=classes).clamp(min=1)
    means = torch.zeros(classes, feats.features.shape[1]).index_add_(
        0, feats.labels, feats.features.float()) / counts[:, None]
    model = copy.deepcopy(s.model)
    with torch.no_grad():
        model.fc.weight.copy_(means)
        model.fc.bias.copy_(-0.5 * means.pow(2).sum(dim=1))
    return replace(s, model=model)


def versus_pytorch_ood(s: Setup, name: str) -> Figure:
    """(c) pytorch-ood's time over oodbench's, on the same model and data, back to back: the
    six scorers (``pytorch-ood``) or every shared one (``pytorch-ood-all``, pytorch-ood's
    detectors each with their own passes, oodbench one shared extraction for all)."""
    from benchmarks.crosscheck_pytorch_ood import SHARED

    scorers = SIX if name == "pytorch-ood" else SHARED
    if name == "pytorch-ood-all":
        s = _class_mean_head(s)
    what = "six detectors" if name == "pytorch-ood" else f"all {len(SHARED)} shared detectors"
    label = (LABEL_POD if name == "pytorch-ood"
             else f"speedup vs pytorch-ood, all {len(SHARED)} shared scorers: its time / "
                  "oodbench's (one extraction)")
    try:
        import pytorch_ood
    except ImportError:
        return Figure(name, label, None, "skipped", _target(name), None,
                      f"speedup vs pytorch-ood ({what}): skipped, {INSTALL_HINT}",
                      {"skipped": INSTALL_HINT})
    ours = oodbench_seconds(s, scorers)
    per_detector = pytorch_ood_seconds(s, scorers)
    theirs = sum(per_detector.values())
    ratio = theirs / ours
    slowest = max(per_detector, key=lambda n: per_detector[n])
    line = (f"speedup vs pytorch-ood {pytorch_ood.__version__}: {ratio:.2f}x = pytorch-ood "
            f"{theirs:.2f} s / oodbench {ours:.2f} s ({what}, same model and images; slowest "
            f"pytorch-ood detector: {slowest} {per_detector[slowest]:.2f} s; "
            f"{_verdict(name, ratio)})")
    return _figure(name, label, ratio, line,
                   {"pytorch_ood_seconds": theirs, "oodbench_seconds": ours,
                    "pytorch_ood_seconds_per_detector": per_detector, "scorers": list(scorers),
                    "pytorch_ood_version": pytorch_ood.__version__})


def knn_at_scale(sizes: Sizes) -> Figure:
    """(d) oodbench's knn (fit + score) on random features, on the CPU, with each backend: the
    chunked torch search (the headline: what an install without extras runs) and faiss."""
    n, q, d = sizes.knn_bank, sizes.knn_queries, sizes.knn_dim
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(n, d, generator=gen), torch.randn(q, d, generator=gen)
    train = Features(bank, torch.zeros(n, 1), torch.zeros(n, dtype=torch.long))
    test = Features(queries, torch.zeros(q, 1), torch.zeros(q, dtype=torch.long))
    head = Head(torch.zeros(1, d), torch.zeros(1))
    cpu = torch.device("cpu")
    scores: dict[str, np.ndarray] = {}

    def timed(backend: str) -> float:
        def once() -> None:
            scorer = create_scorer("knn", k=KNN_K, backend=backend)
            scores[backend] = scorer.fit(train, head).score(test)
        return statistics.median(_timed(once, cpu) for _ in range(sizes.repeats))

    value = timed("torch")
    details: dict[str, Any] = {"bank": n, "queries": q, "dim": d, "k": KNN_K,
                               "torch_seconds": value}
    line = (f"knn {n:,} x {d} train, {q:,} queries, k={KNN_K}, median of {sizes.repeats}: "
            f"torch chunked {value:.2f} s ({_verdict('knn', value)}); ")
    try:
        import faiss
    except ImportError:
        line += "faiss: not installed (pip install faiss-cpu), not timed"
    else:
        fast = timed("faiss")
        diff = float(np.abs(scores["faiss"] - scores["torch"]).max())
        details |= {"faiss_seconds": fast, "faiss_version": faiss.__version__,
                    "max_abs_score_diff_faiss_vs_torch": diff}
        line += (f"faiss {faiss.__version__} IndexFlatIP {fast:.2f} s ({_verdict('knn', fast)}; "
                 f"max |score difference| {diff:.1e})")
    return _figure("knn", f"knn {n:,} x {d}, {q:,} queries, k={KNN_K}: seconds (torch backend)",
                   value, line, details)


def bgnorm_overhead(s: Setup) -> Figure:
    """(e) BG-norm's training time per step over CE's, with benchmarks/train_speed.py."""
    from benchmarks.train_speed import measure_rates

    ce = next(t.name for t in s.bench.trainings if t.objective == "ce")
    bg = next(t.name for t in s.bench.trainings if t.objective == "bgnorm")
    rates = measure_rates(s.bench, s.sizes.train_images, s.sizes.repeats, s.device, [ce, bg])
    ratio = statistics.median(rates[ce]) / statistics.median(rates[bg])
    line = (f"bgnorm training overhead: {ratio:.3f}x time per step = {ce} "
            f"{statistics.median(rates[ce]):,.0f} img/s / {bg} {statistics.median(rates[bg]):,.0f} "
            f"img/s ({s.sizes.train_images:,} images, median of {s.sizes.repeats}; "
            f"{_verdict('bgnorm', ratio)})")
    return _figure("bgnorm", f"bgnorm training overhead: {bg} / {ce} time per step", ratio, line,
                   {"images_per_s": rates, "images": s.sizes.train_images})


def bf16_speedup(s: Setup) -> Figure:
    """CE training: float32 time per step over bfloat16 autocast (``train.cpu_amp``)."""
    from benchmarks.train_speed import measure_rates
    from oodbench.train import cpu_bf16_supported

    label = "bf16 training speed-up: float32 / bfloat16-autocast time per step (CE)"
    if s.device.type != "cpu" or not cpu_bf16_supported():
        why = "not a CPU with native bfloat16"
        return Figure("bf16", label, None, "skipped", "none", None, f"bf16: skipped, {why}",
                      {"skipped": why})
    ce = next(t.name for t in s.bench.trainings if t.objective == "ce")
    rates = {amp: statistics.median(measure_rates(s.bench, s.sizes.train_images,
                                                  s.sizes.repeats, s.device, [ce], amp)[ce])
             for amp in (False, True)}
    ratio = rates[True] / rates[False]
    line = (f"bf16 training speed-up: {ratio:.2f}x = bfloat16 autocast {rates[True]:,.0f} img/s "
            f"/ float32 {rates[False]:,.0f} img/s ({ce}, {s.sizes.train_images:,} images, median "
            f"of {s.sizes.repeats}; no target)")
    return Figure("bf16", label, ratio, f"{ratio:.2f}", "none", None, line,
                  {"images_per_s": {"float32": rates[False], "bfloat16": rates[True]}})


def ray_figures(quick: bool) -> list[Figure]:
    """The ray executor's overhead over local and its 2-worker speed-up
    (:mod:`benchmarks.cluster`); skipped without Ray."""
    from benchmarks import cluster

    if importlib.util.find_spec("ray") is None:
        why = "ray is not installed; pip install 'oodbench[ray]'"
        return [Figure(n, n, None, "skipped", _target(n), None, f"{n}: skipped, {why}",
                       {"skipped": why}) for n in STEP_FIGURES["ray"]]
    labels = {"ray-overhead": "ray executor overhead: ray (1 CPU) / local (1 thread) wall time, "
                              "tiny matrix 2 trainings x 2 seeds (or <= 10 s more)",
              "ray-speedup": "ray executor speed-up: 1 worker / 2 workers wall time, "
                             "4 trainings (ResNet-8 16/32/64)"}
    with tempfile.TemporaryDirectory() as tmp:
        measured = cluster.figures(Path(tmp), quick)
    out = []
    for m in measured:
        target = _target(m["name"]) + (" or <= 10 s more" if m["name"] == "ray-overhead" else "")
        out.append(Figure(m["name"], labels[m["name"]], m["value"], f"{m['value']:.2f}",
                          target, m["met"], m["line"], {"seconds": m["seconds"]}))
    return out


BATCHES = (32, 64, 128, 256, 512)


def batch_speeds(s: Setup) -> Figure:
    """Extraction images/s by batch size, median of repeats, and the "auto" choice."""
    arr = s.splits.test
    rates = {}
    for batch in BATCHES:
        seconds = [_timed(lambda b=batch: forward_features(s.model, arr, s.preprocess, s.device,
                                                           b), s.device)
                   for _ in range(s.sizes.repeats)]
        rates[batch] = len(arr) / statistics.median(seconds)
    best = max(rates, key=lambda b: rates[b])
    auto = s.bench.extract_batch
    shown = " / ".join(f"{rates[b]:,.0f}" for b in BATCHES)
    line = (f"extraction by batch size {' / '.join(map(str, BATCHES))}: {shown} img/s "
            f"({arr.name}/{arr.split}, {len(arr):,} images, median of {s.sizes.repeats}); "
            f"fastest {best}, auto picks {auto}")
    return Figure("batch", f"extraction img/s at batch {' / '.join(map(str, BATCHES))} "
                  f"(auto picks {auto})", None, shown, "none", None, line,
                  {"images_per_s": rates, "auto": auto, "fastest": best})


def ood_growth(s: Setup) -> Figure:
    """(f) one OOD set's cost (extraction + scoring + metrics; scorers fitted before) at 1x, 2x
    and 4x its size."""
    train, test = s.extract(s.splits.train), s.extract(s.splits.test)
    fitted = {name: create_scorer(name, **s.params(name)).fit(train, s.head) for name in SIX}
    id_scores = {name: scorer.score(test) for name, scorer in fitted.items()}
    name, base = next(iter(s.ood.sets.items()))

    def one_set(arr: ImageArray) -> None:
        feats = s.extract(arr)
        for scorer_name, scorer in fitted.items():
            ood_metrics(id_scores[scorer_name], scorer.score(feats))

    seconds = {}
    for f in FACTORS:
        arr = _tile(base, f)
        seconds[f] = statistics.median(_timed(lambda a=arr: one_set(a), s.device)
                                       for _ in range(s.sizes.repeats))
    ratios = {f: seconds[f] / seconds[1] for f in FACTORS}
    shown = " / ".join(f"{ratios[f]:.2f}" for f in FACTORS)
    line = (f"growth, one OOD set ({name}, {len(base):,} images) x{'/x'.join(map(str, FACTORS))}: "
            + " / ".join(f"{seconds[f]:.2f}" for f in FACTORS) + f" s, ratio to x1 {shown} "
            f"(linear: {' / '.join(map(str, FACTORS))})")
    return Figure("growth", f"growth: one OOD set's cost at x{'/x'.join(map(str, FACTORS))}, "
                  "ratio to x1", None, shown, f"~{' / '.join(map(str, FACTORS))} (linear)",
                  None, line, {"ood_set": name, "images": len(base), "seconds": seconds,
                               "ratios": ratios})


def _peak_mib() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20 if sys.platform == "darwin" else kib / 1024


def _in_child(fn: Callable[[], float]) -> float:
    """Run ``fn`` in a forked child (its own peak RSS, starting from this process's) and return
    its value."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 1
        try:
            os.write(write, json.dumps(fn()).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("a memory probe failed (traceback above)")
    return float(json.loads(out))


def _probe(scorer: str, n: int, dim: int, queries: int, threads: int) -> float:
    """Peak MiB that fitting ``scorer`` on n x dim features and scoring ``queries`` adds on top
    of the imports, the inputs and a warm-up run on a few samples."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    train = Features(torch.randn(n, dim, generator=gen).abs_(), torch.zeros(n, 10),
                     torch.randint(0, 10, (n,), generator=gen))
    test = Features(torch.randn(queries, dim, generator=gen).abs_(), torch.zeros(queries, 10),
                    torch.zeros(queries, dtype=torch.long))
    head = Head(torch.zeros(10, dim), torch.zeros(10))
    small = Features(train.features[:KNN_K * 2], train.logits[:KNN_K * 2],
                     train.labels[:KNN_K * 2])
    create_scorer(scorer).fit(small, head).score(small)  # first calls load kernels, buffers
    base = _peak_mib()
    create_scorer(scorer).fit(train, head).score(test)
    return _peak_mib() - base


def memory_probes(spec: str) -> None:
    """Entry point of the probe process: print ``{scorer: [peak MiB per train size]}`` as JSON.

    It imports once, then forks a fresh child per measurement, so every peak starts from the
    same baseline.
    """
    cfg = json.loads(spec)
    peaks = {name: [_in_child(lambda name=name, n=n: _probe(name, n, cfg["dim"], cfg["queries"],
                                                             cfg["threads"]))
                    for n in cfg["train"]]
             for name in MEMORY_SCORERS}
    print(json.dumps(peaks))


def memory_growth(sizes: Sizes) -> Figure:
    """(f) the peak memory of knn and mahalanobis (fit + score) as ID-train grows x1/x2/x4."""
    train = [sizes.memory_train * f for f in FACTORS]
    spec = json.dumps({"train": train, "dim": sizes.memory_dim, "queries": sizes.memory_queries,
                       "threads": torch.get_num_threads()})
    code = f"from benchmarks.perf import memory_probes; memory_probes({spec!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe process failed:\n{done.stderr}")
    peaks: dict[str, list[float]] = json.loads(done.stdout.splitlines()[-1])
    inputs = [n * sizes.memory_dim * 4 / 2**20 for n in train]
    shown = "; ".join(f"{name} " + " / ".join(f"{v:.0f}" for v in peaks[name]) + " MiB"
                      for name in MEMORY_SCORERS)
    line = (f"peak memory above imports + inputs, train {' / '.join(f'{n:,}' for n in train)} x "
            f"{sizes.memory_dim} ({sizes.memory_queries:,} queries): {shown} (the train "
            "features alone: " + " / ".join(f"{v:.1f}" for v in inputs) + " MiB)")
    return Figure("memory", f"memory: peak of fit + score at x{'/x'.join(map(str, FACTORS))} "
                  "ID-train", None, shown, "nearly flat", None, line,
                  {"train": train, "dim": sizes.memory_dim, "queries": sizes.memory_queries,
                   "peak_mib_above_inputs": peaks, "train_features_mib": inputs})


def _faiss_version() -> str | None:
    try:
        import faiss
    except ImportError:
        return None
    return str(faiss.__version__)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine_info(device: torch.device, command: str) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                  if ln.startswith("model name")]
        cpu = models[0] if models else cpu
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "torch": torch.__version__,
            "faiss (knn/nnguide backend 'auto' uses it)": _faiss_version(),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "date": _utc_now(),
            "git_commit": code_version()["git_commit"], "command": command}


def _when(fig: Figure) -> str:
    """The date and short commit of the run that measured ``fig``."""
    commit = fig.measured.get("git_commit") or "?"
    return f"{fig.measured.get('date', '?')} ({commit[:7]})"


def render_markdown(figures: list[Figure], remeasured: list[str], machine: dict[str, Any],
                    quick: bool) -> str:
    """perf.md: the table, the growth lines, and the machine. Where some figures are kept
    from earlier runs (a partial run merged into the folder), each row says when it was
    measured."""
    lines = ["# oodbench performance figures", ""]
    if quick:
        lines += ["**Quick smoke run at tiny sizes: these are not the figures.**", ""]
    merged = any(f.name not in remeasured for f in figures)
    if merged:
        lines += [f"Merged: this run (`{machine['command']}`, {machine['date']}) re-measured "
                  f"{', '.join(remeasured)}; the other rows are kept from the earlier runs "
                  "named in their `measured` column (their commands: perf.json, `figures`).", ""]
    head = "| figure | value | target | met? |" + (" measured |" if merged else "")
    lines += [head, "|---|---:|---|---|" + ("---|" if merged else "")]
    for fig in figures:
        met = "n/a" if fig.met is None else "yes" if fig.met else "**no**"
        lines.append(f"| {fig.label} | {fig.shown} | {fig.target} | {met} |"
                     + (f" {_when(fig)} |" if merged else ""))
    lines += ["", "Every line as printed:", "", "```", *(f.line for f in figures), "```", "",
              "## Machine" + (" (of this run)" if merged else ""), ""]
    lines += [f"- {k}: {'`' + v + '`' if k == 'command' else v}" for k, v in machine.items()]
    return "\n".join(lines) + "\n"


# every figure's name, in the order of the table (``growth`` yields ``memory`` too)
ORDER = tuple(n for f in FIGURES for n in STEP_FIGURES.get(f, (f,)))


def earlier_figures(out: Path, quick: bool, only: list[str]) -> list[Figure]:
    """The figures of ``out/perf.json`` that a run of ``only`` keeps (all but those it
    re-measures): none for a new folder. Refuses (``SystemExit``) to mix quick and full
    figures, or to let a partial run replace a perf.json that has no per-figure records."""
    path = out / "perf.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if "figures" not in data:
        if set(only) == set(FIGURES):
            return []
        sys.exit(f"{path} has no per-figure records (written before runs merged), so "
                 f"--only {','.join(only)} would drop its other figures: run every figure "
                 "once, or write elsewhere with --out")
    if data.get("quick") != quick:
        sys.exit(f"{path} holds {'quick' if data.get('quick') else 'full'} figures; a "
                 f"{'quick' if quick else 'full'} run does not merge with them: use another "
                 "--out")
    return [Figure(**entry) for name, entry in data["figures"].items() if name not in only
            and not (name == "memory" and "growth" in only)]


def write_results(out: Path, figures: list[Figure], earlier: list[Figure],
                  machine: dict[str, Any], sizes: Sizes, quick: bool) -> None:
    """perf.json (the headline keys, null when skipped, then the details, then every figure
    with the run that measured it) and perf.md, of this run's ``figures`` and the ``earlier``
    ones it did not re-measure."""
    by_name = {f.name: f for f in earlier} | {f.name: f for f in figures}
    merged = sorted(by_name.values(),
                    key=lambda f: ORDER.index(f.name) if f.name in ORDER else len(ORDER))
    remeasured = [f.name for f in figures]
    data: dict[str, Any] = {key: by_name[name].value if name in by_name else None
                            for name, key in JSON_KEYS.items()}
    data |= {"quick": quick, "targets": {JSON_KEYS[n]: _target(n) for n in TARGETS},
             "growth": by_name["growth"].details if "growth" in by_name else None,
             "memory": by_name["memory"].details if "memory" in by_name else None,
             "bf16": by_name["bf16"].details if "bf16" in by_name else None,
             "batch": by_name["batch"].details if "batch" in by_name else None,
             "details": {f.name: f.details for f in merged if f.name in TARGETS},
             "remeasured": remeasured, "sizes": asdict(sizes), "machine": machine,
             "figures": {f.name: asdict(f) for f in merged}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "perf.json", json.dumps(data, indent=2, default=str).encode())
    atomic_write_bytes(out / "perf.md",
                       render_markdown(merged, remeasured, machine, quick).encode())


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    return replace(sizes, repeats=args.repeats) if args.repeats else sizes


def run(args: argparse.Namespace, only: list[str]) -> Iterator[Figure]:
    """Measure the figures named in ``only``, in order, yielding each when done."""
    sizes = _sizes(args)
    bench = load_benchmark(args.benchmark)
    device = resolve_device(args.device)
    needs_data = (set(FIGURES) - {"knn", "ray"}) & set(only)
    s = load_setup(bench, args.data_root, device, sizes) if needs_data else None
    if s is not None:
        print(f"{bench.name}: {bench.model} {bench.widths}, fresh weights, {device}, "
              f"{torch.get_num_threads()} torch threads; "
              + ", ".join(f"{a.name}/{a.split} {len(a):,}" for a in s.arrays))
    steps: dict[str, Callable[[], list[Figure]]] = {
        "floor": lambda: [floor_ratio(s)],
        "overhead": lambda: [scorer_overhead(s)],
        "pytorch-ood": lambda: [versus_pytorch_ood(s, "pytorch-ood")],
        "pytorch-ood-all": lambda: [versus_pytorch_ood(s, "pytorch-ood-all")],
        "knn": lambda: [knn_at_scale(sizes)],
        "bgnorm": lambda: [bgnorm_overhead(s)],
        "bf16": lambda: [bf16_speedup(s)],
        "batch": lambda: [batch_speeds(s)],
        "growth": lambda: [ood_growth(s), memory_growth(sizes)],
        "evaluate": lambda: [evaluate_ratio(s)],
        "ray": lambda: ray_figures(args.quick),
    }
    for name in only:
        yield from steps[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, a smoke test (writes to a temp folder)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--benchmark", default="fmnist")
    parser.add_argument("--data-root", default=os.environ.get("OODBENCH_DATA"),
                        help="dataset root (default: $OODBENCH_DATA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch and BLAS threads (default: torch's)")
    parser.add_argument("--repeats", type=int,
                        help="repeats per figure (default 3; 1 for a profile, written to a "
                             "temp folder)")
    parser.add_argument("--out", help="folder for perf.md and perf.json (default: results/ for "
                        "a full run of every figure, else a new temp folder); its figures "
                        "that this run does not measure are kept")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(FIGURES)
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    if str(ROOT) not in sys.path:  # `python benchmarks/perf.py` puts benchmarks/, not the root
        sys.path.insert(0, str(ROOT))
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    prog = ["python", "-m", "benchmarks.perf"] if __package__ else ["python", sys.argv[0]]
    command = " ".join([*prog, *sys.argv[1:]])
    if args.out:
        out = Path(args.out)
    elif args.quick or args.only or args.repeats:
        out = Path(tempfile.mkdtemp(prefix="oodbench-perf-"))
    else:
        out = ROOT / "results"
    earlier = earlier_figures(out, args.quick, only)
    measured = {"git_commit": code_version()["git_commit"], "command": command,
                "sizes": asdict(_sizes(args))}
    figures = []
    for fig in run(args, only):
        print(fig.line, flush=True)
        fig.measured = {"date": _utc_now()} | measured
        figures.append(fig)
    write_results(out, figures, earlier, machine_info(resolve_device(args.device), command),
                  _sizes(args), args.quick)
    print(f"written: {out / 'perf.md'}, {out / 'perf.json'}")


if __name__ == "__main__":
    main()
