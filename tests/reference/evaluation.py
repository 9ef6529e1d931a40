"""The fixed evaluation behind ``tests/test_reference.py``: a tiny trained ResNet-8 (stored in
``model.pt``) scored by every built-in scorer through ``oodbench.evaluation.score_model`` on
images from a seeded generator.

``python -m tests.reference.evaluation`` retrains the model and rewrites ``model.pt`` and
``scores.npz``. Run it only to change the reference on purpose (the scores were first written
before the issue-6 speed work, which must leave them unchanged within 1e-5).
``--score-to FILE`` only scores the stored model (``--threads N``, ``--ray``) and writes the
scores and rows there: one environment of ``tests/test_reference.py``'s cross-environment
tests, run in a process of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodbench.adapters import ModelAdapter
from oodbench.check import load_benchmark, override
from oodbench.config import Benchmark, JobResources, Resources
from oodbench.context import EvalContext
from oodbench.data import ImageArray, Preprocess, channel_stats
from oodbench.evaluation import score_model
from oodbench.extract import FeatureCache
from oodbench.models import create_model
from oodbench.objectives import create_objective
from oodbench.oodsets import OODSets
from oodbench.progress import make_progress
from oodbench.scoring import list_scorers
from oodbench.splits import IDSplits
from oodbench.train import InMemory, fit

HERE = Path(__file__).resolve().parent
CONFIG = """
[benchmarks.reference]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
widths = [8, 16, 32]
val_fraction = 0.2
extract_batch = 64
scorers = ["msp"]
scorer_params = { knn = { k = 5 }, nnguide = { k = 5 }, vim = { dim = 16 } }

[benchmarks.reference.train]
epochs = 4
batch_size = 32
lr = 0.05

[[benchmarks.reference.trainings]]
name = "ce"
objective = "ce"
"""


def _patterns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 grey images: class k is a bright patch at one of 10 places."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28, 1), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
        images[i, r : r + 8, c : c + 8, 0] = rng.integers(150, 256, size=(8, 8))
    return images, labels


def benchmark(tmp: Path) -> Benchmark:
    """The reference benchmark (every built-in scorer), parsed from a file in ``tmp``."""
    path = tmp / "reference.toml"
    path.write_text(CONFIG)
    return load_benchmark("reference", path)


def data() -> tuple[IDSplits, OODSets]:
    """ID train/val/test from the pattern generator; two OOD sets (noise, a brighter RGB
    pattern set the preprocessing converts to grey and downsizes)."""
    def arr(images: np.ndarray, labels: np.ndarray, name: str, split: str) -> ImageArray:
        return ImageArray(images, labels, name, split, "generated")

    (tr, ytr), (va, yva), (te, yte) = _patterns(600, 0), _patterns(100, 1), _patterns(200, 2)
    mean, std = channel_stats(tr, 1)
    splits = IDSplits.fixed(arr(tr, ytr, "fashion-mnist", "train"),
                            arr(va, yva, "fashion-mnist", "val"),
                            arr(te, yte, "fashion-mnist", "test"), Preprocess(28, 1, mean, std))
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, size=(150, 28, 28, 1), dtype=np.uint8)
    rgb = np.repeat(_patterns(120, 4)[0], 3, axis=-1)
    rgb = np.clip(np.kron(rgb, np.ones((1, 2, 2, 1), np.uint8)).astype(np.int16) + 40, 0, 255)
    minus = np.full(150, -1)
    ood = OODSets({"noise": arr(noise, minus, "noise", "test"),
                   "bright": arr(rgb.astype(np.uint8)[:, 4:52, 8:40], minus[:120], "bright",
                                 "test")},
                  {"noise": "far", "bright": "near"})
    return splits, ood


def model() -> ModelAdapter:
    """The reference architecture, untrained."""
    return create_model("resnet8", 10, 1, widths=(8, 16, 32))


Evaluation = tuple[list[dict[str, Any]], dict[str, np.ndarray]]  # metric rows, scores


def evaluate(state: dict[str, torch.Tensor], tmp: Path, threads: int = 1) -> Evaluation:
    """Score the model with weights ``state`` with every built-in scorer, on the CPU with
    ``threads`` torch threads (its ``resources.eval``), with a fresh cache in ``tmp``."""
    net = model()
    net.load_state_dict(state)
    bench = benchmark(tmp)
    splits, ood = data()
    bench = dataclasses.replace(override(bench, scorers=list_scorers()),
                                resources=Resources(eval=JobResources(num_cpus=threads)))
    ctx = EvalContext(bench, splits, ood, FeatureCache(tmp / "cache"), torch.device("cpu"))
    result = score_model(ctx, net, "reference", "ce", 0)
    return result.rows, result.scores


def score_stored(threads: int = 1) -> Evaluation:
    """:func:`evaluate` of the stored ``model.pt``."""
    with tempfile.TemporaryDirectory() as tmp:
        return evaluate(torch.load(HERE / "model.pt", weights_only=True), Path(tmp), threads)


def score_to(out: Path, threads: int, on_ray: bool) -> None:
    """Write :func:`score_stored`'s scores to ``out`` (npz) and its rows beside (``.json``);
    ``on_ray``: computed in a task of a new 1-CPU local Ray cluster."""
    if on_ray:
        import ray

        from tests.reference import evaluation  # by name: Ray pickles __main__'s by value

        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=1)(evaluation.score_stored)
            rows, scores = ray.get(task.remote(threads))
        finally:
            ray.shutdown()
    else:
        rows, scores = score_stored(threads)
    np.savez(out, **scores)
    out.with_suffix(".json").write_text(json.dumps(rows))


def machine() -> dict[str, str]:
    """What CPU kernels made a reference: torch, ATen's CPU capability, oneDNN's ISA cap."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}


