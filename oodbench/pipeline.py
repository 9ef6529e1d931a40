"""The compatibility matrix: checkpoints -> cached features -> every scorer -> metrics -> reports.

``run_benchmark`` is what ``oodbench run`` calls; ``evaluate_checkpoint`` scores one model a
user brings. Both are plain functions, usable from a notebook.
"""

from __future__ import annotations

import io
import json
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from oodbench.checkpoint import file_hash, load_checkpoint
from oodbench.config import Benchmark, OODSpec
from oodbench.data import DatasetUnavailable, ImageArray, Preprocess, load_dataset, load_path
from oodbench.data.preprocess import conversion_note
from oodbench.extract import FeatureCache, data_fingerprint
from oodbench.fileio import atomic_write_bytes, remove_stale_temps
from oodbench.lock import output_lock
from oodbench.metrics import accuracy, ood_metrics
from oodbench.models import OODNet
from oodbench.plots import FEATNORM, plot_results
from oodbench.progress import console, make_progress
from oodbench.provenance import code_version, library_versions
from oodbench.report import print_summary, write_reports
from oodbench.scoring import (
    Features,
    Head,
    ModelScorer,
    Scorer,
    ScorerFailed,
    create_scorer,
    fit_and_score,
    load_builtin_scorers,
)
from oodbench.splits import IDSplits, load_id_splits
from oodbench.train import Trainer, resolve_device
from oodbench.tuning import VAL_ID, select_params

COLUMNS = ["benchmark", "training", "seed", "scorer", "ood_set", "group", "metric", "value", "note"]
OOD_METRICS = ("fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out")


@dataclass
class OODSets:
    """The OOD test sets that loaded here, their groups, and the ones skipped (with why)."""

    sets: dict[str, ImageArray] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_ood_sets(
    bench: Benchmark,
    data_root: Path | str | None = None,
    extra: dict[str, Path] | None = None,
    download: bool = False,
) -> OODSets:
    """Load the benchmark's OOD sets, its ``extra_ood`` entries, and ``extra`` (the CLI's
    ``--extra-ood NAME=PATH``: image folders or ``.npz`` files, group ``extra``)."""
    out = OODSets()
    shape = (bench.image_size, bench.image_size, bench.channels)
    for spec in bench.ood:
        try:
            out.sets[spec.name] = load_dataset(spec.name, "test", data_root, download=download,
                                              image_shape=shape)
            out.groups[spec.name] = spec.group
        except DatasetUnavailable as e:
            out.skipped[spec.name] = str(e)
    user = [*bench.extra_ood, *(OODSpec(n, "extra", str(p)) for n, p in (extra or {}).items())]
    for spec in user:
        if spec.name in out.sets or spec.name in out.skipped or spec.name == bench.id_dataset:
            raise ValueError(f"extra OOD set name {spec.name!r} clashes with a set of the "
                             "benchmark")
        out.sets[spec.name] = load_path(Path(spec.path), spec.name)
        out.groups[spec.name] = spec.group
    for name, arr in out.sets.items():
        if len(arr.labels) == 0:
            raise ValueError(f"OOD set {name!r} ({arr.source}) holds no images; give it at "
                             "least one image or leave it out")
        note = conversion_note(arr.images.shape[1:], bench.image_size, bench.channels)
        if note:
            console.print(f"note: OOD set {name!r} is converted to the ID input "
                          f"{shape[0]}x{shape[1]}x{shape[2]}: {note}", markup=False,
                          soft_wrap=True)
    return out


