"""The matrix as a job graph: what each job is, and what running one does.

- a **train** job: (benchmark, training, seed) -> a checkpoint (today's config-hash name);
- an **eval** job: a checkpoint -> features of every dataset (the feature cache) -> every
  scorer's scores -> metric rows, stored in ``runs/<benchmark>/evals/<key>/``;
- the **report** job: every eval's rows -> the results folder (tables, plots, manifest).

Jobs are plain data (:class:`Job`, :class:`JobGraph`). Each is content-addressed: a
checkpoint by its config key, an evaluation by :func:`eval_key` (the checkpoint's sha256 and
everything else that sets its scores, the code included). Each is idempotent (a job whose
output exists is skipped), writes its files atomically and its done marker last, and holds a
claim (:mod:`oodbench.lock`) while it works, so that two drivers, or a task retried after its
worker died, never make the same output twice at once nor leave half of one. Executors
(:mod:`oodbench.executors`) decide where jobs run; :mod:`oodbench.matrix` plans and reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import zipfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from oodbench.checkpoint import load_checkpoint
from oodbench.config import Benchmark
from oodbench.context import EvalContext, RunOptions, context, make_trainer, runs_cache
from oodbench.errors import OodbenchError, OutputError
from oodbench.evaluation import ModelResult, score_model
from oodbench.fileio import check_files, file_hash, inside, record_files
from oodbench.geometry import PER_SAMPLE
from oodbench.lock import claim
from oodbench.manifest import FILES_KEY
from oodbench.metrics import COLUMNS
from oodbench.plugins import load_plugin_file
from oodbench.progress import console
from oodbench.provenance import source_fingerprint
from oodbench.train import Trainer
from oodbench.writers import checkpoint_summary, write_json, write_scores

TRAIN, EVAL, REPORT = "train", "eval", "report"
EVALS_DIR = "evals"  # below runs/<benchmark>/
RESULT_FILE = "result.json"  # an eval's rows, scorer parameters, checkpoint summary, geometry
SCORES_FILE = "scores.npz"  # an eval's per-sample scores (float64)
DONE_FILE = "done.json"  # written last: the eval is complete, with the hashes of the two above


@dataclass(frozen=True)
class Job:
    """One job: its ``id`` (``train/ce-s0``), ``kind``, what it needs (``deps``: job ids), its
    output path where it is known before it runs, and whether that output exists (``done``)."""

    id: str
    kind: str
    training: str = ""
    seed: int = 0
    deps: tuple[str, ...] = ()
    output: str = ""
    done: bool = False

    @property
    def cell(self) -> str:
        """``ce-s0``: the matrix cell of a train or eval job."""
        return f"{self.training}-s{self.seed}"


@dataclass(frozen=True)
class JobGraph:
    """A benchmark's jobs in the order a single process runs them (every job after its
    deps), with the resources each kind asks an executor for."""

    benchmark: str
    jobs: tuple[Job, ...]
    resources: dict[str, dict[str, float]] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Job]:
        """The jobs of one kind, in order."""
        return [j for j in self.jobs if j.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``oodbench run --dry-run --json``)."""
        return {"benchmark": self.benchmark, "resources": self.resources,
                "jobs": [asdict(j) | {"deps": list(j.deps)} for j in self.jobs]}


@dataclass(frozen=True)
class Work:
    """What any process needs to run a benchmark's jobs, as plain data that travels to a Ray
    worker: the benchmark (with the command's overrides), the options (absolute paths) and
    the plugin files the driver loaded."""

    bench: Benchmark
    options: RunOptions
    plugins: tuple[str, ...] = ()
    run: str = ""  # one command's token: a later command reloads the data a worker kept
    committed: tuple[str, ...] = ()  # read-only folders of checkpoints to reuse by key


@dataclass(frozen=True)
class Outcome:
    """What a job did: its output, whether it made it (``ran``) or found it, where, how long,
    and for an eval the feature-cache hits and misses."""

    job: str
    output: str
    ran: bool
    host: str
    pid: int
    seconds: float
    threads: int = 0  # torch's CPU threads (resources' num_cpus): CPU results depend on them
    cache: dict[str, int] = field(default_factory=dict)


class Workspace:
    """A process's trainer (ID data) and evaluation context (OOD sets, feature cache) for one
    :class:`Work`, built on first use and kept for the process's later jobs."""

    def __init__(self, work: Work) -> None:
        self.work = work
        for path in work.plugins:
            load_plugin_file(path)

    @cached_property
    def _built(self) -> tuple[EvalContext, Trainer]:
        bench, opts = self.work.bench, self.work.options
        trainer = make_trainer(bench, opts, tuple(Path(p) for p in self.work.committed))
        return context(bench, opts, trainer.splits, runs_cache(bench, opts),
                       preprocess=trainer.preprocess), trainer

    @property
    def ctx(self) -> EvalContext:
        """The evaluation context."""
        return self._built[0]

    @property
    def trainer(self) -> Trainer:
        """The trainer."""
        return self._built[1]

    @cached_property
    def code(self) -> str:
        """The source fingerprint that enters every eval key."""
        return source_fingerprint(self.work.plugins)

    def evals_dir(self) -> Path:
        """``runs/<benchmark>/evals``."""
        return inside(self.work.options.runs_dir, self.work.bench.name, EVALS_DIR)


