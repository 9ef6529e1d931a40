"""What every command shares: its options (:class:`RunOptions`), the check of the folders it
writes and reads (before any work), and the :class:`EvalContext` that scoring a model needs
(ID splits, OOD sets, feature cache, device, input preprocessing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from oodbench.adapters import ModelAdapter, input_preprocess
from oodbench.config import SANITY, Benchmark, ConfigError, StatsSpec
from oodbench.data import Preprocess, resolve_data_root
from oodbench.data.preprocess import conversion_note
from oodbench.device import resolve_device
from oodbench.extract import FeatureCache
from oodbench.fileio import Owned, check_disjoint, inside
from oodbench.manifest import Started, build_manifest
from oodbench.oodsets import OODSets, load_ood_sets, load_val_ood
from oodbench.progress import console
from oodbench.splits import IDSplits
from oodbench.train import Trainer
from oodbench.uncertainty import describe as describe_bootstrap
from oodbench.verdicts import describe as describe_test

STATISTICS_KEY = "statistics"  # the manifest's record of the bootstrap and the tables' test


def statistics_record(stats: StatsSpec) -> dict[str, Any]:
    """What a manifest records of ``stats``: the test-sample bootstrap behind the bound rows
    of ``metrics.csv``, and the test behind the tables' verdicts."""
    return {"bootstrap": describe_bootstrap(stats.bootstrap_resamples, stats.level,
                                            stats.bootstrap_seed),
            "test": describe_test(stats.alpha, stats.correction, (SANITY,), stats.test)}


@dataclass(frozen=True)
class RunOptions:
    """The options of a command that say where to read and write, as the API's keyword
    arguments of the same names: where checkpoints and caches go (``runs_dir``), where
    datasets are (``data_root``, default ``$OODBENCH_DATA``), extra OOD sets (name -> image
    folder or ``.npz``), whether torchvision may download, and whether to print the summary
    tables. The device is the benchmark's own field (overridden by the command's ``device``).
    Plain data: it travels to workers inside :class:`oodbench.jobs.Work`."""

    runs_dir: Path | str = "runs"
    data_root: Path | str | None = None
    extra_ood: Mapping[str, Path | str] = field(default_factory=dict)
    download: bool = False
    quiet: bool = False


@dataclass
class EvalContext:
    """What scoring any checkpoint of one command needs: the benchmark (its scorers, grids and
    extraction settings), the ID splits and their preprocessing, the OOD sets (and, for
    ``scorer_grids``, the validation OOD sets), the feature cache and the device."""

    bench: Benchmark
    splits: IDSplits
    ood: OODSets
    cache: FeatureCache
    device: torch.device
    val_ood: OODSets = field(default_factory=OODSets)
    model_input: Preprocess | None = None  # the model's input, where not the splits' own

    @property
    def preprocess(self) -> Preprocess:
        """The model's input preprocessing: :attr:`model_input`, else the splits' own."""
        return self.model_input or self.splits.preprocess

    def __post_init__(self) -> None:
        tuned = [n for n in self.bench.scorers if n in self.bench.scorer_grids]
        if tuned and (not self.val_ood.sets or not len(self.splits.val.labels)):
            raise ConfigError(
                f"scorer_grids ({', '.join(tuned)}) of benchmark {self.bench.name!r} need ID "
                "validation images and a val_ood set to select on",
                "set val_fraction > 0 and val_ood in the benchmark file")

    def manifest(self, started: Started, given: Benchmark,
                 cache_counts: dict[str, int] | None = None, **specific: Any) -> dict[str, Any]:
        """The command's manifest: the common keys, then ``specific``. ``given`` is the
        benchmark as the caller passed it, before the command's overrides (which ``specific``
        records: seeds, scorers); ``cache_counts``: the feature-cache hits and misses of jobs
        run elsewhere (default: this context's cache's). A benchmark with a ``protocol`` adds
        what it says about it (:func:`oodbench.openood.protocol_record`); every manifest
        records its statistics (:func:`statistics_record`)."""
        specific = {STATISTICS_KEY: statistics_record(self.bench.stats), **specific}
        if self.bench.protocol:
            from oodbench.openood import MANIFEST_KEY, protocol_record

            specific = {MANIFEST_KEY: protocol_record(self.bench), **specific}
        return build_manifest(given, self.splits, self.ood.sets, self.ood.groups,
                              self.ood.skipped, self.val_ood.sets, self.device, self.cache,
                              started, cache_counts, **specific)


