"""The fixed evaluation behind ``tests/test_reference.py``: a tiny trained ResNet-8 (stored in
``model.pt``) scored by every built-in scorer through ``oodbench.pipeline.score_model`` on
images from a seeded generator.

``python -m tests.reference.evaluation`` retrains the model and rewrites ``model.pt`` and
``scores.npz``. Run it only to change the reference on purpose (the scores were first written
before the issue-6 speed work, which must leave them unchanged within 1e-5).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodbench.config import Benchmark, load_benchmark
from oodbench.data import ImageArray, Preprocess, channel_stats
from oodbench.extract import FeatureCache
from oodbench.models import OODNet, create_model
from oodbench.objectives import create_objective
from oodbench.pipeline import EvalContext, OODSets, score_model
from oodbench.progress import make_progress
from oodbench.scoring import list_scorers, load_builtin_scorers
from oodbench.splits import IDSplits
from oodbench.train import fit

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


def model() -> OODNet:
    """The reference architecture, untrained."""
    return create_model("resnet8", 10, 1, widths=(8, 16, 32))


def evaluate(state: dict[str, torch.Tensor], tmp: Path) -> tuple[list[dict[str, Any]],
                                                                   dict[str, np.ndarray]]:
    """Score the stored model with every built-in scorer, on the CPU, with a fresh cache."""
    load_builtin_scorers()
    net = model()
    net.load_state_dict(state)
    bench = benchmark(tmp)
    splits, ood = data()
    bench = bench.with_overrides(scorers=list_scorers())
    ctx = EvalContext(bench, splits, ood, FeatureCache(tmp / "cache"), torch.device("cpu"))
    result = score_model(ctx, net, "reference", "ce", 0)
    return result.rows, result.scores


def main() -> None:
    """Train the reference model, then write model.pt, scores.npz and metrics.json
    (``--add-new-scorers``: only add the scorers registered since)."""
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench = benchmark(Path(tmp))
        splits, _ = data()
        x = splits.preprocess(splits.train.images)
        y = torch.as_tensor(splits.train.labels)
        net = model()
        with make_progress(transient=True) as prog:
            fit(net, create_objective("ce"), x, y, bench.trainings[0].train, 0,
                torch.device("cpu"), prog, "reference")
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        torch.save(state, HERE / "model.pt")
        rows, scores = evaluate(state, Path(tmp))
    np.savez(HERE / "scores.npz", **scores)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE, check=False).stdout.strip()
    (HERE / "metrics.json").write_text(json.dumps(
        {"written_at_commit": commit, "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    acc = next(r["value"] for r in rows if r["metric"] == "id_acc")
    print(f"reference written at {commit}: id_acc {acc:.3f}, {len(scores)} score arrays")


def add_new_scorers() -> None:
    """Score the stored model and add the scorers the reference lacks (a scorer added since),
    leaving every stored array and row as it is."""
    import sys
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows, scores = evaluate(torch.load(HERE / "model.pt", weights_only=True), Path(tmp))
    with np.load(HERE / "scores.npz") as ref:
        stored = {k: ref[k] for k in ref.files}
    meta = json.loads((HERE / "metrics.json").read_text())
    known = {r["scorer"] for r in meta["rows"]}
    new = sorted({r["scorer"] for r in rows} - known)
    if not new:
        sys.exit("the reference already holds every scorer")
    np.savez(HERE / "scores.npz", **stored, **{k: v for k, v in scores.items()
                                               if k.split("/")[0] in new})
    meta["rows"] += [r for r in rows if r["scorer"] in new]
    meta.setdefault("added", []).append({"scorers": new, "torch": torch.__version__})
    (HERE / "metrics.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"added to the reference: {', '.join(new)}")


if __name__ == "__main__":
    import sys

    add_new_scorers() if sys.argv[1:] == ["--add-new-scorers"] else main()