class WorkerWorkspace:
    """The workspace a worker process keeps between the jobs of one command, so that the ID
    data, OOD sets and feature cache load once per process, not once per job. Ray runs each
    job as a plain function (:func:`run_job`) in a long-lived worker, so the one place a job
    finds what an earlier job of its command loaded is this process-wide holder
    (:data:`WORKER`); one workspace is kept, as a worker serves one command at a time."""

    def __init__(self) -> None:
        self._key = ""
        self._ws: Workspace | None = None

    def get(self, work: Work) -> Workspace:
        """The workspace of ``work``: the kept one when ``work`` is the same, else a new one
        that replaces it."""
        key = hashlib.sha256(json.dumps(asdict(work), sort_keys=True,
                                        default=str).encode()).hexdigest()
        if self._ws is None or key != self._key:
            self._key, self._ws = key, Workspace(work)
        return self._ws


WORKER = WorkerWorkspace()  # this process's: the only state jobs keep between calls


def eval_key(ws: Workspace, digest: str, training: str, seed: int) -> str:
    """The content key of the evaluation of the checkpoint with sha256 ``digest``: it, the
    row labels, the scorers with their parameters, grids and fit splits, the extraction
    settings, the input preprocessing, the device type, the bootstrap's settings, every
    dataset's content hash and the code."""
    ctx = ws.ctx
    bench, cache = ctx.bench, ctx.cache
    data = {
        "checkpoint": digest, "benchmark": bench.name, "training": training, "seed": seed,
        "scorers": list(bench.scorers), "scorer_params": bench.scorer_params,
        "scorer_grids": bench.scorer_grids, "scorer_fit": bench.scorer_fit,
        "extract_amp": bench.extract_amp,
        "extract_batch": bench.extract_batch, "preprocess": ctx.preprocess.key(),
        "device": ctx.device.type,
        "bootstrap": [bench.stats.bootstrap_resamples, bench.stats.level,
                      bench.stats.bootstrap_seed],
        "id": [[s, cache.fingerprint(getattr(ctx.splits, s))] for s in ("train", "val", "test")],
        "ood": [[n, ctx.ood.groups[n], cache.fingerprint(a)] for n, a in ctx.ood.sets.items()],
        "val_ood": [[n, cache.fingerprint(a)] for n, a in ctx.val_ood.sets.items()],
        "code": ws.code,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def eval_folder(ws: Workspace, digest: str, training: str, seed: int) -> Path:
    """Where the evaluation of that checkpoint is stored."""
    return inside(ws.evals_dir(), f"{training}-s{seed}-{eval_key(ws, digest, training, seed)[:16]}")


def _outcome(ws: Workspace, job: Job, output: Path, ran: bool, start: float,
             **extra: Any) -> Outcome:
    """The job's outcome; its threads are those its work ran on (training and scoring apply
    their resources' count: :mod:`oodbench.threads`)."""
    threads = getattr(ws.work.bench.resources, job.kind).threads
    return Outcome(job.id, str(output), ran, socket.gethostname(), os.getpid(),
                   round(time.perf_counter() - start, 3), threads, **extra)


def run_train(ws: Workspace, job: Job) -> Outcome:
    """Train (or find) the job's checkpoint."""
    start = time.perf_counter()
    before = len(ws.trainer.trained)
    path = ws.trainer.ensure(job.training, job.seed)
    return _outcome(ws, job, path, len(ws.trainer.trained) > before, start)


def stored_problem(folder: Path | str) -> str | None:
    """Why the evaluation stored in ``folder`` cannot be trusted (None: it can): no done
    marker, one that records no file hashes (an older oodbench's), a file missing or not the
    one it records, or a result that does not read back whole (no rows, a truncated file, not
    the structure oodbench writes: :func:`read_eval`)."""
    folder = Path(folder)
    done = folder / DONE_FILE
    if not done.is_file():
        return f"{DONE_FILE} is missing"
    try:
        recorded = json.loads(done.read_text()).get(FILES_KEY)
        if not isinstance(recorded, dict) or set(recorded) != {RESULT_FILE, SCORES_FILE}:
            return f"{DONE_FILE} records no hashes of {RESULT_FILE} and {SCORES_FILE}"
        check_files(folder, recorded, done)
        read_eval(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, EOFError,
            zipfile.BadZipFile, OodbenchError) as e:
        return e.message if isinstance(e, OodbenchError) else f"{type(e).__name__}: {e}"
    return None


def run_eval(ws: Workspace, job: Job) -> Outcome:
    """Score the job's checkpoint with every scorer, unless its evaluation is stored and
    verified (:func:`stored_problem`); a stored one that is not is computed again, with a
    note, under the evaluation's claim."""
    start = time.perf_counter()
    path = ws.trainer.find(job.training, job.seed)
    if path is None:
        raise FileNotFoundError(f"{job.id}: the checkpoint of {job.cell} is missing; its train "
                                "job must run first")
    digest = file_hash(path)
    folder = eval_folder(ws, digest, job.training, job.seed)
    cache = ws.ctx.cache
    hits, misses = cache.hits, cache.misses
    done = folder / DONE_FILE
    missing = stored_problem(folder) is not None
    if missing:
        with claim(done):
            why = stored_problem(folder)  # the holder we may have waited for made it
            missing = why is not None
            if missing:
                if done.is_file():  # a killed job leaves no marker: no note for that
                    console.print(f"note: the stored evaluation {folder} is computed again: "
                                  f"{why}", markup=False, soft_wrap=True, highlight=False)
                done.unlink(missing_ok=True)
                model, meta = load_checkpoint(path)
                result = score_model(ws.ctx, model, digest, job.training, job.seed)
                write_scores(folder / SCORES_FILE, result.scores)
                write_json(folder / RESULT_FILE, {
                    "rows": result.rows, "params": result.params,
                    "checkpoint": checkpoint_summary(path, digest, meta),
                    "geometry": result.geometry})
                write_json(done, {"checkpoint_sha256": digest, "job": job.id,
                                  "host": socket.gethostname(), "pid": os.getpid(),
                                  "finished": time.time(),
                                  FILES_KEY: record_files(folder, [RESULT_FILE, SCORES_FILE])})
    return _outcome(ws, job, folder, missing, start,
                    cache={"hits": cache.hits - hits, "misses": cache.misses - misses})


def run_in(ws: Workspace, job: Job) -> Outcome:
    """Run one train or eval job on ``ws``."""
    return run_train(ws, job) if job.kind == TRAIN else run_eval(ws, job)


def run_job(work: Work, job: Job, *after: Outcome) -> Outcome:
    """Run one train or eval job in this process, on its workspace (the body of a Ray task;
    ``after`` are the outcomes of its deps, passed so that the task waits for them)."""
    return run_in(WORKER.get(work), job)


def read_eval(folder: Path | str) -> tuple[ModelResult, dict[str, Any]]:
    """A stored evaluation: its result (rows, scores, parameters, geometry) and checkpoint
    summary; :class:`~oodbench.errors.OutputError` when it holds no rows (never an empty
    result)."""
    folder = Path(folder)
    data = json.loads((folder / RESULT_FILE).read_text())
    fix = "delete the folder; the next run computes it again"
    if not data["rows"]:
        raise OutputError(f"{folder / RESULT_FILE} holds no rows", fix)
    rows = data["rows"]
    if (not isinstance(rows, list) or not isinstance(data["params"], dict)
            or not isinstance(data["checkpoint"], dict)
            or not isinstance(data.get("geometry"), list)
            or not all(isinstance(r, dict) and set(r) == set(COLUMNS) for r in rows)):
        raise OutputError(f"{folder / RESULT_FILE} is not an evaluation oodbench wrote (rows "
                          f"of {', '.join(COLUMNS)}, params, checkpoint, geometry)", fix)
    with np.load(folder / SCORES_FILE) as z:
        scores = {k: z[k] for k in z.files}
    _check_scores(folder / SCORES_FILE, scores)
    return ModelResult(rows, scores, data["params"], data["geometry"]), data["checkpoint"]


def _check_scores(path: Path, scores: dict[str, np.ndarray]) -> None:
    """Refuse stored scores (``scorer/set`` -> array) that oodbench cannot have written: not
    1-D float arrays, non-finite scores (scorers' scores are checked finite before they are
    stored; only the per-sample diagnostics of :mod:`oodbench.geometry` may be NaN), or sets
    of different sizes or scored by some scorers only."""
    sets: dict[str, set[str]] = {}
    sizes: dict[str, int] = {}
    why = ""
    for key, values in scores.items():
        scorer, _, set_name = key.partition("/")
        sets.setdefault(scorer, set()).add(set_name)
        if values.ndim != 1 or values.dtype.kind != "f":
            why = f"{key} is not a 1-D float array"
        elif scorer not in PER_SAMPLE and not np.isfinite(values).all():
            why = f"{key} holds non-finite scores"
        elif sizes.setdefault(set_name, len(values)) != len(values):
            why = f"{key} holds {len(values)} values, another key of {set_name} {sizes[set_name]}"
        if why:
            break
    if not why and len({frozenset(v) for v in sets.values()}) > 1:
        why = f"its scorers score different sets ({ {k: sorted(v) for k, v in sets.items()} })"
    if why:
        raise OutputError(f"{path}: {why}", "delete the folder; the next run computes it again")
