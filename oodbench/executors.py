"""Where the matrix's train and eval jobs run.

- :class:`LocalExecutor` (``local``, the default): every job in this process, in graph order,
  on one shared workspace: the speed and output of a single ``oodbench run``.
- :class:`RayExecutor` (``ray``): every job a Ray task (``ray.remote`` with the benchmark's
  ``resources.train`` / ``resources.eval``: ``num_cpus``, ``num_gpus``, fractions allowed),
  after the tasks of its deps, retried ``resources.max_retries`` times when its worker dies.
  It needs ``pip install 'oodbench[ray]'``, and a runs folder that every node sees at the same
  path (checked at start by a task on every node). Before Ray connects, the cluster's address
  must answer as a gRPC server within ``connect_timeout`` seconds: Ray itself would retry an
  address where nothing answers for many minutes.

Jobs that are done before the run starts are not sent anywhere; a sent job that finds its
output (made by another driver meanwhile) skips too. The report runs in the driver
(:mod:`oodbench.matrix`).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections import Counter
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


class Executor(ABC):
    """Runs the train and eval jobs of a graph; ``remote``: in other processes (so every path
    they get is absolute)."""

    name: ClassVar[str]
    remote: ClassVar[bool] = False

    def check(self, work: Work) -> None:
        """Refuse, before any job runs, what cannot work (the default: nothing)."""
        del work

    def run(self, graph: JobGraph, work: Work, ws: Workspace) -> dict[str, Outcome]:
        """The outcome of every train and eval job of ``graph``: found for those done, made
        by :meth:`run_pending` for the others."""
        jobs = [j for j in graph.jobs if j.kind != REPORT]
        found = {j.id: Outcome(j.id, j.output, False, "", 0, 0.0) for j in jobs if j.done}
        return found | self.run_pending([j for j in jobs if not j.done], work, ws)

    @abstractmethod
    def run_pending(self, jobs: list[Job], work: Work, ws: Workspace) -> dict[str, Outcome]:
        """Run ``jobs`` (in graph order: every job after its deps); the outcome of each."""

    def describe(self) -> dict[str, Any]:
        """The executor for the manifest."""
        return {"name": self.name}


class LocalExecutor(Executor):
    """Every job in this process, one after another, on the driver's workspace."""

    name = "local"

    def run_pending(self, jobs: list[Job], work: Work, ws: Workspace) -> dict[str, Outcome]:
        outcomes = {}
        for i, job in enumerate(jobs, 1):
            console.print(f"[dim]job {i}/{len(jobs)}: {job.id}[/dim]", highlight=False)
            outcomes[job.id] = run_in(ws, job)
        return outcomes


RAY_CONNECT_TIMEOUT_S = 30.0  # how long a Ray cluster's address may take to answer
# an HTTP/2 client's connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS,
# or its client server for ray://) answers with a SETTINGS frame of its own
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 4  # the frame type, byte 3 of a frame header


