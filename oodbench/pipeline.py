"""The compatibility matrix: checkpoints -> cached features -> every scorer -> metrics -> reports.

``evaluate_checkpoint`` scores one model a user brings, ``evaluate`` one ``nn.Module``, and
``ablate_benchmark`` scores training variants on the validation side; ``oodbench run``
(:mod:`oodbench.matrix`) builds its jobs on the same pieces. They are plain functions, usable
from a notebook; they share :class:`RunOptions` (where to read and write, which device), one
:class:`EvalContext` per command, :func:`score_model` per checkpoint and one manifest builder.
Every check on their arguments runs before any training.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch import nn

from oodbench.adapters import ModelAdapter, adapt, input_preprocess
from oodbench.checkpoint import SUMMARY_KEYS, file_hash, load_checkpoint, load_into
from oodbench.config import (
    EVAL_PREFIX,
    FIT_KEY,
    FIT_TRAIN,
    FIT_VAL,
    Benchmark,
    ConfigError,
    OODSpec,
    check_name,
    load_benchmark,
)
from oodbench.data import (
    DatasetUnavailable,
    ImageFiles,
    ImageSet,
    Preprocess,
    load_dataset,
    load_image_list,
    load_path,
    resolve_data_root,
)
from oodbench.data.convert import as_image_array
from oodbench.data.preprocess import conversion_note
from oodbench.errors import DataError
from oodbench.extract import FeatureCache, weights_fingerprint
from oodbench.fileio import (
    Owned,
    atomic_write_bytes,
    check_disjoint,
    check_writable,
    inside,
    record_files,
    remove_stale_temps,
    staged,
)
from oodbench.manifest import (
    FILES_KEY,
    MANIFEST_FILE,
    METRICS_FILE,
    SCORES_DIR,
    Started,
    build_manifest,
    scores_file,
)
from oodbench.metrics import (
    COLUMNS,
    ID_ACC,
    OOD_METRICS,
    WARNING,
    accuracy,
    degenerate_note,
    nonfinite_note,
    ood_metrics,
)
from oodbench.modelref import read_weights
from oodbench.objectives import get_objective
from oodbench.plots import FEATNORM, write_plots
from oodbench.progress import console, make_progress
from oodbench.registry import did_you_mean
from oodbench.report import ablation_table, print_summary, write_reports
from oodbench.scoring import (
    Features,
    Head,
    InputsChanged,
    MapScorer,
    ModelScorer,
    Scorer,
    ScorerFailed,
    create_scorer,
    fit_and_score,
)
from oodbench.splits import IDSplits, given_splits, load_id_splits
from oodbench.threads import job_threads
from oodbench.train import Trainer, resolve_device
from oodbench.tuning import VAL_ID, select_params


@dataclass(frozen=True)
class RunOptions:
    """The options every command shares: where checkpoints and caches go (``runs_dir``), where
    datasets are (``data_root``, default ``$OODBENCH_DATA``), the device (default: the
    benchmark's), extra OOD sets (name -> image folder or ``.npz``), whether torchvision may
    download, and whether to print the summary tables."""

    runs_dir: Path | str = "runs"
    data_root: Path | str | None = None
    device: str | None = None
    extra_ood: Mapping[str, Path | str] = field(default_factory=dict)
    download: bool = False
    quiet: bool = False

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> RunOptions:
        """Options from keyword arguments; an unknown keyword is a :class:`ConfigError`."""
        known = [f.name for f in fields(cls)]
        for key in options:
            if key not in known:
                raise ConfigError(f"unknown option {key!r};{did_you_mean(key, known)} "
                                  f"accepted: {', '.join(known)}")
        return cls(**options)


@dataclass
class OODSets:
    """The OOD test sets that loaded here, their groups, and the ones skipped (with why)."""

    sets: dict[str, ImageSet] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_ood_sets(
    bench: Benchmark,
    data_root: Path | str | None = None,
    extra: Mapping[str, Path | str] | None = None,
    download: bool = False,
) -> OODSets:
    """Load the benchmark's OOD sets, its ``extra_ood`` entries, and ``extra`` (name -> image
    folder or ``.npz``, group ``extra``)."""
    out = OODSets()
    shape = (bench.image_size, bench.image_size, bench.channels)
    for spec in bench.ood:
        try:
            out.sets[spec.name] = (
                load_image_list(spec.name, spec.imglist, spec.images, data_root) if spec.imglist
                else load_dataset(spec.name, "test", data_root, download=download,
                                  image_shape=shape))
            out.groups[spec.name] = spec.group
        except DatasetUnavailable as e:
            out.skipped[spec.name] = str(e)
    user = [*bench.extra_ood,
            *(OODSpec(name=check_name(n, "extra OOD set name"), group="extra", path=str(p))
              for n, p in (extra or {}).items())]
    for spec in user:
        if spec.name in out.sets or spec.name in out.skipped or spec.name == bench.id_dataset:
            raise ConfigError(f"extra OOD set name {spec.name!r} clashes with a set of the "
                              f"benchmark {bench.name!r}", "give it another name")
        out.sets[spec.name] = load_path(Path(spec.path), spec.name)
        out.groups[spec.name] = spec.group
    for name, arr in out.sets.items():
        if len(arr) == 0:
            raise DataError(f"OOD set {name!r} ({arr.source}) holds no images",
                            "give it at least one image or leave it out")
        steps = [*arr.notes, conversion_note(arr.shape, bench.image_size, bench.channels)]
        note = "; ".join(step for step in steps if step)
        if note:
            console.print(f"note: OOD set {name!r} is converted to the ID input "
                          f"{shape[0]}x{shape[1]}x{shape[2]}: {note}", markup=False,
                          soft_wrap=True)
    return out


def load_val_ood(bench: Benchmark, data_root: Path | str | None = None,
                 download: bool = False) -> OODSets:
    """The benchmark's validation OOD sets (used to select, never to report)."""
    shape = (bench.image_size, bench.image_size, bench.channels)
    return OODSets({n: load_dataset(n, "test", data_root, download=download, image_shape=shape)
                    for n in bench.val_ood}, dict.fromkeys(bench.val_ood, "val"))


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
    preprocess: Preprocess | None = None  # default: the splits' own

    def __post_init__(self) -> None:
        self.preprocess = self.preprocess or self.splits.preprocess
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
        what it says about it (:func:`oodbench.openood.protocol_record`)."""
        if self.bench.protocol:
            from oodbench.openood import MANIFEST_KEY, protocol_record

            specific = {MANIFEST_KEY: protocol_record(self.bench), **specific}
        return build_manifest(given, self.splits, self.ood.sets, self.ood.groups,
                              self.ood.skipped, self.val_ood.sets, self.device, self.cache,
                              started, cache_counts, **specific)


@dataclass
class ModelResult:
    """One checkpoint's metric rows (``metrics.csv``), per-sample scores (``scores/*.npz``,
    float64) and the parameters each scorer ran with."""

    rows: list[dict[str, Any]]
    scores: dict[str, np.ndarray]
    params: dict[str, dict[str, Any]]


@dataclass
class _Inputs:
    """What the scorers of one model share: the features of the ID splits they fit on (by
    split name), of the sets they score (the ID test set first), of the validation side
    (``scorer_grids``) and the head."""

    fits: dict[str, Features]
    sets: dict[str, Features]
    val: dict[str, Features]
    head: Head


class _Checkpoint:
    """Scoring one model inside a context: cached passes, and fit + score of one scorer."""

    def __init__(self, ctx: EvalContext, model: ModelAdapter, ckpt_hash: str,
                 progress: Progress) -> None:
        self.ctx, self.model, self.ckpt_hash, self.progress = ctx, model, ckpt_hash, progress

    def features(self, arr: ImageSet, map_scorer: MapScorer | None = None) -> Features:
        ctx = self.ctx
        return ctx.cache.get(self.model, self.ckpt_hash, arr, ctx.preprocess, ctx.device,
                             ctx.bench.extract_batch, self.progress, map_scorer)

    def model_scores(self, scorer: ModelScorer, arrays: Mapping[str, ImageSet],
                     name: str) -> np.ndarray:
        ctx = self.ctx
        return ctx.cache.scores(self.model, self.ckpt_hash, scorer, arrays[name], ctx.preprocess,
                                ctx.device, ctx.bench.extract_batch, self.progress)

    def inputs(self) -> _Inputs:
        """The cached passes every scorer of the context shares, and the model's head (a
        copy): read again after a scorer wrote to them (:class:`InputsChanged`)."""
        ctx = self.ctx
        bench, splits = ctx.bench, ctx.splits
        fits = {FIT_TRAIN: self.features(splits.train)}
        if any(bench.fit_split(n) == FIT_VAL for n in bench.scorers):
            fits[FIT_VAL] = self.features(splits.val)
        sets = ({splits.test.name: self.features(splits.test)}
                | {n: self.features(a) for n, a in ctx.ood.sets.items()})
        tuned = any(n in bench.scorer_grids for n in bench.scorers)
        val = ({VAL_ID: self.features(splits.val)}
               | {n: self.features(a) for n, a in ctx.val_ood.sets.items()} if tuned else {})
        return _Inputs(fits, sets, val, _head(self.model))

    def fit_score(self, scorer: Scorer, fit: tuple[ImageSet, Features], head: Head,
                  sets: Mapping[str, Features],
                  arrays: Mapping[str, ImageSet]) -> dict[str, np.ndarray]:
        """Fit once on ``fit`` (an ID split and its features), score every set (a model scorer
        by passes of its own over the images; a map scorer on its reductions of the feature
        map, from passes of its own, cached)."""
        split, train = fit
        if isinstance(scorer, MapScorer):
            train = self.features(split, scorer)
            sets = {name: self.features(arrays[name], scorer) for name in sets}
        score_set = (partial(self.model_scores, scorer, arrays)
                     if isinstance(scorer, ModelScorer) else None)
        return fit_and_score(scorer, train, head, sets, score_set)


def _head(model: ModelAdapter) -> Head:
    return Head.from_linear(model.fc)


def _grid_record(ctx: EvalContext, trials: list[dict[str, Any]]) -> dict[str, Any]:
    val_names = ", ".join(ctx.val_ood.sets)
    return {"selected_on": f"ID val ({len(ctx.splits.val.labels)} images) vs {val_names}",
            "rule": "lowest mean FPR95, ties by highest mean AUROC", "trials": trials}


def _score_one(
    run: _Checkpoint, name: str, inputs: _Inputs, arrays: dict[str, ImageSet],
) -> tuple[dict[str, np.ndarray], dict[str, Any], str, bool]:
    """(scores per set, parameters and fit facts, failure note, whether it changed
    ``inputs``) of one scorer, fitted on its ID split; a failure leaves no scores and a note,
    and the matrix goes on."""
    bench = run.ctx.bench
    split = bench.fit_split(name)
    fit = (getattr(run.ctx.splits, split), inputs.fits[split])
    head, sets, val = inputs.head, inputs.sets, inputs.val
    values = dict(bench.scorer_params.get(name, {}))
    params: dict[str, Any] = {}
    try:
        if name in bench.scorer_grids:
            val_arrays = {VAL_ID: run.ctx.splits.val} | run.ctx.val_ood.sets

            def trial(candidate: dict[str, Any]) -> dict[str, np.ndarray]:
                scorer = create_scorer(name, **(values | candidate))
                return run.fit_score(scorer, fit, head, val, val_arrays)

            chosen, trials = select_params(bench.scorer_grids[name], trial,
                                           list(run.ctx.val_ood.sets))
            values |= chosen
        scorer = create_scorer(name, **values)
        params = scorer.get_params() | {FIT_KEY: split}
        if name in bench.scorer_grids:
            params["grid_search"] = _grid_record(run.ctx, trials)
        start = time.perf_counter()
        out = run.fit_score(scorer, fit, head, sets, arrays)
        params |= scorer.fit_summary()
        params["seconds"] = round(time.perf_counter() - start, 3)
        return out, params, "", False
    except ScorerFailed as e:
        return {}, params, e.reason, False
    except InputsChanged as e:
        return {}, params, f"{e.reason}; the other scorers get them as extracted", True


def score_model(ctx: EvalContext, model: ModelAdapter, ckpt_hash: str, training: str,
                seed: int) -> ModelResult:
    """Score one model with every scorer of ``ctx.bench``.

    Each scorer is fitted on its ID split (``scorer_fit``: ID-train unless it says ID-val).
    Scorers with a grid in ``scorer_grids`` first pick their parameters on ID-validation vs
    the validation OOD sets (:mod:`oodbench.tuning`); the test sets are scored once, with the
    choice. The model is not changed (extraction works on a prepared copy). A failed
    scorer's rows hold NaN and its failure as ``note``; a scorer whose scores on ID test + an
    OOD set are degenerate (:func:`oodbench.metrics.degenerate_note`) keeps its values, with
    the warning as the rows' ``note``, in its parameters' ``warnings`` and on the console.
    A scorer that writes to the features, logits, labels or head it shares with the others
    fails (:class:`~oodbench.scoring.InputsChanged`), and the next scorers get them read
    again; ID accuracy fails, counting them, where ID test logits are not finite.
    It runs on the torch threads of ``resources.eval`` (:mod:`oodbench.threads`).
    """
    with job_threads(ctx.bench.resources.eval):
        return _scored(ctx, model, ckpt_hash, training, seed)


def _scored(ctx: EvalContext, model: ModelAdapter, ckpt_hash: str, training: str,
            seed: int) -> ModelResult:
    """:func:`score_model`'s work."""
    bench, splits = ctx.bench, ctx.splits
    id_name = splits.test.name  # the benchmark's ID set, or one a caller gave
    with make_progress(transient=True) as prog:
        run = _Checkpoint(ctx, model, ckpt_hash, prog)
        inputs = run.inputs()
    test = inputs.sets[id_name]
    arrays = {id_name: splits.test} | ctx.ood.sets
    base = {"benchmark": bench.name, "training": training, "seed": seed}
    # non-finite logits have no argmax: ID accuracy is a failed cell that counts them
    acc_failure = nonfinite_note(test.logits, f"ID test set {id_name!r}")
    result = ModelResult(
        rows=[base | {"scorer": "", "ood_set": "", "group": "", "metric": ID_ACC,
                      "value": float("nan") if acc_failure
                      else accuracy(test.logits, test.labels), "note": acc_failure}],
        # diagnostics beside the scores: the L2 norm of each sample's penultimate feature
        scores={f"{FEATNORM}/{n}": f.features.double().norm(dim=1).numpy()
                for n, f in inputs.sets.items()},
        params={})
    if acc_failure:
        console.print(f"[red]ID accuracy failed[/red] ({training} s{seed}): {acc_failure}",
                      soft_wrap=True)
    with make_progress(transient=True) as prog:
        run.progress = prog
        task = prog.add_task(f"score {training} s{seed}", total=len(bench.scorers), stats="")
        for name in bench.scorers:
            prog.update(task, stats=name)
            out, params, failure, changed = _score_one(run, name, inputs, arrays)
            if changed:  # the next scorers get the passes as extracted, not as it left them
                inputs = run.inputs()
            result.params[name] = params
            if failure:
                console.print(f"[red]scorer {name} failed[/red] ({training} s{seed}): {failure}",
                              soft_wrap=True)
            # a failed scorer's rows carry its failure; a degenerate one's keep their values
            notes = {s: failure or degenerate_note(out[id_name], out[s])
                     for s in ctx.ood.sets}
            warned = [f"{s}: {n.removeprefix(WARNING)}" for s, n in notes.items()
                      if n and not failure]
            if warned:
                params["warnings"] = warned
                console.print(f"[yellow]warning: scorer {name} gives degenerate scores[/yellow] "
                              f"({training} s{seed}): {'; '.join(warned)}", soft_wrap=True)
            for set_name in ctx.ood.sets:
                metrics = (ood_metrics(out[id_name], out[set_name]) if out
                           else dict.fromkeys(OOD_METRICS, float("nan")))
                result.rows += [base | {"scorer": name, "ood_set": set_name,
                                        "group": ctx.ood.groups[set_name], "metric": m,
                                        "value": v, "note": notes[set_name]}
                                for m, v in metrics.items()]
            result.scores |= {f"{name}/{s}": v for s, v in out.items()}
            prog.advance(task)
    return result


