"""Where the matrix's train and eval jobs run.

- :class:`LocalExecutor` (``local``, the default): every job in this process, in graph order,
  on one shared workspace: the speed and output of a single ``oodbench run``.
- :class:`RayExecutor` (``ray``): every job a Ray task (``ray.remote`` with the benchmark's
  ``resources.train`` / ``resources.eval``: ``num_cpus``, ``num_gpus``, fractions allowed),
  after the tasks of its deps, retried ``resources.max_retries`` times when its worker dies.
  It needs ``pip install 'oodbench[ray]'``, and a runs folder that every node sees at the same
  path (checked at start by a task on every node).

Jobs that are done before the run starts are not sent anywhere; a sent job that finds its
output (made by another driver meanwhile) skips too. The report runs in the driver
(:mod:`oodbench.matrix`).
"""

from __future__ import annotations

import secrets
import socket
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from oodbench.errors import ConfigError, OodbenchError, OutputError
from oodbench.fileio import echo_file
from oodbench.jobs import (
    EVAL,
    REPORT,
    TRAIN,
    Job,
    JobGraph,
    Outcome,
    Work,
    Workspace,
    run_in,
    run_job,
)
from oodbench.progress import console, make_progress
from oodbench.registry import did_you_mean

RAY_HINT = "install it with pip install 'oodbench[ray]'"


class Executor(ABC):
    """Runs the train and eval jobs of a graph; ``remote``: in other processes (so every path
    they get is absolute)."""

    name: ClassVar[str]
    remote: ClassVar[bool] = False

    def check(self, work: Work) -> None:
        """Refuse, before any job runs, what cannot work (the default: nothing)."""
        del work

    @abstractmethod
    def run(self, graph: JobGraph, work: Work, ws: Workspace) -> dict[str, Outcome]:
        """Run every train and eval job of ``graph`` that is not done; the outcome of each."""

    def describe(self) -> dict[str, Any]:
        """The executor for the manifest."""
        return {"name": self.name}


def _done(job: Job) -> Outcome:
    return Outcome(job.id, job.output, False, "", 0, 0.0)


class LocalExecutor(Executor):
    """Every job in this process, one after another."""

    name = "local"

    def run(self, graph: JobGraph, work: Work, ws: Workspace) -> dict[str, Outcome]:
        jobs = [j for j in graph.jobs if j.kind != REPORT]
        pending = [j for j in jobs if not j.done]
        outcomes = {j.id: _done(j) for j in jobs if j.done}
        for i, job in enumerate(pending, 1):
            console.print(f"[dim]job {i}/{len(pending)}: {job.id}[/dim]", highlight=False)
            outcomes[job.id] = run_in(ws, job)
        return outcomes


