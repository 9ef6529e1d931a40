"""The ID set of a benchmark, split into train / validation / test, and its preprocessing.

The validation part is a fixed, seed-independent hold-out of the ID training split; it is used
to choose defaults and is never trained on. Normalisation uses the statistics of the remaining
training images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodbench.config import Benchmark
from oodbench.data import ImageArray, Preprocess, channel_stats, load_dataset

HOLDOUT_SEED = 0


@dataclass(frozen=True)
class IDSplits:
    """ID train / val / test arrays plus the preprocessing fitted on train."""

    train: ImageArray
    val: ImageArray
    test: ImageArray
    preprocess: Preprocess


def _subset(arr: ImageArray, idx: np.ndarray, split: str) -> ImageArray:
    return ImageArray(arr.images[idx], arr.labels[idx], arr.name, split, arr.source, arr.files,
                      arr.notes)


def load_id_splits(
    bench: Benchmark, data_root: Path | str | None = None, download: bool = False
) -> IDSplits:
    """Load the ID set and hold out ``bench.val_fraction`` of its training split."""
    full = load_dataset(bench.id_dataset, "train", data_root, download=download)
    test = load_dataset(bench.id_dataset, "test", data_root, download=download)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(full.labels))
    n_val = round(bench.val_fraction * len(order))
    train = _subset(full, np.sort(order[n_val:]), "train")
    val = _subset(full, np.sort(order[:n_val]), "val")
    mean, std = channel_stats(train.images, bench.channels)
    return IDSplits(train, val, test, Preprocess(bench.image_size, bench.channels, mean, std))