def write_scores(path: Path, scores: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, dtype=np.float64) for k, v in scores.items()})
    atomic_write_bytes(path, buf.getvalue())


def write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


# the files of a results folder that ``ablate`` writes; ``run`` and ``eval`` write the others
ABLATION_PREFIX = "ablation"
ABLATION_MANIFEST = f"{ABLATION_PREFIX}_manifest.json"


def ablation_file(rel: str) -> bool:
    return rel.startswith(ABLATION_PREFIX)


def run_file(rel: str) -> bool:
    return not ablation_file(rel)


def results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a results folder that ``run``, ``eval`` or ``ablate`` wrote (it
    holds one of their manifests), which the next of them may replace."""
    return (folder / MANIFEST_FILE).is_file() or (folder / ABLATION_MANIFEST).is_file()


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


@contextmanager
def exclusive(out: Path, runs: Path, keep: Callable[[str], bool],
              option: str = "out_dir") -> Iterator[Path]:
    """Check that ``out`` and the checkpoint / cache folder ``runs`` can be written, hold the
    lock of ``out`` (which must be a results folder or new: :func:`results_folder`), delete
    the temp files that killed runs left, and yield the staging folder that replaces ``out``
    whole when the block ends normally (:func:`~oodbench.fileio.staged`; ``keep`` names the
    files of ``out`` that another command owns). On any error or interrupt ``out`` is left
    as it was and the partial output stays in the staging folder. ``option`` is the API
    argument that named ``out``'s parent."""
    check_writable(runs, "runs_dir")
    with staged(out, option, results_folder, keep) as stage:
        remove_stale_temps(runs)
        yield stage
    console.print(f"results written to {out}/", soft_wrap=True)