class RayExecutor(Executor):
    """Every job a Ray task on the cluster at ``address`` (``None``: ``RAY_ADDRESS``, a
    cluster started on this machine, or else a new local one; ``auto``: an existing one)."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("<executor=ray> needs the ray package, which is not installed",
                              RAY_HINT) from None
        self.ray = ray
        self.address = address
        self.nodes: list[dict[str, Any]] = []

    def check(self, work: Work) -> None:
        bench = work.bench
        if bench.device.startswith("cuda"):
            for kind in (TRAIN, EVAL):
                if getattr(bench.resources, kind).num_gpus == 0:
                    raise ConfigError(
                        f"{bench.source}: benchmark {bench.name!r} runs on device "
                        f"{bench.device!r}, but resources.{kind}.num_gpus is 0: Ray hides "
                        "every GPU from a task that asks for none",
                        f"set resources.{kind} = {{ num_gpus = 1 }} (or a fraction) in the "
                        "benchmark file")
        self._connect()
        self._check_shared(Path(work.options.runs_dir))

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=True, include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise ConfigError(f"<address={self.address}>: cannot connect to a Ray cluster "
                                  f"({type(e).__name__}: {e})",
                                  "start one with `ray start --head` (README: Running on a "
                                  "cluster) or leave the address out for a local one; a "
                                  "cluster with token authentication (Ray >= 2.59 starts "
                                  "local ones so) needs RAY_AUTH_MODE=token here, and its "
                                  "token (`ray get-auth-token`) in ~/.ray/auth_token or "
                                  "RAY_AUTH_TOKEN") from e
        self.nodes = [n for n in ray.nodes() if n.get("Alive")]

    def _check_shared(self, runs: Path) -> None:
        """A task on every node reads a file the driver wrote in ``runs`` and writes one back."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        runs.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        probe = runs / f".probe-{socket.gethostname()}-{token}"
        probe.write_text(token)
        task = self.ray.remote(num_cpus=0)(echo_file)  # a light module: no torch import
        try:
            refs = {n["NodeManagerAddress"]: task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), token) for n in self.nodes}
            seen = dict(zip(refs, self.ray.get(list(refs.values())), strict=True))
            for node, (host, why) in seen.items():
                back = probe.with_name(f"{probe.name}.{host}")
                if not why and (not back.is_file() or back.read_text() != token):
                    why = "the driver cannot read the file it wrote back"
                if why:
                    raise OutputError(
                        f"<runs_dir={runs}> is not shared with Ray node {node} ({host}): {why}",
                        "put the runs folder on storage every node mounts at the same path "
                        "(NFS, Lustre, a shared volume), and pass its absolute path")
        finally:
            for path in runs.glob(f"{probe.name}*"):
                path.unlink(missing_ok=True)

    def run(self, graph: JobGraph, work: Work, ws: Workspace) -> dict[str, Outcome]:
        ray = self.ray
        bench = work.bench
        task = ray.remote(run_job)
        jobs = [j for j in graph.jobs if j.kind != REPORT]
        outcomes = {j.id: _done(j) for j in jobs if j.done}
        refs: dict[str, Any] = {}
        for job in jobs:
            if job.done:
                continue
            spec = getattr(bench.resources, job.kind)
            after = [refs[d] for d in job.deps if d in refs]
            refs[job.id] = task.options(
                num_cpus=spec.num_cpus, num_gpus=spec.num_gpus,
                max_retries=bench.resources.max_retries, retry_exceptions=False,
                name=job.id).remote(work, job, *after)
        by_ref = {ref: job_id for job_id, ref in refs.items()}
        kinds = {k: [j for j in refs if j.startswith(f"{k}/")] for k in (TRAIN, EVAL)}
        start = time.perf_counter()
        with make_progress() as prog:
            bars = {k: prog.add_task(f"{k} jobs on Ray", total=len(ids), stats="")
                    for k, ids in kinds.items() if ids}
            waiting = list(refs.values())
            try:
                while waiting:
                    ready, waiting = ray.wait(waiting, num_returns=1, timeout=5.0)
                    for ref in ready:
                        outcomes[by_ref[ref]] = self._result(ref)
                        prog.advance(bars[by_ref[ref].split("/")[0]])
                    left = [by_ref[r] for r in waiting]
                    for kind, bar in bars.items():
                        mine = [j.split("/", 1)[1] for j in left if j.startswith(f"{kind}/")]
                        prog.update(bar, stats=(f"waiting: {', '.join(mine[:4])}"
                                                f"{' ...' if len(mine) > 4 else ''}" if mine else
                                                f"done in {time.perf_counter() - start:.0f} s"))
            except BaseException:  # a job failed, or Ctrl-C: the other tasks stop too
                for ref in waiting:
                    ray.cancel(ref, force=True)
                raise
        return outcomes

    def _result(self, ref: Any) -> Outcome:
        """A task's outcome; a task's own error is raised as it was raised in the worker."""
        try:
            outcome: Outcome = self.ray.get(ref)
            return outcome
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, BaseException) else None
            if isinstance(cause, OodbenchError):
                raise cause from None
            raise

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address,
                "nodes": [{"host": n.get("NodeManagerHostname"), "resources": n.get("Resources")}
                          for n in self.nodes]}


EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def create_executor(name: str | Executor, address: str | None = None) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); ``address`` is Ray's only."""
    if isinstance(name, Executor):
        return name
    if name not in EXECUTORS:
        raise ConfigError(f"<executor={name}> is not an executor;{did_you_mean(name, EXECUTORS)} "
                          f"accepted: {', '.join(EXECUTORS)}")
    if name == "ray":
        return RayExecutor(address)
    if address is not None:
        raise ConfigError(f"<address={address}> is for the ray executor, not {name!r}",
                          "add <executor=ray>, or leave the address out")
    return EXECUTORS[name]()
