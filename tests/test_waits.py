"""Every wait has a deadline: a Ray address where no cluster answers fails within
``connect_timeout`` (naming the address), the number of seeds has an upper bound, and a plan
that takes long says so. (A claim from the future: ``tests/test_claims.py``.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from oodbench.check import load_benchmark
from oodbench.cli import main
from oodbench.config import MAX_SEEDS
from oodbench.errors import ConfigError
from oodbench.executors import create_executor
from oodbench.jobs import Work
from oodbench.matrix import plan_benchmark, run_benchmark


def _args(tb: SimpleNamespace, *extra: str) -> list[str]:
    return ["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
            str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), *extra]


def _work(tb: SimpleNamespace) -> Work:
    from oodbench.context import RunOptions

    return Work(load_benchmark("tiny", tb.config), RunOptions(runs_dir=tb.runs))


@pytest.fixture
def free_port() -> int:
    """A TCP port that nothing listens on (bound on every interface, then released)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_an_unreachable_ray_address_fails_at_once(
    tiny_bench: SimpleNamespace, free_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    address = f"127.0.0.1:{free_port}"
    start = time.monotonic()
    assert main(_args(tiny_bench, "--executor", "ray", "--address", address)) == 1
    assert time.monotonic() - start < 10  # Ray itself retries such an address for minutes
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: --address {address}: no Ray cluster answers at " in err
    assert "Connection refused" in err and "--connect-timeout SECONDS" in err
    assert "Traceback" not in err and "Failed to connect to GCS" not in err
    assert not ray.is_initialized() and not (tiny_bench.out / "tiny").exists()


def test_a_silent_ray_address_fails_after_connect_timeout(
    tiny_bench: SimpleNamespace, silent_port: int
) -> None:
    pytest.importorskip("ray")
    bench = load_benchmark("tiny", tiny_bench.config)
    address = f"localhost:{silent_port}"
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"address={address}: no Ray cluster answers at "
                       rf"\S+:{silent_port} \(no answer within 0.5 s\)"):
        run_benchmark(bench, executor="ray", address=address, connect_timeout=0.5,
                      out_dir=tiny_bench.out, runs_dir=tiny_bench.runs,
                      data_root=tiny_bench.root)
    assert 0.5 <= time.monotonic() - start < 5


def test_a_ray_address_of_another_server_is_refused(tiny_bench: SimpleNamespace) -> None:
    # the dashboard's port (8265, HTTP/1.1) given for the cluster's (6379, gRPC)
    pytest.importorskip("ray")
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ConfigError, match=rf"address={address}: no Ray cluster answers at "
                           r"\S+ \(what listens there does not speak gRPC\)"):
            create_executor("ray", address).check(_work(tiny_bench))
        thread.join(10)


def test_connect_timeout_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"connect_timeout=5 is for the ray executor"):
        create_executor("local", connect_timeout=5)
    pytest.importorskip("ray")
    for bad in (0, -1.0, float("nan"), float("inf"), True, "30"):
        with pytest.raises(ConfigError, match=r"connect_timeout=.* is not a positive number"):
            create_executor("ray", connect_timeout=bad)  # type: ignore[arg-type]


def test_seeds_have_an_upper_bound(tiny_bench: SimpleNamespace,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    assert bench.with_overrides(seeds=MAX_SEEDS).seeds == MAX_SEEDS
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"seeds: must be an integer from 1 to {MAX_SEEDS} "
                       r"\(each seed trains every training anew\), got 1000000"):
        plan_benchmark(bench, seeds=1_000_000, out_dir=tiny_bench.out,
                       runs_dir=tiny_bench.runs, data_root=tiny_bench.root)
    assert main(_args(tiny_bench, "--seeds", "1000000", "--dry-run")) == 1
    assert time.monotonic() - start < 10  # refused before anything is planned
    out, err = capsys.readouterr()
    assert out == "" and "error: --seeds: must be an integer from 1 to 1000" in err

    text = tiny_bench.config.read_text().replace("seeds = 1\n", f"seeds = {MAX_SEEDS + 1}\n")
    tiny_bench.config.write_text(text)
    with pytest.raises(ConfigError, match=rf"bench.toml: \[benchmarks.tiny\] seeds .*{MAX_SEEDS}"):
        load_benchmark("tiny", tiny_bench.config)


def test_a_slow_plan_shows_its_progress(tiny_bench: SimpleNamespace,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from oodbench import matrix

    bench = load_benchmark("tiny", tiny_bench.config)
    where = {"out_dir": tiny_bench.out, "runs_dir": tiny_bench.runs,
             "data_root": tiny_bench.root}
    graph = plan_benchmark(bench, seeds=3, **where)
    assert len(graph.jobs) == 3 * 2 * 2 + 1
    assert "planning" not in capsys.readouterr().err  # a quick plan says nothing
    monkeypatch.setattr(matrix, "PLAN_QUIET_S", 0.0)
    assert plan_benchmark(bench, seeds=3, **where) == graph
    err = capsys.readouterr().err  # off a terminal: a line per tenth
    assert "planning tiny: checkpoints and evaluations found: 6/6 (100%)" in err
