"""``oodbench run``: the matrix as a job graph, planned, run on an executor, and reported.

:func:`plan_benchmark` returns the graph with each job's status (``oodbench run --dry-run``);
:func:`run_benchmark` runs its pending train and eval jobs on an executor
(:mod:`oodbench.executors`: ``local`` or ``ray``), then the report job in this process: every
eval's rows, scores and parameters into ``out_dir/<benchmark>/`` (written whole or not at all),
with the checkpoints they rest on in its ``checkpoints/``, where a later run (on any machine,
from a clone that has the folder) finds them by key instead of training them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import Progress, TaskID

from oodbench.check import override
from oodbench.config import Benchmark, check_name
from oodbench.context import RunOptions, check_folders
from oodbench.data import resolve_data_root
from oodbench.errors import OutputError
from oodbench.executors import Executor, create_executor
from oodbench.fileio import atomic_write_bytes, check_files, check_writable, file_hash, inside
from oodbench.jobs import (
    EVAL,
    REPORT,
    SCORES_FILE,
    TRAIN,
    Job,
    JobGraph,
    Outcome,
    Work,
    Workspace,
    eval_folder,
    read_eval,
    stored_problem,
)
from oodbench.manifest import CHECKPOINTS_DIR, FILES_KEY, MANIFEST_FILE, Started, scores_file
from oodbench.metrics import COLUMNS
from oodbench.plugins import loaded_files
from oodbench.progress import make_progress
from oodbench.writers import ablation_file, exclusive, finish_results

JOBS_KEY = "jobs"  # manifest key: each job's outcome
EXECUTOR_KEY = "executor"  # manifest key: where the jobs ran
PLAN_QUIET_S = 2.0  # a plan that takes longer shows its progress


def _work(bench: Benchmark, opts: RunOptions, remote: bool, out: Path, committed: bool) -> Work:
    """The plain-data job description (``committed``: reuse the checkpoints of the results
    folder ``out``); for jobs run elsewhere every path is absolute."""
    if remote:
        root = resolve_data_root(opts.data_root)
        opts = dataclasses.replace(
            opts, runs_dir=Path(opts.runs_dir).resolve(),
            data_root=root.resolve() if root is not None else None,
            extra_ood={k: Path(v).resolve() for k, v in opts.extra_ood.items()})
    folders = (str(Path(out, CHECKPOINTS_DIR).resolve()),) if committed else ()
    return Work(bench, opts, tuple(str(Path(p).resolve()) for p in loaded_files()),
                secrets.token_hex(8), folders)


@contextmanager
def _planning(name: str, total: int) -> Iterator[Callable[[], None]]:
    """A step counter for planning ``total`` cells of benchmark ``name``: once planning has
    taken :data:`PLAN_QUIET_S` (a checkpoint and an evaluation are hashed per cell), each
    step shows on a progress bar."""
    start, done = time.perf_counter(), 0
    with ExitStack() as shown:
        bar: tuple[Progress, TaskID] | None = None

        def step() -> None:
            nonlocal done, bar
            done += 1
            if bar is None and time.perf_counter() - start > PLAN_QUIET_S:
                prog = shown.enter_context(make_progress(transient=True))
                bar = prog, prog.add_task(f"planning {name}: checkpoints and evaluations found",
                                          total=total, stats="")
            if bar is not None:
                bar[0].update(bar[1], completed=done)

        yield step


def plan(ws: Workspace, out: Path) -> JobGraph:
    """The graph of ``ws``'s benchmark: per seed and training a train job and an eval job
    (after the train job of its init, when that is a training of the matrix), then the report.
    A job is done when its output exists: the checkpoint; the eval's done marker, with the
    files it records intact (:func:`~oodbench.jobs.stored_problem`); a results folder whose
    manifest records these evals and whose files are intact."""
    bench = ws.work.bench
    names = {t.name for t in bench.trainings}
    jobs: list[Job] = []
    cells = bench.cells()
    with _planning(bench.name, len(cells)) as step:
        for seed, spec in cells:
            cell = f"{spec.name}-s{seed}"
            path = ws.trainer.path_of(spec.name, seed)
            ckpt = path if path is not None and path.is_file() else None
            parent = (f"{TRAIN}/{spec.init}-s{seed}",) if spec.init in names else ()
            jobs.append(Job(f"{TRAIN}/{cell}", TRAIN, spec.name, seed, parent,
                            str(path or ""), ckpt is not None))
            folder = eval_folder(ws, file_hash(ckpt), spec.name, seed) if ckpt else None
            jobs.append(Job(f"{EVAL}/{cell}", EVAL, spec.name, seed, (f"{TRAIN}/{cell}",),
                            str(folder or ""), bool(folder and stored_problem(folder) is None)))
            step()
    evals = [j for j in jobs if j.kind == EVAL]
    jobs.append(Job(REPORT, REPORT, deps=tuple(j.id for j in evals), output=str(out),
                    done=all(j.done for j in evals) and _reported(out, [j.output for j in evals])))
    resources = {k: dataclasses.asdict(getattr(bench.resources, k)) for k in (TRAIN, EVAL)}
    return JobGraph(bench.name, tuple(jobs), resources)


def _reported(out: Path, folders: list[str]) -> bool:
    """Whether ``out`` holds the report of exactly these eval folders, intact."""
    path = out / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
        recorded = [j["output"] for j in manifest[JOBS_KEY] if j["job"].startswith(f"{EVAL}/")]
        check_files(out, manifest[FILES_KEY], path)
    except (OSError, ValueError, KeyError, TypeError, OutputError):
        return False
    return recorded == folders


def _prepare(bench: Benchmark, seeds: int | None, out_dir: Path | str,
             scorers: list[str] | str | None, device: str | None,
             opts: RunOptions) -> tuple[Benchmark, Path]:
    """The benchmark with the command's overrides and the results folder, which must not
    overlap the runs folder, the data root or the inputs
    (:func:`~oodbench.context.check_folders`); both folders must be writable."""
    bench = override(bench, scorers=scorers, seeds=seeds, device=device)
    out = inside(out_dir, check_name(bench.name, "benchmark name"))
    runs = inside(opts.runs_dir, bench.name)
    check_folders(bench, opts, "out_dir", out_dir, out, runs)
    check_writable(out, "out_dir")  # here, so a dry run refuses what the run would
    check_writable(runs, "runs_dir")
    return bench, out


def plan_benchmark(
    bench: Benchmark,
    *,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    scorers: list[str] | str | None = None,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    extra_ood: Mapping[str, Path | str] | None = None,
    download: bool = False,
    committed: bool = True,
) -> JobGraph:
    """The job graph :func:`run_benchmark` would run (the same arguments), with each job's
    done status; runs nothing and writes nothing (it loads the datasets, whose content
    hashes key the evals)."""
    opts = RunOptions(runs_dir, data_root, dict(extra_ood or {}), download)
    bench, out = _prepare(bench, seeds, out_dir, scorers, device, opts)
    return plan(Workspace(_work(bench, opts, False, out, committed)), out)


def run_benchmark(
    bench: Benchmark,
    *,
    seeds: int | None = None,
    out_dir: Path | str = "results",
    scorers: list[str] | str | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    connect_timeout: float | None = None,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    device: str | None = None,
    extra_ood: Mapping[str, Path | str] | None = None,
    download: bool = False,
    quiet: bool = False,
    committed: bool = True,
) -> pd.DataFrame:
    """Train what is missing, extract (cached), score, and write ``out_dir/<benchmark>/``.

    ``seeds``, ``scorers`` (names or groups) and ``device`` override the benchmark's;
    ``executor`` is ``local`` (this process) or ``ray`` (Ray tasks on the cluster at
    ``address``, which must answer within ``connect_timeout`` seconds, default 30); the other
    options are :class:`~oodbench.context.RunOptions`' (``runs_dir``, ``data_root``,
    ``extra_ood``, ...). A checkpoint is looked for by its key in ``runs_dir``, then (unless
    ``committed`` is false) in the ``checkpoints/`` of the results folder being replaced, and
    trained only where neither has it; the new results folder holds every checkpoint it
    scored. Every argument is checked before any training.
    """
    exe = create_executor(executor, address, connect_timeout)
    given = bench
    opts = RunOptions(runs_dir, data_root, dict(extra_ood or {}), download, quiet)
    bench, out = _prepare(bench, seeds, out_dir, scorers, device, opts)
    started = Started()
    work = _work(bench, opts, exe.remote, out, committed)
    with exclusive(out, inside(runs_dir, bench.name), ablation_file) as stage:
        exe.check(work)
        ws = Workspace(work)  # the driver's own (workers keep theirs: jobs.WORKER)
        graph = plan(ws, out)
        outcomes = exe.run(graph, work, ws)
        return report(ws, graph, outcomes, stage, started, given, exe)


def _keep_checkpoint(ws: Workspace, job: Job, summary: dict[str, Any], stage: Path) -> str:
    """Copy the checkpoint the eval ``job`` scored (``summary``: its sha256) and its ``.json``
    metadata into the staging results folder's ``checkpoints/``; its path there, relative to
    the folder. An :class:`OutputError` if the file found by its key now is another one."""
    path = ws.trainer.find(job.training, job.seed)
    data = path.read_bytes() if path is not None else b""
    if path is None or hashlib.sha256(data).hexdigest() != summary["sha256"]:
        raise OutputError(f"the checkpoint of {job.cell} scored by {job.id} "
                          f"(sha256 {summary['sha256'][:12]}) is no longer at {path or 'its key'}",
                          "run the command again: it scores the checkpoint that is there")
    atomic_write_bytes(inside(stage, CHECKPOINTS_DIR, path.name), data)
    meta = path.with_suffix(".json")
    if meta.is_file():
        atomic_write_bytes(inside(stage, CHECKPOINTS_DIR, meta.name), meta.read_bytes())
    return f"{CHECKPOINTS_DIR}/{path.name}"


def report(ws: Workspace, graph: JobGraph, outcomes: dict[str, Outcome], stage: Path,
           started: Started, given: Benchmark, exe: Executor) -> pd.DataFrame:
    """The report job: every eval's rows, scores and parameters, in graph order, into the
    staging folder ``stage`` with the manifest (which records each job's outcome)."""
    ctx, bench = ws.ctx, ws.work.bench
    rows: list[dict[str, Any]] = []
    geometry: list[dict[str, Any]] = []
    checkpoints: dict[str, Any] = {}
    scorer_params: dict[str, Any] = {}
    for job in graph.of_kind(EVAL):
        folder = Path(outcomes[job.id].output)
        result, summary = read_eval(folder)
        rows += result.rows
        geometry += result.geometry
        scorer_params[job.cell] = result.params
        checkpoints[job.cell] = summary | {"path": _keep_checkpoint(ws, job, summary, stage)}
        atomic_write_bytes(scores_file(stage, job.training, job.seed),
                           (folder / SCORES_FILE).read_bytes())
    ran = [o for o in outcomes.values() if o.ran]
    counts = {k: sum(o.cache.get(k, 0) for o in ran) for k in ("hits", "misses")}
    jobs = [dataclasses.asdict(outcomes[j.id]) for j in graph.jobs if j.kind != REPORT]
    manifest = ctx.manifest(started, given, counts, seeds=list(range(bench.seeds)),
                            scorers=list(bench.scorers), scorer_params=scorer_params,
                            checkpoints=checkpoints, **{JOBS_KEY: jobs,
                                                        EXECUTOR_KEY: exe.describe()})
    return finish_results(pd.DataFrame(rows, columns=list(COLUMNS)), geometry, stage, ctx,
                          manifest, ws.work.options.quiet)