def _grpc_silence(host: str, port: int, timeout: float) -> str | None:
    """Why no gRPC server answers at ``host:port`` within ``timeout`` seconds; None when one
    does. Under TLS (``RAY_USE_TLS``) an accepted connection is enough."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return None
            sock.sendall(_H2_HELLO)
            head = b""
            while len(head) < 9:
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    return "it closed the connection: no gRPC server listens there"
                head += chunk
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return e.strerror or type(e).__name__
    if head[3] != _H2_SETTINGS:
        return "what listens there does not speak gRPC"
    return None


class RayExecutor(Executor):
    """Every job a Ray task on the cluster at ``address`` (``None``: ``RAY_ADDRESS``, a
    cluster started on this machine, or else a new local one; ``auto``: an existing one),
    which must answer within ``connect_timeout`` seconds."""

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None,
                 connect_timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
        if (isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float)
                or not math.isfinite(connect_timeout) or connect_timeout <= 0):
            raise ConfigError(f"<connect_timeout={connect_timeout}> is not a positive number "
                              "of seconds", f"e.g. <connect_timeout={RAY_CONNECT_TIMEOUT_S:g}> "
                              "(the default)")
        try:
            import ray
        except ImportError:
            raise ConfigError("<executor=ray> needs the ray package, which is not installed",
                              "install it with pip install 'oodbench[ray]'") from None
        self.ray = ray
        self.address = address
        self.connect_timeout = float(connect_timeout)
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

    def _probe(self) -> None:
        """Refuse, within ``connect_timeout``, a cluster address where no Ray server answers:
        the address Ray would connect to (``address``, else ``RAY_ADDRESS``, else the cluster
        started on this machine; none: Ray starts a local one)."""
        from ray._private.services import canonicalize_bootstrap_address

        env = os.environ.get("RAY_ADDRESS") or None
        given = env if env and self.address in (None, "auto") else self.address
        named = ("the Ray cluster last started on this machine" if given is None else
                 f"<address={given}>" if given == self.address else f"RAY_ADDRESS={env}")
        try:  # ray:// is Ray Client's server; any other address is the GCS's
            target = (given.split("://", 1)[1] if given is not None and "://" in given else
                      # ray documents None (the cluster last started); its annotation says str
                      canonicalize_bootstrap_address(given))  # type: ignore[arg-type]
        except (ConnectionError, ValueError) as e:
            raise self._unreachable(named, e) from None
        host, _, port = (target or "").rpartition(":")
        if not host or not port.isdigit():  # a new local cluster, or an address Ray refuses
            return
        why = _grpc_silence(host.strip("[]"), int(port), self.connect_timeout)
        if why is not None:
            raise ConfigError(
                f"{named}: no Ray cluster answers at {target} ({why})",
                "check the head's address and port (`ray status` on the head; the GCS port is "
                "6379 unless `ray start --port` set another, and ray:// addresses use the client "
                "port, 10001), start one with `ray start --head`, or give a slow network more "
                "time with <connect_timeout=SECONDS> (the default is "
                f"{RAY_CONNECT_TIMEOUT_S:g})")

    def _unreachable(self, named: str, e: BaseException) -> ConfigError:
        """The error for a cluster at ``named`` that Ray cannot connect to (``e``)."""
        return ConfigError(f"{named}: cannot connect to a Ray cluster ({type(e).__name__}: {e})",
                           "start one with `ray start --head` (README: Running on a cluster) or "
                           "leave the address out for a local one; a cluster with token "
                           "authentication (Ray >= 2.59 starts local ones so) needs "
                           "RAY_AUTH_MODE=token here, and its token (`ray get-auth-token`) in "
                           "~/.ray/auth_token or RAY_AUTH_TOKEN")

    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            self._probe()
            try:
                ray.init(address=self.address, log_to_driver=True, include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise self._unreachable(f"<address={self.address}>", e) from e
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

    def run_pending(self, jobs: list[Job], work: Work, ws: Workspace) -> dict[str, Outcome]:
        ray, resources = self.ray, work.bench.resources
        task = ray.remote(run_job)
        refs: dict[str, Any] = {}
        for job in jobs:  # a task gets its deps' refs: Ray starts it after them
            spec = getattr(resources, job.kind)
            refs[job.id] = task.options(
                num_cpus=spec.num_cpus, num_gpus=spec.num_gpus,
                max_retries=resources.max_retries, retry_exceptions=False,
                name=job.id).remote(work, job, *(refs[d] for d in job.deps if d in refs))
        waiting = {refs[j.id]: j for j in jobs}
        outcomes: dict[str, Outcome] = {}
        start = time.perf_counter()
        with make_progress() as prog:
            bars = {kind: prog.add_task(f"{kind} jobs on Ray", total=n, stats="")
                    for kind, n in Counter(j.kind for j in jobs).items()}
            try:
                while waiting:
                    ready, _ = ray.wait(list(waiting), num_returns=1, timeout=5.0)
                    for ref in ready:
                        job = waiting.pop(ref)
                        outcomes[job.id] = self._result(ref)
                        prog.advance(bars[job.kind])
                    for kind, bar in bars.items():
                        left = [j.cell for j in waiting.values() if j.kind == kind]
                        prog.update(bar, stats=(f"waiting: {', '.join(left[:4])}"
                                                f"{' ...' if len(left) > 4 else ''}" if left else
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


def create_executor(name: str | Executor, address: str | None = None,
                    connect_timeout: float | None = None) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); ``address`` and
    ``connect_timeout`` (default :data:`RAY_CONNECT_TIMEOUT_S`) are Ray's only."""
    if isinstance(name, Executor):
        return name
    if name not in EXECUTORS:
        raise ConfigError(f"<executor={name}> is not an executor;{did_you_mean(name, EXECUTORS)} "
                          f"accepted: {', '.join(EXECUTORS)}")
    if name == "ray":
        return RayExecutor(address, RAY_CONNECT_TIMEOUT_S if connect_timeout is None
                           else connect_timeout)
    for arg, value in (("address", address), ("connect_timeout", connect_timeout)):
        if value is not None:
            raise ConfigError(f"<{arg}={value}> is for the ray executor, not {name!r}",
                              f"add <executor=ray>, or leave <{arg}> out")
    return EXECUTORS[name]()