def score_model(
    model: OODNet,
    ckpt_hash: str,
    bench: Benchmark,
    splits: IDSplits,
    preprocess: Preprocess,
    ood: OODSets,
    cache: FeatureCache,
    device: torch.device,
    scorers: list[str],
    label: tuple[str, int],
    val_ood: OODSets | None = None,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Score one model with every scorer; returns (metric rows, per-sample scores, params).

    Scorers with a grid in ``bench.scorer_grids`` first pick their parameters on ID-validation
    vs ``val_ood`` (:mod:`oodbench.tuning`); the test sets are scored once, with the choice.
    """
    training, seed = label
    tuned = [n for n in scorers if n in bench.scorer_grids]
    if tuned and (val_ood is None or not val_ood.sets or not len(splits.val.labels)):
        raise ValueError(f"scorer_grids ({', '.join(tuned)}) need ID validation images "
                         "(val_fraction > 0) and a val_ood set to select on")
    with make_progress(transient=True) as prog:
        get = lambda arr: cache.get(  # noqa: E731
            model, ckpt_hash, arr, preprocess, device, bench.extract_batch, prog)
        train, test = get(splits.train), get(splits.test)
        ood_feats = {name: get(arr) for name, arr in ood.sets.items()}
        val_sets = ({VAL_ID: get(splits.val)} | {n: get(a) for n, a in val_ood.sets.items()}
                    if tuned and val_ood else {})
    val_arrays = {VAL_ID: splits.val} | (val_ood.sets if tuned and val_ood else {})
    head = Head(model.fc.weight.detach().float().cpu(), model.fc.bias.detach().float().cpu())
    base = {"benchmark": bench.name, "training": training, "seed": seed}
    rows: list[dict[str, Any]] = [base | {"scorer": "", "ood_set": "", "group": "",
                                          "metric": "id_acc", "value": accuracy(test.logits,
                                                                                test.labels),
                                          "note": ""}]
    scores: dict[str, np.ndarray] = {}
    params: dict[str, dict[str, Any]] = {}
    sets = {bench.id_dataset: test} | ood_feats
    arrays = {bench.id_dataset: splits.test} | ood.sets
    # diagnostics beside the scores: the L2 norm of each sample's penultimate feature
    scores |= {f"{FEATNORM}/{n}": f.features.norm(dim=1).numpy().astype(np.float32)
               for n, f in sets.items()}
    with make_progress(transient=True) as prog:

        def fit_score(scorer: Scorer, on: dict[str, Features],
                      images: dict[str, ImageArray]) -> dict[str, np.ndarray]:
            score_set = None
            if isinstance(scorer, ModelScorer):  # scores need passes of their own
                run = partial(cache.scores, model, ckpt_hash, scorer)
                score_set = lambda n: run(  # noqa: E731
                    images[n], preprocess, device, bench.extract_batch, prog)
            return fit_and_score(scorer, train, head, on, score_set)

        task = prog.add_task(f"score {training} s{seed}", total=len(scorers), stats="")
        for name in scorers:
            prog.update(task, stats=name)
            note = ""
            try:
                values = dict(bench.scorer_params.get(name, {}))
                trials: list[dict[str, Any]] = []
                if name in bench.scorer_grids:
                    chosen, trials = select_params(
                        bench.scorer_grids[name],
                        lambda c, n=name, v=values: fit_score(create_scorer(n, **(v | c)),
                                                              val_sets, val_arrays),
                        [n for n in val_sets if n != VAL_ID])
                    values |= chosen
                scorer = create_scorer(name, **values)
                params[name] = scorer.get_params()
                if trials:
                    params[name]["grid_search"] = {
                        "selected_on": f"ID val ({len(splits.val.labels)} images) vs "
                                       f"{', '.join(n for n in val_sets if n != VAL_ID)}",
                        "rule": "lowest mean FPR95, ties by highest mean AUROC",
                        "trials": trials}
                start = time.perf_counter()
                out = fit_score(scorer, sets, arrays)
                params[name] |= scorer.fit_summary()
                params[name]["seconds"] = round(time.perf_counter() - start, 3)
            except (ScorerFailed, TypeError, KeyError, ValueError) as e:
                note = getattr(e, "reason", f"{type(e).__name__}: {e}")
                console.print(f"[red]scorer {name} failed[/red] ({training} s{seed}): {note}")
                out = {}
            for set_name in ood.sets:
                metrics = (ood_metrics(out[bench.id_dataset], out[set_name]) if out
                           else dict.fromkeys(OOD_METRICS, float("nan")))
                rows += [base | {"scorer": name, "ood_set": set_name,
                                 "group": ood.groups[set_name], "metric": m, "value": v,
                                 "note": note} for m, v in metrics.items()]
            scores |= {f"{name}/{s}": v.astype(np.float32) for s, v in out.items()}
            prog.advance(task)
    return rows, scores, params


def load_val_ood(bench: Benchmark, data_root: Path | str | None = None,
                 download: bool = False) -> OODSets:
    """The benchmark's validation OOD sets (used to select, never to report)."""
    shape = (bench.image_size, bench.image_size, bench.channels)
    return OODSets({n: load_dataset(n, "test", data_root, download=download, image_shape=shape)
                    for n in bench.val_ood}, dict.fromkeys(bench.val_ood, "val"))


def _write_scores(path: Path, scores: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **scores)
    atomic_write_bytes(path, buf.getvalue())


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def _start() -> tuple[float, dict[str, object]]:
    """The start time and the code version, read when a command starts: a checkout that
    changes while it runs must not be recorded as the code that ran."""
    return time.perf_counter(), code_version()


def _provenance(start: tuple[float, dict[str, object]]) -> dict[str, Any]:
    """What every manifest records about how it was made."""
    started, code = start
    runtime = {"python": sys.version, "platform": platform.platform(),
               "torch": torch.__version__, "cuda": torch.version.cuda,
               "torch_threads": torch.get_num_threads()}
    return {"versions": library_versions(), "runtime": runtime, "code": code,
            "command": sys.argv, "seconds": round(time.perf_counter() - started, 1)}


@contextmanager
def _exclusive(out: Path, runs: Path) -> Iterator[None]:
    """Hold the lock of the output folder ``out``, and first delete the temp files that killed
    runs left in ``out`` and in the checkpoint / cache folder ``runs``."""
    with output_lock(out):
        for folder in (out, runs):
            remove_stale_temps(folder)
        yield


def _dataset_info(arr: ImageArray) -> dict[str, Any]:
    return {"n": len(arr.labels), "shape": list(arr.images.shape[1:]), "source": arr.source,
            "sha256": data_fingerprint(arr)}


def _val_ood_info(val_ood: OODSets | None) -> dict[str, Any]:
    """Data info of the sets a scorer grid selected on (none without scorer_grids)."""
    return {n: _dataset_info(a) for n, a in val_ood.sets.items()} if val_ood else {}


def _finish(df: pd.DataFrame, out: Path, bench: Benchmark, manifest: dict[str, Any],
            quiet: bool) -> pd.DataFrame:
    _write_csv(out / "metrics.csv", df)
    _write_json(out / "manifest.json", manifest)
    write_reports(df, out, bench.name)
    plot_results(out)
    if not quiet:
        print_summary(df)
        for name, why in manifest["skipped_ood_sets"].items():
            console.print(f"[yellow]skipped OOD set {name}[/yellow]: {why.splitlines()[0]} "
                          "(every way to get it: manifest.json, or `oodbench list`)")
        console.print(f"results written to {out}/")
    return df


def run_benchmark(
    bench: Benchmark,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    scorers: list[str] | None = None,
    extra_ood: dict[str, Path] | None = None,
    quiet: bool = False,
    download: bool = False,
) -> pd.DataFrame:
    """Train what is missing, extract (cached), score, and write ``out_dir/<benchmark>/``."""
    out = Path(out_dir) / bench.name
    with _exclusive(out, Path(runs_dir) / bench.name):
        load_builtin_scorers()
        started = _start()
        scorer_names = list(scorers or bench.scorers)
        n_seeds = seeds or bench.seeds
        trainer = Trainer(bench, runs_dir, data_root, device, download=download)
        ood = load_ood_sets(bench, data_root, extra_ood, download)
        val_ood = load_val_ood(bench, data_root, download) if bench.scorer_grids else None
        cache = FeatureCache(Path(runs_dir) / bench.name / "cache", bench.extract_amp)
        rows: list[dict[str, Any]] = []
        checkpoints: dict[str, Any] = {}
        scorer_params: dict[str, Any] = {}
        for seed in range(n_seeds):
            for spec in bench.trainings:
                path = trainer.ensure(spec.name, seed)
                model, meta = load_checkpoint(path)
                digest = file_hash(path)
                r, scores, scorer_params[f"{spec.name}-s{seed}"] = score_model(
                    model, digest, bench, trainer.splits, trainer.splits.preprocess, ood, cache,
                    trainer.device, scorer_names, (spec.name, seed), val_ood)
                rows += r
                _write_scores(out / "scores" / f"{spec.name}-s{seed}.npz", scores)
                checkpoints[f"{spec.name}-s{seed}"] = {
                    "path": str(path), "sha256": digest,
                    **{k: meta.get(k) for k in ("config_hash", "test_acc", "val_acc",
                                                "bg_norm_test", "fg_norm_test", "objective",
                                                "objective_params", "init", "train_stats")}}
        if cache.misses == 0:
            console.print(f"[green]feature cache: all {cache.hits} entries reused, no forward "
                          "pass[/]")
        else:
            console.print(f"feature cache: {cache.hits} reused, {cache.misses} extracted")
        manifest = {
            "benchmark": bench.name, "config_file": bench.source,
            "config_hash": bench.config_hash(), "config": bench.to_dict(),
            "seeds": list(range(n_seeds)), "scorers": scorer_names,
            "scorer_params": scorer_params, "checkpoints": checkpoints,
            "id_dataset": {s: _dataset_info(getattr(trainer.splits, s))
                           for s in ("train", "val", "test")},
            "ood_sets": {n: _dataset_info(a) | {"group": ood.groups[n]}
                         for n, a in ood.sets.items()},
            "val_ood_sets": _val_ood_info(val_ood),
            "skipped_ood_sets": ood.skipped, "device": str(trainer.device),
            "cache": {"hits": cache.hits, "misses": cache.misses},
            "extraction": cache.extraction, **_provenance(started),
        }
        return _finish(pd.DataFrame(rows, columns=COLUMNS), out, bench, manifest, quiet)


def evaluate_checkpoint(
    path: Path | str,
    bench: Benchmark,
    out_dir: Path | str,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    scorers: list[str] | None = None,
    extra_ood: dict[str, Path] | None = None,
    quiet: bool = False,
    download: bool = False,
) -> pd.DataFrame:
    """Run every scorer of ``bench`` on one checkpoint (oodbench's, or a plain state_dict).

    The checkpoint's own normalisation statistics are used when it records them, otherwise
    the benchmark's ID-train statistics.
    """
    out = Path(out_dir)
    with _exclusive(out, Path(runs_dir) / bench.name):
        load_builtin_scorers()
        started = _start()
        model, meta = load_checkpoint(path, arch, num_classes, in_channels or bench.channels,
                                      bench.widths or None)
        splits = load_id_splits(bench, data_root, download)
        preprocess = splits.preprocess
        if "normalisation" in meta:
            norm = meta["normalisation"]
            preprocess = Preprocess(bench.image_size, bench.channels, tuple(norm["mean"]),
                                    tuple(norm["std"]))
        dev = resolve_device(device or bench.device)
        ood = load_ood_sets(bench, data_root, extra_ood, download)
        digest = file_hash(path)
        cache = FeatureCache(Path(runs_dir) / bench.name / "cache", bench.extract_amp)
        training = str(meta.get("training", Path(path).stem))
        val_ood = load_val_ood(bench, data_root, download) if bench.scorer_grids else None
        rows, scores, params = score_model(model, digest, bench, splits, preprocess, ood, cache,
                                           dev, list(scorers or bench.scorers), (training, 0),
                                           val_ood)
        _write_scores(out / "scores" / f"{training}-s0.npz", scores)
        manifest = {
            "benchmark": bench.name, "config_file": bench.source,
            "config_hash": bench.config_hash(), "config": bench.to_dict(),
            "checkpoint": {"path": str(path), "sha256": digest, "meta": meta},
            "scorer_params": params, "skipped_ood_sets": ood.skipped,
            "id_dataset": {s: _dataset_info(getattr(splits, s)) for s in ("train", "val", "test")},
            "ood_sets": {n: _dataset_info(a) for n, a in ood.sets.items()},
            "val_ood_sets": _val_ood_info(val_ood), "device": str(dev),
            "extraction": cache.extraction, **_provenance(started),
        }
        return _finish(pd.DataFrame(rows, columns=COLUMNS), out, bench, manifest, quiet)


def ablate_benchmark(
    bench: Benchmark,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    quiet: bool = False,
    download: bool = False,
) -> pd.DataFrame:
    """Train every ``ablate`` variant and score it on the validation side only.

    ID = the held-out validation part of the ID training split, OOD = ``val_ood``: the test
    OOD sets are never touched, so defaults chosen from this table are not tuned on them.
    Writes ``out_dir/<benchmark>/ablation.csv`` and ``ablation.md``.
    """
    out = Path(out_dir) / bench.name
    with _exclusive(out, Path(runs_dir) / bench.name):
        load_builtin_scorers()
        if not bench.val_ood:
            raise ValueError(f"benchmark {bench.name!r} defines no val_ood set to ablate against")
        scorers = list(bench.ablate_scorers or bench.scorers)
        trainer = Trainer(bench, runs_dir, data_root, device, download=download)
        val_side = IDSplits(trainer.splits.train, trainer.splits.val, trainer.splits.val,
                            trainer.splits.preprocess)
        ood = load_val_ood(bench, data_root, download)
        cache = FeatureCache(Path(runs_dir) / bench.name / "cache", bench.extract_amp)
        rows: list[dict[str, Any]] = []
        checkpoints: dict[str, Any] = {}
        started = _start()
        variants = [(spec, seed) for seed in range(seeds or 1)
                    for spec in (*bench.trainings, *bench.ablate)]

        def write() -> tuple[pd.DataFrame, str]:
            """Write the tables so far, so an interrupted sweep keeps its finished variants."""
            df = pd.DataFrame(rows, columns=COLUMNS)
            _write_csv(out / "ablation.csv", df)
            table = ablation_table(df, bench)
            if len(checkpoints) < len(variants):
                table += f"\nPartial: {len(checkpoints)} of {len(variants)} variants so far.\n"
            atomic_write_bytes(out / "ablation.md", table.encode())
            _write_json(out / "ablation_manifest.json", {
                "benchmark": bench.name, "config_file": bench.source,
                "seeds": list(range(seeds or 1)),
                "val_ood": {n: _dataset_info(a) for n, a in ood.sets.items()},
                "id_val": _dataset_info(trainer.splits.val), "scorers": scorers,
                "checkpoints": checkpoints, "cache": {"hits": cache.hits, "misses": cache.misses},
                "extraction": cache.extraction, **_provenance(started)})
            return df, table

        for spec, seed in variants:
            path = trainer.ensure(spec.name, seed)
            model, meta = load_checkpoint(path)
            digest = file_hash(path)
            r, _, _ = score_model(model, digest, bench, val_side, val_side.preprocess,
                                  ood, cache, trainer.device, scorers, (spec.name, seed))
            extra = {"bg_norm_test": meta["bg_norm_test"], "fg_norm_test": meta["fg_norm_test"],
                     "test_acc": meta["test_acc"]}
            rows += r + [r[0] | {"metric": k, "value": v} for k, v in extra.items()]
            checkpoints[f"{spec.name}-s{seed}"] = {
                "path": str(path), "sha256": digest, "objective": spec.objective,
                "params": spec.params, "init": spec.init, "train": asdict(spec.train)}
            df, table = write()
        if not quiet:
            console.print(table)
        return df


def ablation_table(df: pd.DataFrame, bench: Benchmark) -> str:
    """Markdown: one row per training variant, val-side FPR95 per scorer, accuracy and norms."""
    ood = df[df.metric == "fpr95"].pivot_table(index="training", columns="scorer",
                                                values="value", aggfunc="mean", sort=False) * 100
    ood.columns = [f"FPR95 {c}" for c in ood.columns]
    ood["FPR95 mean"] = ood.mean(axis=1)
    auroc = df[df.metric == "auroc"].pivot_table(index="training", values="value",
                                                 aggfunc="mean", sort=False) * 100
    ood["AUROC mean"] = auroc["value"]
    for metric in ("id_acc", "bg_norm_test", "fg_norm_test"):
        sub = df[df.metric == metric].groupby("training", sort=False)["value"].mean()
        ood[metric] = sub * (100 if metric == "id_acc" else 1)
    specs = {t.name: t for t in (*bench.trainings, *bench.ablate)}
    lines = [
        f"Ablation on the validation side of `{bench.name}`: ID = held-out ID-train images, "
        f"OOD = {', '.join(bench.val_ood)}. id_acc is validation accuracy (%); norms are mean "
        "feature norms at background / foreground locations of the ID test set.",
        "",
        "| training | setting | " + " | ".join(ood.columns) + " |",
        "|---|---|" + "---|" * len(ood.columns),
    ]
    chosen = choose_variant(ood)
    for name, row in ood.iterrows():
        t = specs[str(name)]
        setting = f"{t.objective} {t.params} init={t.init} epochs={t.train.epochs} lr={t.train.lr}"
        cells = " | ".join(f"{v:.2f}" for v in row)
        label = f"**{name}** (chosen)" if name == chosen else str(name)
        lines.append(f"| {label} | {setting.replace('|', '/')} | {cells} |")
    lines += ["", f"Rule: {CHOICE_RULE}. Chosen: **{chosen}**." if chosen else
              f"Rule: {CHOICE_RULE}. No variant qualifies."]
    return "\n".join(lines) + "\n"


CHOICE_RULE = ("the lowest mean validation FPR95 among the non-CE variants whose validation "
               "accuracy is within 0.5 points of CE's")


def choose_variant(table: pd.DataFrame, baseline: str = "ce") -> str | None:
    """Apply ``CHOICE_RULE`` to an ablation table (index: training; FPR95 mean, id_acc in %)."""
    if baseline not in table.index:
        return None
    floor = table.loc[baseline, "id_acc"] - 0.5
    ok = table[(table.index != baseline) & (table["id_acc"] >= floor)]
    return str(ok["FPR95 mean"].idxmin()) if len(ok) else None