def context(bench: Benchmark, opts: RunOptions, splits: IDSplits | None = None,
             val_side: bool = False) -> tuple[EvalContext, Trainer | None]:
    """The context of a command (and a trainer, unless ``splits`` are given). ``val_side``
    scores ID validation vs the validation OOD sets instead of the test sets."""
    data_root = resolve_data_root(opts.data_root)
    trainer = None
    if splits is None:
        trainer = Trainer(bench, opts.runs_dir, data_root, bench.device, download=opts.download)
        splits = trainer.splits
    cache = FeatureCache(inside(opts.runs_dir, bench.name, "cache"), bench.extract_amp,
                         bench.loader_workers)
    device = trainer.device if trainer else resolve_device(bench.device)
    if val_side:
        val_side_splits = IDSplits.fixed(splits.train, splits.val, splits.val, splits.preprocess)
        ood = load_val_ood(bench, data_root, opts.download)
        return EvalContext(bench, val_side_splits, ood, cache, device,
                           preprocess=trainer.preprocess if trainer else None), trainer
    ood = load_ood_sets(bench, data_root, opts.extra_ood, opts.download)
    val_ood = load_val_ood(bench, data_root, opts.download) if bench.scorer_grids else OODSets()
    return EvalContext(bench, splits, ood, cache, device, val_ood,
                       trainer.preprocess if trainer else None), trainer


