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
from oodbench.errors import ConfigError

HOLDOUT_SEED = 0
# the fewest ID-train images left after the hold-out (a batch to train on, statistics to fit)
MIN_TRAIN = 2


def _check_labels(bench: Benchmark, arr: ImageArray) -> None:
    """Refuse, before any training, labels outside 0 .. num_classes - 1."""
    if not len(arr.labels):
        return
    low, high = int(arr.labels.min()), int(arr.labels.max())
    if low < 0 or high >= bench.num_classes:
        raise ConfigError(
            f"{bench.source}: benchmark {bench.name!r} has num_classes = {bench.num_classes}, "
            f"but {arr.name}/{arr.split} ({arr.source}) has labels {low} .. {high}",
            f"set num_classes = {high + 1} (or more) in the benchmark file" if low >= 0 else
            "an ID set needs class labels from 0 (-1 marks an unlabelled image)")


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
    for arr in (full, test):
        _check_labels(bench, arr)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(full.labels))
    n_val = round(bench.val_fraction * len(order))
    if len(order) - n_val < MIN_TRAIN:
        raise ConfigError(
            f"{bench.source}: benchmark {bench.name!r} holds out val_fraction = "
            f"{bench.val_fraction} of the {len(order)} ID-train images of {full.source}, which "
            f"leaves {len(order) - n_val} to train on (at least {MIN_TRAIN} are needed)",
            "lower val_fraction in the benchmark file")
    train = _subset(full, np.sort(order[n_val:]), "train")
    val = _subset(full, np.sort(order[:n_val]), "val")
    mean, std = channel_stats(train.images, bench.channels)
    return IDSplits(train, val, test, Preprocess(bench.image_size, bench.channels, mean, std))


def given_splits(train: ImageArray, test: ImageArray, size: int, channels: int,
                 num_classes: int) -> IDSplits:
    """ID splits a caller gives (no validation part), preprocessed to ``size`` x ``size`` x
    ``channels`` with the statistics of ``train``; labels must be class indices below
    ``num_classes``."""
    for arr in (train, test):
        if not len(arr.labels) or arr.labels.min() < 0 or arr.labels.max() >= num_classes:
            low, high = (int(arr.labels.min()), int(arr.labels.max())) if len(arr.labels) \
                else (0, -1)
            raise ConfigError(f"ID {arr.split} set {arr.name!r} ({arr.source}) has labels "
                              f"{low} .. {high}; the model has {num_classes} classes",
                              "ID sets need class labels from 0 (-1 marks an unlabelled image)")
    mean, std = channel_stats(train.images, channels)
    return IDSplits(train, _subset(train, np.arange(0), "val"), test,
                    Preprocess(size, channels, mean, std))
