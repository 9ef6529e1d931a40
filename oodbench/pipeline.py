"""The commands that score models: ``evaluate_checkpoint`` scores one checkpoint a user brings,
``evaluate`` one ``nn.Module``, and ``ablate_benchmark`` training variants on the validation
side; ``oodbench run`` (:mod:`oodbench.matrix`) builds its jobs on the same pieces. They are
plain functions, usable from a notebook, with one style: the model or benchmark they work on
positionally, everything else as keyword arguments named as the benchmark fields and the
other commands' (:class:`~oodbench.context.RunOptions`). Each builds one
:class:`~oodbench.context.EvalContext`, scores with :func:`~oodbench.evaluation.score_model`
and writes through :mod:`oodbench.writers`. Every check on their arguments runs before any
training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from oodbench.adapters import ModelAdapter, adapt
from oodbench.check import load_benchmark, override
from oodbench.checkpoint import load_checkpoint
from oodbench.config import EVAL_PREFIX, FIT_VAL, Benchmark, ConfigError, check_name
from oodbench.context import (
    EvalContext,
    RunOptions,
    check_folders,
    context,
    make_trainer,
    model_preprocess,
    runs_cache,
)
from oodbench.data import Preprocess, resolve_data_root
from oodbench.data.convert import as_image_array
from oodbench.evaluation import score_model
from oodbench.extract import weights_fingerprint
from oodbench.fileio import Owned, atomic_write_bytes, check_writable, file_hash, inside
from oodbench.manifest import Started
from oodbench.metrics import COLUMNS
from oodbench.objectives import get_objective
from oodbench.oodsets import OODSets
from oodbench.progress import console
from oodbench.registry import qualified
from oodbench.report import ablation_table, print_summary
from oodbench.splits import IDSplits, given_splits, load_id_splits
from oodbench.train import Trainer
from oodbench.weights import load_into, read_weights
from oodbench.writers import (
    ABLATION_MANIFEST,
    ABLATION_PREFIX,
    ablation_file,
    checkpoint_summary,
    exclusive,
    run_file,
    write_csv,
    write_json,
    write_model_results,
)


def evaluate_checkpoint(
    path: Path | str,
    bench: Benchmark,
    *,
    out_dir: Path | str = "results",
    scorers: list[str] | str | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    extra_ood: Mapping[str, Path | str] | None = None,
    download: bool = False,
    quiet: bool = False,
) -> pd.DataFrame:
    """Run every scorer of ``bench`` on one checkpoint (oodbench's, or a plain state_dict).

    ``arch``, ``num_classes`` and ``in_channels`` describe a plain state_dict. The
    checkpoint's own normalisation statistics are used when it records them, otherwise the
    benchmark's ID-train statistics. Writes ``out_dir/eval-<checkpoint file stem>/``
    (:func:`eval_folder`), whole. ``scorers`` and ``device`` override the benchmark's; the
    other options are :class:`~oodbench.context.RunOptions`'.
    """
    opts = RunOptions(runs_dir, data_root, dict(extra_ood or {}), download, quiet)
    given, bench = bench, override(bench, scorers=scorers, device=device)
    out = eval_folder(out_dir, Path(path).stem, "checkpoint file name")
    runs = inside(runs_dir, bench.name)
    check_folders(bench, opts, "out_dir", out_dir, out, runs,
                  Owned("checkpoint", path, path, "checkpoint", writes=False))
    started = Started()
    with exclusive(out, runs, ablation_file) as stage:
        model, meta = load_checkpoint(path, arch, num_classes, in_channels or bench.channels,
                                      bench.widths or None)
        splits = load_id_splits(bench, resolve_data_root(data_root), download)
        preprocess = splits.preprocess
        if "normalisation" in meta:
            norm = meta["normalisation"]
            preprocess = Preprocess(meta.get("image_size", bench.image_size),
                                    meta.get("in_channels", bench.channels), tuple(norm["mean"]),
                                    tuple(norm["std"]))
        ctx = context(bench, opts, splits, runs_cache(bench, opts), preprocess=preprocess)
        digest = file_hash(path)
        training = check_name(str(meta.get("training", Path(path).stem)), "training name")
        return write_model_results(
            ctx, score_model(ctx, model, digest, training, 0), training, stage, started, given,
            quiet, checkpoint={"path": str(path), "sha256": digest, "meta": meta})


def eval_folder(out_dir: Path | str, name: str, what: str) -> Path:
    """``out_dir/eval-<name>``: the results folder of ``eval`` (``name``, a safe name, is the
    checkpoint's file stem or the model's name); ``out_dir`` itself is never replaced."""
    return inside(out_dir, EVAL_PREFIX + check_name(name, what))


def _check_head(net: ModelAdapter, bench: Benchmark) -> None:
    """Refuse a model whose head has fewer outputs than the benchmark has classes."""
    if net.fc.out_features < bench.num_classes:
        raise ConfigError(f"the model's head has {net.fc.out_features} outputs, but benchmark "
                          f"{bench.name!r} has {bench.num_classes} classes",
                          "give the model a head with as many outputs as the benchmark's "
                          "classes (e.g. num_classes= when building it)")


def _id_splits(bench: Benchmark, opts: RunOptions, net: ModelAdapter, id_train: Any,
               id_test: Any) -> tuple[Benchmark, IDSplits]:
    """The benchmark's ID splits, or the caller's ``id_train`` and ``id_test`` (both or
    neither), with the benchmark then named ``custom``."""
    if (id_train is None) != (id_test is None):
        raise ConfigError("give both <id_train> and <id_test>, or neither (the benchmark's)")
    if id_train is None:
        return bench, load_id_splits(bench, resolve_data_root(opts.data_root), opts.download)
    splits = given_splits(as_image_array(id_train, "id", "train"),
                          as_image_array(id_test, "id", "test"), bench.image_size,
                          bench.channels, net.fc.out_features)
    return dataclasses.replace(bench, name="custom"), splits


def _given_ood(ood: Mapping[str, Any]) -> OODSets:
    """A caller's OOD sets (name -> data), in group ``custom``."""
    arrays = {check_name(n, "OOD set name"): as_image_array(d, n) for n, d in ood.items()}
    return OODSets(arrays, dict.fromkeys(arrays, "custom"))


def evaluate(
    model: nn.Module,
    benchmark: Benchmark | str = "fmnist",
    *,
    id_train: Any = None,
    id_test: Any = None,
    ood: Mapping[str, Any] | None = None,
    scorers: list[str] | str | None = None,
    device: str | None = None,
    extract_batch: int | str | None = None,
    out_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    name: str = "model",
    input_size: int | None = None,
    adapter: Mapping[str, Any] | None = None,
    config: Path | str | None = None,
    weights: Path | str | None = None,
    data_root: Path | str | None = None,
    extra_ood: Mapping[str, Path | str] | None = None,
    download: bool = False,
    quiet: bool = True,
) -> pd.DataFrame:
    """Score ``model`` (any nn.Module :func:`~oodbench.adapters.adapt` takes, or an adapter)
    with every scorer of a benchmark; returns the tidy metrics frame of ``metrics.csv``.

    ``benchmark`` (a name, from ``config`` or the packaged file, or a :class:`Benchmark`)
    gives the ID set, the OOD sets and the scorers with their parameters. ``id_train`` and
    ``id_test`` (labelled), and ``ood`` (name -> data), replace its sets: torch Datasets or
    DataLoaders, ImageArrays or ``(images, labels)`` pairs (:mod:`oodbench.data.convert`);
    with ID sets of its own the rows are labelled benchmark ``custom``. Images are
    preprocessed as the model wants (:func:`~oodbench.context.model_preprocess`).
    ``scorers`` (names or groups), ``device`` and ``extract_batch`` override the benchmark's;
    ``adapter`` holds options for :func:`adapt` (``feature_layer``, ``head_layer``,
    ``preprocess``); ``name`` labels the model's rows. ``weights`` (a ``.safetensors`` or
    ``.pt`` state_dict) is loaded into ``model`` once the folders are checked (``out_dir``
    may not contain it).

    Nothing is written unless ``out_dir`` is given (then ``out_dir/eval-<name>/`` gets the
    files of ``oodbench run``, replaced whole: :func:`eval_folder`) or ``cache_dir`` (the
    feature cache, keyed by a fingerprint of the model's weights). ``data_root``,
    ``extra_ood``, ``download`` and ``quiet`` (quiet by default) are
    :class:`~oodbench.context.RunOptions`'.
    """
    started = Started()
    opts = RunOptions(data_root=data_root, extra_ood=dict(extra_ood or {}),
                      download=download, quiet=quiet)
    if out_dir is not None:
        check_writable(Path(out_dir), "out_dir")
    given = load_benchmark(benchmark, config) if isinstance(benchmark, str) else benchmark
    bench = override(given, scorers=scorers, device=device, extract_batch=extract_batch)
    check_name(name, "model name")
    target = eval_folder(out_dir, name, "model name") if out_dir is not None else None
    check_folders(given, opts, "out_dir", out_dir, target, None,
                  Owned("cache_dir", cache_dir, cache_dir, "feature cache")
                  if cache_dir is not None else None,
                  Owned("weights", weights, weights, "weights file", writes=False)
                  if weights is not None else None)
    if weights is not None:
        load_into(model, read_weights(weights), weights)
    net = adapt(model, **(adapter or {}))
    _check_head(net, bench)
    bench, splits = _id_splits(bench, opts, net, id_train, id_test)
    ctx = context(bench, opts, splits, cache_dir,
                  preprocess=model_preprocess(net, bench, splits, input_size),
                  ood=None if ood is None else _given_ood(ood))
    digest = weights_fingerprint(net)
    if target is None:
        df = pd.DataFrame(score_model(ctx, net, digest, name, 0).rows, columns=list(COLUMNS))
        if not quiet:
            print_summary(df)
        return df
    with exclusive(target, Path(cache_dir or target), ablation_file,
                   runs_option="cache_dir" if cache_dir is not None else "out_dir") as stage:
        return write_model_results(ctx, score_model(ctx, net, digest, name, 0), name, stage,
                                   started, given, quiet,
                                   model={"class": qualified(type(model)),
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
    *,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    download: bool = False,
    quiet: bool = False,
) -> pd.DataFrame:
    """Train every ``ablate`` variant and score it on the validation side only.

    ID = the held-out validation part of the ID training split, OOD = ``val_ood``: the test
    OOD sets are never touched, so defaults chosen from this table are not tuned on them.
    Scored with ``ablate_scorers`` (default: the benchmark's scorers). Writes
    ``out_dir/<benchmark>/ablation.csv``, ``ablation.md`` and ``ablation_manifest.json`` (the
    folder's other files are kept); the staging folder has them after every variant, and a
    re-run of an interrupted sweep reuses its finished checkpoints. ``seeds`` (default 1) and
    ``device`` override the benchmark's; the other options are
    :class:`~oodbench.context.RunOptions`'.
    """
    opts = RunOptions(runs_dir, data_root, {}, download, quiet)
    given, bench = bench, override(bench, scorers=list(bench.ablate_scorers or bench.scorers),
                                   seeds=seeds or 1, device=device)
    if not bench.val_ood:
        raise ConfigError(f"{bench.source}: benchmark {bench.name!r} defines no val_ood set to "
                          "ablate against", "add val_ood = [...] to its table")
    on_val = [n for n in bench.scorers if bench.fit_split(n) == FIT_VAL]
    if on_val:
        raise ConfigError(f"{bench.source}: ablate scores the ID-validation images, which "
                          f"{', '.join(on_val)} would be fitted on (scorer_fit)",
                          "leave them out of ablate_scorers or fit them on \"train\"")
    out = inside(out_dir, check_name(bench.name, "benchmark name"))
    runs = inside(runs_dir, bench.name)
    check_folders(bench, opts, "out_dir", out_dir, out, runs)
    started = Started()
    with exclusive(out, runs, run_file) as stage:
        trainer = make_trainer(bench, opts)
        ctx = context(bench, opts, trainer.splits, runs_cache(bench, opts),
                      preprocess=trainer.preprocess, val_side=True)
        rows, table = _ablate(ctx, trainer, stage, started, given)
        if not quiet:
            console.print(table, markup=False)
        return pd.DataFrame(rows, columns=list(COLUMNS))


def _ablate(ctx: EvalContext, trainer: Trainer, stage: Path, started: Started,
            given: Benchmark) -> tuple[list[dict[str, Any]], str]:
    """Train and score each variant of :func:`ablate_benchmark` in turn, writing the table,
    rows and manifest into ``stage`` after each; returns the rows and the table."""
    bench = ctx.bench
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
    return rows, table
