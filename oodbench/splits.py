"""The ID set of a benchmark, split into train / validation / test, and its preprocessing.

The validation part is a fixed, seed-independent hold-out of the ID training split
(``id_val = "holdout"``) or the ID dataset's own ``val`` split (``id_val = "split"``: OpenOOD's
val lists); it is used to choose defaults and is never trained on. Normalisation uses the
statistics of the training images, computed when first needed (a model with its own
preprocessing never needs them: streaming a large training set for them would be waste).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from oodbench.config import Benchmark
from oodbench.data import ImageSet, Preprocess, load_dataset
from oodbench.errors import ConfigError

HOLDOUT_SEED = 0
# the fewest ID-train images left after the hold-out (a batch to train on, statistics to fit)
MIN_TRAIN = 2


def _check_labels(bench: Benchmark, arr: ImageSet) -> None:
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
    """ID train / val / test sets plus the preprocessing fitted on train (``size`` x ``size`` x
    ``channels``, resized to ``size / crop_pct`` then centre-cropped), computed on first use,
    unless one is ``given`` (:meth:`fixed`)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    size: int
    channels: int
    crop_pct: float = 1.0
    workers: int | str = "auto"
    given: Preprocess | None = None

    @classmethod
    def fixed(cls, train: ImageSet, val: ImageSet, test: ImageSet,
              preprocess: Preprocess) -> IDSplits:
        """Splits whose preprocessing is given, not fitted."""
        return cls(train, val, test, preprocess.size, preprocess.channels, preprocess.crop_pct,
                   given=preprocess)

    @cached_property
    def preprocess(self) -> Preprocess:
        """The given preprocessing, else normalisation by the statistics of the training
        images."""
        if self.given is not None:
            return self.given
        mean, std = self.train.channel_stats(self.channels, self.workers)
        return Preprocess(self.size, self.channels, mean, std, self.crop_pct)


def load_id_splits(
    bench: Benchmark, data_root: Path | str | None = None, download: bool = False
) -> IDSplits:
    """Load the ID set and its validation part: ``bench.val_fraction`` of its training split
    held out, or its own ``val`` split (``id_val = "split"``)."""
    full = load_dataset(bench.id_dataset, "train", data_root, download=download)
    test = load_dataset(bench.id_dataset, "test", data_root, download=download)
    given_val = (load_dataset(bench.id_dataset, "val", data_root, download=download)
                 if bench.id_val == "split" else None)
    for arr in (full, test, *([given_val] if given_val is not None else [])):
        _check_labels(bench, arr)
    if given_val is not None:
        return IDSplits(full, given_val, test, bench.image_size, bench.channels,
                        bench.crop_pct, bench.loader_workers)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(full.labels))
    n_val = round(bench.val_fraction * len(order))
    if len(order) - n_val < MIN_TRAIN:
        raise ConfigError(
            f"{bench.source}: benchmark {bench.name!r} holds out val_fraction = "
            f"{bench.val_fraction} of the {len(order)} ID-train images of {full.source}, which "
            f"leaves {len(order) - n_val} to train on (at least {MIN_TRAIN} are needed)",
            "lower val_fraction in the benchmark file")
    train = full.subset(np.sort(order[n_val:]), "train")
    val = full.subset(np.sort(order[:n_val]), "val")
    return IDSplits(train, val, test, bench.image_size, bench.channels, bench.crop_pct,
                    bench.loader_workers)


def given_splits(train: ImageSet, test: ImageSet, size: int, channels: int,
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
    return IDSplits(train, train.subset(np.arange(0), "val"), test, size, channels)
