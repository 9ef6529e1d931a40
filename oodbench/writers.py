"""Writing results: scores (float64 ``.npz``), CSV and JSON files written atomically, the
results folder of ``run``, ``eval`` and ``ablate`` staged and swapped in whole under its lock
(:func:`exclusive`), and its metrics, manifest, tables and plots (:func:`finish_results`)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oodbench.checkpoint import SUMMARY_KEYS
from oodbench.config import Benchmark
from oodbench.context import EvalContext
from oodbench.data import ImageFiles
from oodbench.evaluation import ModelResult
from oodbench.fileio import (
    atomic_write_bytes,
    check_writable,
    record_files,
    remove_stale_temps,
    staged,
)
from oodbench.geometry import GEOMETRY_COLUMNS
from oodbench.manifest import (
    CHECKPOINTS_DIR,
    FILES_KEY,
    GEOMETRY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    SCORES_DIR,
    Started,
    scores_file,
)
from oodbench.metrics import COLUMNS
from oodbench.plots import write_plots
from oodbench.progress import console
from oodbench.report import print_summary, write_reports


def write_scores(path: Path, scores: dict[str, np.ndarray]) -> None:
    """Per-sample scores (name -> array) as float64 arrays of one compressed ``.npz``."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """A frame as CSV, without its index."""
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Plain data as indented JSON with sorted keys (anything else as its ``str``)."""
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


# the files of a results folder that ``ablate`` writes; ``run`` and ``eval`` write the others
ABLATION_PREFIX = "ablation"
ABLATION_MANIFEST = f"{ABLATION_PREFIX}_manifest.json"


def ablation_file(rel: str) -> bool:
    """Whether the file ``rel`` of a results folder is one ``ablate`` writes."""
    return rel.startswith(ABLATION_PREFIX)


def run_file(rel: str) -> bool:
    """Whether the file ``rel`` of a results folder is one ``run`` or ``eval`` writes."""
    return not ablation_file(rel)


def results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a results folder that ``run``, ``eval`` or ``ablate`` wrote (it
    holds one of their manifests), which the next of them may replace."""
    return (folder / MANIFEST_FILE).is_file() or (folder / ABLATION_MANIFEST).is_file()


@contextmanager
def exclusive(out: Path, runs: Path, keep: Callable[[str], bool], option: str = "out_dir",
              runs_option: str = "runs_dir") -> Iterator[Path]:
    """Check that ``out`` and the checkpoint / cache folder ``runs`` can be written, hold the
    lock of ``out`` (which must be a results folder or new: :func:`results_folder`), delete
    the temp files that killed runs left, and yield the staging folder that replaces ``out``
    whole when the block ends normally (:func:`~oodbench.fileio.staged`; ``keep`` names the
    files of ``out`` that another command owns). On any error or interrupt ``out`` is left
    as it was and the partial output stays in the staging folder. ``option`` and
    ``runs_option`` are the API arguments that named ``out``'s parent and ``runs``."""
    check_writable(runs, runs_option)
    with staged(out, option, results_folder, keep) as stage:
        remove_stale_temps(runs)
        yield stage
    console.print(f"results written to {out}/", soft_wrap=True)


def finish_results(df: pd.DataFrame, geometry: list[dict[str, Any]], out: Path,
                   ctx: EvalContext, manifest: dict[str, Any], quiet: bool) -> pd.DataFrame:
    """Write metrics.csv, geometry.csv (the evaluations' ``geometry`` rows), the manifest (with
    the hashes of those two and of every scores file, which ``plot`` and ``table`` check), the
    tables and the plots into the staging folder."""
    write_csv(out / METRICS_FILE, df)
    write_csv(out / GEOMETRY_FILE, pd.DataFrame(geometry, columns=list(GEOMETRY_COLUMNS)))
    manifest[FILES_KEY] = record_files(out, [METRICS_FILE, GEOMETRY_FILE, *sorted(
        p.relative_to(out).as_posix() for folder, pattern in ((SCORES_DIR, "*.npz"),
                                                              (CHECKPOINTS_DIR, "*"))
        for p in (out / folder).glob(pattern))])
    write_json(out / MANIFEST_FILE, manifest)
    write_reports(df, out, ctx.bench.name, stats=ctx.bench.stats)
    write_plots(out, out / "plots")
    hits, misses = manifest["cache"]["hits"], manifest["cache"]["misses"]
    if misses == 0:
        console.print(f"[green]feature cache: all {hits} entries reused, no forward pass[/]")
    else:
        console.print(f"feature cache: {hits} reused, {misses} extracted")
    if not quiet:
        print_summary(df, stats=ctx.bench.stats)
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


def write_model_results(ctx: EvalContext, result: ModelResult, training: str, stage: Path,
                         started: Started, given: Benchmark, quiet: bool,
                         **specific: Any) -> pd.DataFrame:
    """Write one scored model's results folder (scores, metrics, geometry, manifest, tables,
    plots)."""
    write_scores(scores_file(stage, training, 0), result.scores)
    manifest = ctx.manifest(started, given, seeds=[0], scorers=list(ctx.bench.scorers),
                            scorer_params={f"{training}-s0": result.params}, **specific)
    return finish_results(pd.DataFrame(result.rows, columns=list(COLUMNS)), result.geometry,
                          stage, ctx, manifest, quiet)