def finish_results(df: pd.DataFrame, out: Path, ctx: EvalContext, manifest: dict[str, Any],
                   quiet: bool) -> pd.DataFrame:
    """Write metrics.csv, the manifest (with the hashes of metrics.csv and every scores file,
    which ``plot`` and ``table`` check), the tables and the plots into the staging folder."""
    write_csv(out / METRICS_FILE, df)
    manifest[FILES_KEY] = record_files(out, [METRICS_FILE, *sorted(
        p.relative_to(out).as_posix() for p in (out / SCORES_DIR).glob("*.npz"))])
    write_json(out / MANIFEST_FILE, manifest)
    write_reports(df, out, ctx.bench.name)
    write_plots(out, out / "plots")
    hits, misses = manifest["cache"]["hits"], manifest["cache"]["misses"]
    if misses == 0:
        console.print(f"[green]feature cache: all {hits} entries reused, no forward pass[/]")
    else:
        console.print(f"feature cache: {hits} reused, {misses} extracted")
    if not quiet:
        print_summary(df)
    for name, why in ctx.ood.skipped.items():
        console.print(f"[yellow]skipped OOD set {name}[/yellow]: {why.splitlines()[0]} "
                      "(every way to get it: manifest.json, or `oodbench list`)", soft_wrap=True)
    for arr in (ctx.splits.train, ctx.splits.test, *ctx.ood.sets.values()):
        if isinstance(arr, ImageFiles) and arr.conversions():
            console.print(f"note: {arr.name}/{arr.split} files, as decoded: "
                          f"{'; '.join(arr.conversions())}", markup=False, soft_wrap=True)
    return df