def main() -> None:
    """Train the reference model, then write model.pt, scores.npz and metrics.json
    (``--add-new``: only add the score arrays and rows made since)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench = benchmark(Path(tmp))
        splits, _ = data()
        net = model()
        with make_progress(transient=True) as prog:
            fit(net, create_objective("ce"), InMemory.of(splits.preprocess, splits.train),
                bench.trainings[0].train, 0, torch.device("cpu"), progress=prog, desc="reference")
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        torch.save(state, HERE / "model.pt")
        rows, scores = evaluate(state, Path(tmp))
    np.savez(HERE / "scores.npz", **scores)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE, check=False).stdout.strip()
    (HERE / "metrics.json").write_text(json.dumps(
        {"written_at_commit": commit, **machine(), "rows": rows}, indent=1) + "\n")
    acc = next(r["value"] for r in rows if r["metric"] == "id_acc")
    print(f"reference written at {commit}: id_acc {acc:.3f}, {len(scores)} score arrays")


def add_new() -> None:
    """Score the stored model and add the score arrays (a scorer or a diagnostic added since)
    and the rows (a metric added since) the reference lacks, leaving every stored array and
    row as it is."""
    import sys

    rows, scores = score_stored()
    with np.load(HERE / "scores.npz") as ref:
        stored = {k: ref[k] for k in ref.files}
    meta = json.loads((HERE / "metrics.json").read_text())
    known = {(r["scorer"], r["ood_set"], r["metric"]) for r in meta["rows"]}
    new_rows = [r for r in rows if (r["scorer"], r["ood_set"], r["metric"]) not in known]
    new_keys = sorted(set(scores) - set(stored))
    if not new_rows and not new_keys:
        sys.exit("the reference already holds every score array and row")
    np.savez(HERE / "scores.npz", **stored, **{k: scores[k] for k in new_keys})
    meta["rows"] += new_rows
    meta.setdefault("added", []).append({
        "arrays": sorted({k.split("/")[0] for k in new_keys}),
        "metrics": sorted({r["metric"] for r in new_rows}), **machine()})
    (HERE / "metrics.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"added to the reference: {len(new_keys)} arrays, {len(new_rows)} rows")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--add-new", action="store_true")
    parser.add_argument("--score-to", type=Path, help="only score the stored model, to FILE")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ray", action="store_true")
    args = parser.parse_args()
    if args.score_to:
        score_to(args.score_to, args.threads, args.ray)
    elif args.add_new:
        add_new()
    else:
        main()
