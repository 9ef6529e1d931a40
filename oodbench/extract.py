"""Feature extraction with an on-disk cache: one forward pass per (checkpoint, dataset).

Each entry holds the pooled penultimate features, the logits and the labels of one dataset
under one checkpoint; the scores of a model-level scorer (which needs its own passes, e.g. with
input gradients) are cached beside them, keyed also by the scorer's name and parameters.

The key combines the checkpoint's hash, the dataset's name and split, the
preprocessing and a hash of the image bytes, so a changed checkpoint, preprocessing or data file
gets a fresh pass while an unchanged one is read back without touching the model.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from oodbench.data import ImageArray, Preprocess
from oodbench.fileio import atomic_write_bytes
from oodbench.models import OODNet
from oodbench.scoring import Features, ModelScorer


def data_fingerprint(arr: ImageArray) -> str:
    """SHA-256 over an array's image and label bytes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(arr.images).data)
    h.update(np.ascontiguousarray(arr.labels).data)
    return h.hexdigest()


def batches(
    arr: ImageArray,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int,
    progress: Progress | None,
    desc: str,
) -> Iterator[torch.Tensor]:
    """Preprocessed batches of ``arr`` on ``device``, advancing a progress task."""
    task = progress.add_task(desc, total=len(arr.labels), stats="") if progress else None
    for i in range(0, len(arr.labels), batch_size):
        x = preprocess(arr.images[i : i + batch_size]).to(device)
        yield x
        if progress is not None and task is not None:
            progress.advance(task, len(x))


@torch.no_grad()
def forward_features(
    model: OODNet,
    arr: ImageArray,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 512,
    progress: Progress | None = None,
) -> Features:
    """One streamed forward pass over ``arr``: pooled features, logits and labels."""
    model.eval().to(device)
    feats, logits = [], []
    for x in batches(arr, preprocess, device, batch_size, progress,
                     f"extract {arr.name}/{arr.split}"):
        _, f, z = model.forward_all(x)
        feats.append(f.float().cpu())
        logits.append(z.float().cpu())
    return Features(torch.cat(feats), torch.cat(logits),
                    torch.as_tensor(arr.labels, dtype=torch.long))


def model_scores(
    model: OODNet,
    scorer: ModelScorer,
    arr: ImageArray,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 512,
    progress: Progress | None = None,
) -> np.ndarray:
    """Run a fitted :class:`ModelScorer` over ``arr`` in batches (gradients enabled)."""
    model.eval().to(device)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    out = []
    for x in batches(arr, preprocess, device, batch_size, progress,
                     f"{scorer.name} {arr.name}/{arr.split}"):
        with torch.enable_grad():
            out.append(scorer.score_batch(model, x, std).detach().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


class FeatureCache:
    """Cache of :class:`Features` under ``root/<checkpoint hash>/<dataset>-<split>-<key>.npz``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(
        self, ckpt_hash: str, arr: ImageArray, preprocess: Preprocess, scorer: str = ""
    ) -> Path:
        """Where the entry for this checkpoint, dataset and preprocessing (and model-level
        scorer, given as ``name(params json)``) lives."""
        key = hashlib.sha256(f"{preprocess.key()}|{data_fingerprint(arr)}".encode()).hexdigest()
        stem = f"{arr.name}-{arr.split}-{key[:16]}"
        if scorer:
            tag = hashlib.sha256(scorer.encode()).hexdigest()[:12]
            return self.root / ckpt_hash[:16] / f"{stem}-{scorer.split('(')[0]}-{tag}.npy"
        return self.root / ckpt_hash[:16] / f"{stem}.npz"

    def scores(
        self,
        model: OODNet,
        ckpt_hash: str,
        scorer: ModelScorer,
        arr: ImageArray,
        preprocess: Preprocess,
        device: torch.device,
        batch_size: int = 512,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Read the cached scores of a model-level scorer, or compute and store them."""
        params = json.dumps(scorer.get_params(), sort_keys=True, default=str)
        path = self.path(ckpt_hash, arr, preprocess, f"{scorer.name}({params})")
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        out = model_scores(model, scorer, arr, preprocess, device, batch_size, progress)
        buf = io.BytesIO()
        np.save(buf, out)
        atomic_write_bytes(path, buf.getvalue())
        return out

    def get(
        self,
        model: OODNet,
        ckpt_hash: str,
        arr: ImageArray,
        preprocess: Preprocess,
        device: torch.device,
        batch_size: int = 512,
        progress: Progress | None = None,
    ) -> Features:
        """Read the cached features, or run the forward pass once and store them."""
        path = self.path(ckpt_hash, arr, preprocess)
        if path.is_file():
            self.hits += 1
            with np.load(path) as z:
                return Features(torch.from_numpy(z["features"]), torch.from_numpy(z["logits"]),
                                torch.from_numpy(z["labels"]))
        self.misses += 1
        out = forward_features(model, arr, preprocess, device, batch_size, progress)
        buf = io.BytesIO()
        np.savez(buf, features=out.features.numpy(), logits=out.logits.numpy(),
                 labels=out.labels.numpy())
        atomic_write_bytes(path, buf.getvalue())
        return out