def checkpoint_summary(path: Path, digest: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's path, sha256 and summary keys, for a manifest."""
    return {"path": str(path), "sha256": digest, **{k: meta.get(k) for k in SUMMARY_KEYS}}


def evaluate_checkpoint(
    path: Path | str,
    bench: Benchmark,
    out_dir: Path | str,
    scorers: list[str] | str | None = None,
    model_args: Mapping[str, Any] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Run every scorer of ``bench`` on one checkpoint (oodbench's, or a plain state_dict).

    ``model_args`` (``arch``, ``num_classes``, ``in_channels``) describe a plain state_dict.
    The checkpoint's own normalisation statistics are used when it records them, otherwise
    the benchmark's ID-train statistics. Writes ``out_dir/eval-<checkpoint file stem>/``
    (:func:`eval_folder`), whole. ``options`` are :class:`RunOptions`.
    """
    opts = RunOptions.of(options)
    given, bench = bench, bench.with_overrides(scorers=scorers, device=opts.device)
    out = eval_folder(out_dir, Path(path).stem, "checkpoint file name")
    runs = inside(opts.runs_dir, bench.name)
    check_folders(bench, opts, "out_dir", out_dir, out, runs,
                  Owned("checkpoint", path, path, "checkpoint", writes=False))
    started = Started()
    with exclusive(out, runs, ablation_file) as stage:
        args = dict(model_args or {})
        model, meta = load_checkpoint(path, args.get("arch"), args.get("num_classes"),
                                      args.get("in_channels") or bench.channels,
                                      bench.widths or None)
        splits = load_id_splits(bench, resolve_data_root(opts.data_root), opts.download)
        preprocess = splits.preprocess
        if "normalisation" in meta:
            norm = meta["normalisation"]
            preprocess = Preprocess(meta.get("image_size", bench.image_size),
                                    meta.get("in_channels", bench.channels), tuple(norm["mean"]),
                                    tuple(norm["std"]))
        ctx, _ = context(bench, opts, splits)
        ctx.preprocess = preprocess
        digest = file_hash(path)
        training = check_name(str(meta.get("training", Path(path).stem)), "training name")
        return _write_model_results(
            ctx, score_model(ctx, model, digest, training, 0), training, stage, started, given,
            opts.quiet, checkpoint={"path": str(path), "sha256": digest, "meta": meta})


def eval_folder(out_dir: Path | str, name: str, what: str) -> Path:
    """``out_dir/eval-<name>``: the results folder of ``eval`` (``name``, a safe name, is the
    checkpoint's file stem or the model's name); ``out_dir`` itself is never replaced."""
    return inside(out_dir, EVAL_PREFIX + check_name(name, what))


def _write_model_results(ctx: EvalContext, result: ModelResult, training: str, stage: Path,
                         started: Started, given: Benchmark, quiet: bool,
                         **specific: Any) -> pd.DataFrame:
    """Write one scored model's results folder (scores, metrics, manifest, tables, plots)."""
    write_scores(scores_file(stage, training, 0), result.scores)
    manifest = ctx.manifest(started, given, seeds=[0], scorers=list(ctx.bench.scorers),
                            scorer_params={f"{training}-s0": result.params}, **specific)
    return finish_results(pd.DataFrame(result.rows, columns=list(COLUMNS)), stage, ctx,
                          manifest, quiet)


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


def evaluate(
    model: nn.Module,
    benchmark: Benchmark | str = "fmnist",
    *,
    id_train: Any = None,
    id_test: Any = None,
    ood: Mapping[str, Any] | None = None,
    scorers: list[str] | str | None = None,
    device: str | None = None,
    batch_size: int | str | None = None,
    out: Path | str | None = None,
    cache_dir: Path | str | None = None,
    name: str = "model",
    input_size: int | None = None,
    adapter: Mapping[str, Any] | None = None,
    config: Path | str | None = None,
    weights: Path | str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Score ``model`` (any nn.Module :func:`~oodbench.adapters.adapt` takes, or an adapter)
    with every scorer of a benchmark; returns the tidy metrics frame of ``metrics.csv``.

    ``benchmark`` (a name, from ``config`` or the packaged file, or a :class:`Benchmark`)
    gives the ID set, the OOD sets and the scorers with their parameters. ``id_train`` and
    ``id_test`` (labelled), and ``ood`` (name -> data), replace its sets: torch Datasets or
    DataLoaders, ImageArrays or ``(images, labels)`` pairs (:mod:`oodbench.data.convert`);
    with ID sets of its own the rows are labelled benchmark ``custom``. Images are
    preprocessed as the model wants (:func:`model_preprocess`). ``scorers`` (names or
    groups), ``device`` and ``batch_size`` override the benchmark's; ``adapter`` holds
    options for :func:`adapt` (``feature_layer``, ``head_layer``, ``preprocess``); ``name``
    labels the model's rows. ``weights`` (a ``.safetensors`` or ``.pt`` state_dict) is loaded
    into ``model`` once the folders are checked (``out`` may not contain it).

    Nothing is written unless ``out`` is given (then ``out/eval-<name>/`` gets the files of
    ``oodbench run``, replaced whole: :func:`eval_folder`) or ``cache_dir`` (the feature
    cache, keyed by a fingerprint of the model's weights). ``options`` are
    :class:`RunOptions` (``data_root``, ``download``, ``quiet``; quiet by default).
    """
    started = Started()
    opts = RunOptions.of({"quiet": True} | options)
    if out is not None:
        check_writable(Path(out), "out")
    given = load_benchmark(benchmark, config) if isinstance(benchmark, str) else benchmark
    bench = given.with_overrides(scorers=scorers, device=device or opts.device,
                                 extract_batch=batch_size)
    check_name(name, "model name")
    target = eval_folder(out, name, "model name") if out is not None else None
    check_folders(given, opts, "out", out, target, None,
                  Owned("cache_dir", cache_dir, cache_dir, "feature cache")
                  if cache_dir is not None else None,
                  Owned("weights", weights, weights, "weights file", writes=False)
                  if weights is not None else None)
    if weights is not None:
        load_into(model, read_weights(weights), weights)
    net = adapt(model, **(adapter or {}))
    if net.fc.out_features < bench.num_classes:
        raise ConfigError(f"the model's head has {net.fc.out_features} outputs, but benchmark "
                          f"{bench.name!r} has {bench.num_classes} classes",
                          "give the model a head with as many outputs as the benchmark's "
                          "classes (e.g. num_classes= when building it)")
    data_root = resolve_data_root(opts.data_root)
    if (id_train is None) != (id_test is None):
        raise ConfigError("give both <id_train> and <id_test>, or neither (the benchmark's)")
    if id_train is None:
        splits = load_id_splits(bench, data_root, opts.download)
    else:
        splits = given_splits(as_image_array(id_train, "id", "train"),
                              as_image_array(id_test, "id", "test"), bench.image_size,
                              bench.channels, net.fc.out_features)
        bench = dataclasses.replace(bench, name="custom")
    if ood is None:
        sets = load_ood_sets(bench, data_root, opts.extra_ood, opts.download)
    else:
        arrays = {check_name(n, "OOD set name"): as_image_array(d, n) for n, d in ood.items()}
        sets = OODSets(arrays, dict.fromkeys(arrays, "custom"))
    cache = FeatureCache(cache_dir, bench.extract_amp, bench.loader_workers)
    ctx = EvalContext(bench, splits, sets, cache,
                      resolve_device(bench.device),
                      preprocess=model_preprocess(net, bench, splits, input_size))
    digest = weights_fingerprint(net)
    if target is None:
        result = score_model(ctx, net, digest, name, 0)
        df = pd.DataFrame(result.rows, columns=list(COLUMNS))
        if not opts.quiet:
            print_summary(df)
        return df
    with exclusive(target, Path(cache_dir or target), ablation_file, "out") as stage:
        return _write_model_results(ctx, score_model(ctx, net, digest, name, 0), name, stage,
                                    started, given, opts.quiet,
                                    model={"class": f"{type(model).__module__}."
                                           f"{type(model).__qualname__}",
                                           "adapter": type(net).__name__,
                                           "weights_sha256": digest})


def recorded_rows(id_acc: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of what a checkpoint's training recorded (``test_acc``, the objective's
    diagnostics), shaped as the checkpoint's ``id_acc`` row, without its note: a failed
    ``id_acc`` (non-finite logits now) says nothing about numbers recorded in training."""
    recorded = {"test_acc": meta.get("test_acc"), **(meta.get("diagnostics") or {})}
    return [id_acc | {"metric": k, "value": v, "note": ""}
            for k, v in recorded.items() if v is not None]


def ablate_benchmark(
    bench: Benchmark,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    **options: Any,
) -> pd.DataFrame:
    """Train every ``ablate`` variant and score it on the validation side only.

    ID = the held-out validation part of the ID training split, OOD = ``val_ood``: the test
    OOD sets are never touched, so defaults chosen from this table are not tuned on them.
    Scored with ``ablate_scorers`` (default: the benchmark's scorers). Writes
    ``out_dir/<benchmark>/ablation.csv``, ``ablation.md`` and ``ablation_manifest.json`` (the
    folder's other files are kept); the staging folder has them after every variant, and a
    re-run of an interrupted sweep reuses its finished checkpoints. ``options`` are
    :class:`RunOptions`.
    """
    opts = RunOptions.of(options)
    given, bench = bench, bench.with_overrides(scorers=list(bench.ablate_scorers or bench.scorers),
                                 seeds=seeds or 1, device=opts.device)
    if not bench.val_ood:
        raise ConfigError(f"{bench.source}: benchmark {bench.name!r} defines no val_ood set to "
                          "ablate against", "add val_ood = [...] to its table")
    on_val = [n for n in bench.scorers if bench.fit_split(n) == FIT_VAL]
    if on_val:
        raise ConfigError(f"{bench.source}: ablate scores the ID-validation images, which "
                          f"{', '.join(on_val)} would be fitted on (scorer_fit)",
                          "leave them out of ablate_scorers or fit them on \"train\"")
    out = inside(out_dir, check_name(bench.name, "benchmark name"))
    runs = inside(opts.runs_dir, bench.name)
    check_folders(bench, opts, "out_dir", out_dir, out, runs)
    started = Started()
    with exclusive(out, runs, run_file) as stage:
        ctx, trainer = context(bench, opts, val_side=True)
        assert trainer is not None
        variants = [(spec, seed) for seed in range(bench.seeds)
                    for spec in (*bench.trainings, *bench.ablate)]
        described = {k: v for spec, _ in variants
                     for k, v in get_objective(spec.objective).DIAGNOSTICS.items()}
        settings = {spec.name: (f"{spec.objective} {spec.params} init={spec.init} "
                                f"epochs={spec.train.epochs} lr={spec.train.lr}")
                    for spec, _ in variants}
        rows: list[dict[str, Any]] = []
        checkpoints: dict[str, Any] = {}
        table = ""
        for spec, seed in variants:
            path = trainer.ensure(spec.name, seed)
            model, meta = load_checkpoint(path)
            digest = file_hash(path)
            result = score_model(ctx, model, digest, spec.name, seed)
            rows += result.rows + recorded_rows(result.rows[0], meta)
            checkpoints[f"{spec.name}-s{seed}"] = checkpoint_summary(path, digest, meta) | {
                "params": spec.params, "train": asdict(spec.train)}
            df = pd.DataFrame(rows, columns=list(COLUMNS))
            table = ablation_table(df, bench.name, list(bench.val_ood), settings,
                                   {f"{k}_test": v for k, v in described.items()},
                                   baseline=bench.trainings[0].name)
            if len(checkpoints) < len(variants):
                table += f"\nPartial: {len(checkpoints)} of {len(variants)} variants so far.\n"
            write_csv(stage / f"{ABLATION_PREFIX}.csv", df)
            atomic_write_bytes(stage / f"{ABLATION_PREFIX}.md", table.encode())
            write_json(stage / ABLATION_MANIFEST, ctx.manifest(
                started, given, seeds=list(range(bench.seeds)), scorers=list(bench.scorers),
                checkpoints=checkpoints))
        if not opts.quiet:
            console.print(table, markup=False)
        return pd.DataFrame(rows, columns=list(COLUMNS))
