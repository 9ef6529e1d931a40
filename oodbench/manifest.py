"""Manifests: what every results folder records about how it was made.

One builder serves ``run``, ``eval`` and ``ablate``: the keys they share (benchmark, config,
data, device, cache, provenance) are written by :func:`build_manifest` alone, so they cannot
drift; each command adds only its own keys (``seeds``, ``checkpoints``, ``checkpoint``, ...).
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodbench.config import Benchmark
from oodbench.data import ImageSet
from oodbench.data.imageset import describe
from oodbench.extract import FeatureCache
from oodbench.fileio import inside
from oodbench.provenance import code_version, library_versions
from oodbench.splits import IDSplits

# the files of a results folder, and the manifest key holding the hashes of the files that
# plot and table read (metrics.csv, geometry.csv, scores/*.npz) and of the checkpoints the run
# scored (checkpoints/), so a folder mixing two runs is refused
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.csv"
GEOMETRY_FILE = "geometry.csv"
FILES_KEY = "files"
SCORES_DIR = "scores"
CHECKPOINTS_DIR = "checkpoints"  # a run's checkpoints, which a later run reuses by key


def scores_file(folder: Path, training: str, seed: int) -> Path:
    """``folder/scores/<training>-s<seed>.npz``: one cell's float64 scores in a results folder."""
    return inside(folder, SCORES_DIR, f"{training}-s{seed}.npz")

# the keys every manifest has, in the order they are built
COMMON_KEYS = ("benchmark", "config_file", "config_hash", "config", "id_dataset", "ood_sets",
               "val_ood_sets", "skipped_ood_sets", "device", "cache", "extraction", "versions",
               "runtime", "code", "command", "seconds")


def _code_now() -> dict[str, object]:
    return code_version()


@dataclass(frozen=True)
class Started:
    """When a command started, and the code version read then: a checkout that changes while
    it runs must not be recorded as the code that ran."""

    clock: float = field(default_factory=time.perf_counter)
    code: dict[str, object] = field(default_factory=_code_now)


def dataset_info(arr: ImageSet, cache: FeatureCache,
                 group: str | None = None) -> dict[str, Any]:
    """Size, shape (``None``: sizes vary), source and content hash of a dataset (and its OOD
    group, if any)."""
    info = describe(arr) | {"sha256": cache.fingerprint(arr)}
    return info if group is None else info | {"group": group}


def build_manifest(
    bench: Benchmark,
    splits: IDSplits,
    ood: dict[str, ImageSet],
    groups: dict[str, str],
    skipped: dict[str, str],
    val_ood: dict[str, ImageSet],
    device: torch.device,
    cache: FeatureCache,
    started: Started,
    cache_counts: dict[str, int] | None = None,
    **specific: Any,
) -> dict[str, Any]:
    """The common manifest keys (``COMMON_KEYS``), then the command's own ``specific`` ones;
    ``cache_counts`` replaces ``cache``'s own hits and misses (jobs run in other processes)."""
    runtime = {"python": sys.version, "platform": platform.platform(),
               "torch": torch.__version__, "cuda": torch.version.cuda,
               "torch_threads": torch.get_num_threads()}
    common = {
        "benchmark": bench.name, "config_file": bench.source,
        "config_hash": bench.config_hash(), "config": bench.to_dict(),
        "id_dataset": {s: dataset_info(getattr(splits, s), cache)
                       for s in ("train", "val", "test")},
        "ood_sets": {n: dataset_info(a, cache, groups[n]) for n, a in ood.items()},
        "val_ood_sets": {n: dataset_info(a, cache) for n, a in val_ood.items()},
        "skipped_ood_sets": skipped, "device": str(device),
        "cache": (cache_counts if cache_counts is not None
                  else {"hits": cache.hits, "misses": cache.misses}),
        "extraction": cache.extraction,
        "versions": library_versions(), "runtime": runtime, "code": started.code,
        "command": sys.argv, "seconds": round(time.perf_counter() - started.clock, 1),
    }
    clash = sorted(set(common) & set(specific))
    if clash:
        raise ValueError(f"manifest keys {clash} are common keys; a command cannot redefine them")
    return common | specific