def check_folders(bench: Benchmark, opts: RunOptions, option: str, given: Path | str | None,
                  out: Path | None, runs: Path | None, *inputs: Owned | None) -> None:
    """Refuse, before any work, a results folder ``out`` (None: none is written; ``option``
    and ``given`` name it, the folder the user gave, of which ``out`` is a subfolder), a runs
    folder ``runs`` (the benchmark's checkpoints, cache and evaluations; None: not used), the
    data root, the extra OOD sets, the benchmark file and ``inputs`` (files a command reads)
    that overlap (:func:`~oodbench.fileio.check_disjoint`)."""
    root = resolve_data_root(opts.data_root)
    source = Path(bench.source) if bench.source else None
    check_disjoint(
        Owned(option, str(given), out, "results folder", replaced=True)
        if out is not None else None,
        Owned("runs_dir", opts.runs_dir, runs, "checkpoints, feature cache and evaluations")
        if runs is not None else None,
        Owned("data_root", root, root, "datasets") if root is not None else None,
        *(Owned("extra_ood", f"{n}={p}", p, f"extra OOD set {n!r}", writes=False)
          for n, p in opts.extra_ood.items()),
        Owned("config", source, source, "benchmark file", writes=False)
        if source is not None and source.is_file() else None,
        *inputs)


def make_trainer(bench: Benchmark, opts: RunOptions, committed: tuple[Path, ...] = ()
                 ) -> Trainer:
    """The trainer of a command's benchmark: its checkpoints in ``runs_dir`` (then in the
    read-only ``committed`` folders), its ID splits."""
    return Trainer(bench, opts.runs_dir, resolve_data_root(opts.data_root), bench.device,
                   download=opts.download, committed=committed)


def runs_cache(bench: Benchmark, opts: RunOptions) -> Path:
    """The benchmark's feature cache below ``runs_dir``."""
    return inside(opts.runs_dir, bench.name, "cache")


def context(bench: Benchmark, opts: RunOptions, splits: IDSplits, cache_dir: Path | str | None,
            *, preprocess: Preprocess | None = None, ood: OODSets | None = None,
            val_side: bool = False) -> EvalContext:
    """The context of a command: ``splits`` (and ``preprocess``, default the splits' own)
    scored against the benchmark's OOD sets (or ``ood``), with the validation OOD sets where
    a scorer has a grid, on the benchmark's device, with the feature cache in ``cache_dir``
    (None: none). ``val_side`` scores ID validation vs the validation OOD sets instead."""
    data_root = resolve_data_root(opts.data_root)
    cache = FeatureCache(cache_dir, bench.extract_amp, bench.loader_workers)
    device = resolve_device(bench.device)
    if val_side:
        val_side_splits = IDSplits.fixed(splits.train, splits.val, splits.val, splits.preprocess)
        return EvalContext(bench, val_side_splits, load_val_ood(bench, data_root, opts.download),
                           cache, device, model_input=preprocess)
    if ood is None:
        ood = load_ood_sets(bench, data_root, opts.extra_ood, opts.download)
    val_ood = load_val_ood(bench, data_root, opts.download) if bench.scorer_grids else OODSets()
    return EvalContext(bench, splits, ood, cache, device, val_ood, preprocess)


def model_preprocess(net: ModelAdapter, bench: Benchmark, splits: IDSplits,
                     input_size: int | None = None) -> Preprocess:
    """:func:`~oodbench.adapters.input_preprocess` of ``net`` on ``bench``'s images, with one
    note when they are converted for it."""
    preprocess = input_preprocess(net, lambda: splits.preprocess, splits.size, input_size,
                                  splits.crop_pct)
    note = conversion_note((bench.image_size, bench.image_size, bench.channels),
                           preprocess.size, preprocess.channels)
    if note:
        console.print(f"[yellow]note:[/yellow] benchmark {bench.name!r} images are converted "
                      f"to the model's input {preprocess.size}x{preprocess.size}x"
                      f"{preprocess.channels}: {note}", soft_wrap=True, highlight=False)
    return preprocess
