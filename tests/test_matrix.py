"""The matrix as a job graph: `run --dry-run` lists every job done or pending, jobs skip when
their output exists, an eval that died before its done marker is redone, and an eval's key
follows what sets its scores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from oodbench.check import load_benchmark
from oodbench.cli import main
from oodbench.errors import ConfigError
from oodbench.executors import LocalExecutor, create_executor
from oodbench.jobs import DONE_FILE, EVALS_DIR, RESULT_FILE
from oodbench.matrix import plan_benchmark, run_benchmark
from tests.conftest import write_config


def _args(tb: SimpleNamespace, *extra: str) -> list[str]:
    return ["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
            str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), "--scorers",
            "msp,energy", *extra]


def _graph(tb: SimpleNamespace, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    capsys.readouterr()
    assert main(_args(tb, "--dry-run", "--json", *extra)) == 0
    return json.loads(capsys.readouterr().out)


def test_dry_run_lists_jobs_done_or_pending(tiny_bench: SimpleNamespace,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    graph = _graph(tiny_bench, capsys)
    ids = [j["id"] for j in graph["jobs"]]
    assert ids == ["train/ce-s0", "eval/ce-s0", "train/bgnorm-s0", "eval/bgnorm-s0", "report"]
    assert not any(j["done"] for j in graph["jobs"])
    jobs = {j["id"]: j for j in graph["jobs"]}
    assert jobs["eval/ce-s0"]["deps"] == ["train/ce-s0"]
    assert jobs["report"]["deps"] == ["eval/ce-s0", "eval/bgnorm-s0"]
    assert jobs["train/ce-s0"]["output"].endswith(".safetensors")  # its checkpoint's path is known
    assert graph["resources"]["train"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert not tiny_bench.runs.exists() and not tiny_bench.out.exists()  # wrote nothing

    assert main(_args(tiny_bench)) == 0
    graph = _graph(tiny_bench, capsys)
    assert all(j["done"] for j in graph["jobs"])
    manifest = json.loads((tiny_bench.out / "tiny" / "manifest.json").read_text())
    assert [j["job"] for j in manifest["jobs"]] == ids[:-1]
    assert all(j["ran"] for j in manifest["jobs"]) and manifest["executor"] == {"name": "local"}

    # the table form, on stdout
    assert main(_args(tiny_bench, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "job graph of tiny" in out and "5 of 5 jobs done, 0 pending" in out

    # another scorer set: the checkpoints stand, the evals and the report are pending
    graph = _graph(tiny_bench, capsys)
    other = plan_benchmark(load_benchmark("tiny", tiny_bench.config), out_dir=tiny_bench.out,
                           scorers=["msp"], runs_dir=tiny_bench.runs, data_root=tiny_bench.root)
    status = {j.id: j.done for j in other.jobs}
    assert status == {"train/ce-s0": True, "eval/ce-s0": False, "train/bgnorm-s0": True,
                      "eval/bgnorm-s0": False, "report": False}


def test_done_jobs_are_skipped_and_a_half_eval_is_redone(tiny_bench: SimpleNamespace) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    kw = {"out_dir": tiny_bench.out, "scorers": ["msp", "energy"], "runs_dir": tiny_bench.runs,
          "data_root": tiny_bench.root, "quiet": True}
    first = run_benchmark(bench, **kw)
    evals = sorted((tiny_bench.runs / "tiny" / EVALS_DIR).iterdir())
    assert len(evals) == 2 and all((e / DONE_FILE).is_file() for e in evals)
    manifest = tiny_bench.out / "tiny" / "manifest.json"

    again = run_benchmark(bench, **kw)
    assert first.equals(again)
    assert not any(j["ran"] for j in json.loads(manifest.read_text())["jobs"])

    # a worker that died after writing the result but before the done marker
    (evals[0] / DONE_FILE).unlink()
    (evals[0] / RESULT_FILE).write_text("half")
    third = run_benchmark(bench, **kw)
    assert first.equals(third)
    ran = {j["job"]: j["ran"] for j in json.loads(manifest.read_text())["jobs"]}
    assert sum(ran.values()) == 1 and not ran["train/ce-s0"] and not ran["train/bgnorm-s0"]
    assert json.loads((evals[0] / RESULT_FILE).read_text())["rows"]


def test_executor_arguments_are_checked(tiny_bench: SimpleNamespace) -> None:
    bench = load_benchmark("tiny", tiny_bench.config)
    with pytest.raises(ConfigError, match=r"executor=dask.*accepted: local, ray"):
        run_benchmark(bench, executor="dask", out_dir=tiny_bench.out)
    with pytest.raises(ConfigError, match="address=auto is for the ray executor"):
        create_executor("local", "auto")
    assert isinstance(create_executor("local"), LocalExecutor)
    assert main(_args(tiny_bench, "--json")) == 1  # --json is the dry run's
    assert not Path(tiny_bench.out).exists()


def test_resources_are_checked_and_leave_the_config_hash(tmp_path: Path) -> None:
    from oodbench.check import load_config

    plain = load_config(write_config(tmp_path))["b"]
    packed = load_config(write_config(
        tmp_path, "resources = { train = { num_gpus = 0.25, num_cpus = 4 } }"))["b"]
    assert packed.resources.train.num_gpus == 0.25 and packed.resources.train.num_cpus == 4
    assert packed.config_hash() == plain.config_hash()
    with pytest.raises(ConfigError, match="num_gpu"):
        load_config(write_config(tmp_path, "resources = { train = { num_gpu = 1 } }"))
    with pytest.raises(ConfigError, match="num_gpus"):
        load_config(write_config(tmp_path, "resources = { eval = { num_gpus = -1 } }"))


def test_ray_executor_refuses_a_cuda_benchmark_that_asks_for_no_gpu(
        tiny_bench: SimpleNamespace) -> None:
    pytest.importorskip("ray")
    from oodbench.context import RunOptions
    from oodbench.jobs import Work

    bench = dataclasses.replace(load_benchmark("tiny", tiny_bench.config), device="cuda")
    with pytest.raises(ConfigError, match=r"resources\.train\.num_gpus is 0: Ray hides every GPU"):
        create_executor("ray").check(Work(bench, RunOptions()))


def test_a_worker_keeps_one_workspace_per_command(tiny_bench: SimpleNamespace) -> None:
    from oodbench.context import RunOptions
    from oodbench.jobs import Work, WorkerWorkspace

    bench = load_benchmark("tiny", tiny_bench.config)

    def work(run: str) -> Work:
        return Work(bench, RunOptions(runs_dir=tiny_bench.runs), run=run)

    worker = WorkerWorkspace()
    first = worker.get(work("a"))
    assert worker.get(work("a")) is first  # the command's later jobs reuse its data
    assert worker.get(work("b")) is not first  # another command's replaces it
    assert worker.get(work("a")) is not first  # one is kept


def test_the_results_folder_keeps_its_checkpoints_and_a_clone_reuses_them(
        tiny_bench: SimpleNamespace, tmp_path: Path) -> None:
    """A results folder holds the checkpoints it scored (hashes in the manifest); a run from
    another runs folder (a fresh clone's) scores them instead of training, to the same
    metrics; --no-committed trains."""
    bench = load_benchmark("tiny", tiny_bench.config)
    kw = {"out_dir": tiny_bench.out, "scorers": ["msp"], "data_root": tiny_bench.root,
          "quiet": True}
    first = run_benchmark(bench, runs_dir=tiny_bench.runs, **kw)
    folder = tiny_bench.out / "tiny"
    manifest = json.loads((folder / "manifest.json").read_text())
    for cell, summary in manifest["checkpoints"].items():
        path = folder / summary["path"]
        assert summary["path"] == f"checkpoints/{path.name}" and path.name.startswith(cell)
        assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
        assert manifest["files"][summary["path"]] == summary["sha256"]
        assert (tiny_bench.runs / "tiny" / path.name).read_bytes() == path.read_bytes()

    fresh = tmp_path / "fresh-runs"
    again = run_benchmark(bench, runs_dir=fresh, **kw)
    assert first.equals(again)
    jobs = json.loads((folder / "manifest.json").read_text())["jobs"]
    assert [j["ran"] for j in jobs if j["job"].startswith("train/")] == [False, False]
    assert not list((fresh / "tiny").glob("*.safetensors"))  # nothing trained
    assert json.loads((folder / "manifest.json").read_text())["checkpoints"] == \
        manifest["checkpoints"]

    graph = plan_benchmark(bench, runs_dir=tmp_path / "other", committed=False, **{
        k: v for k, v in kw.items() if k != "quiet"})
    assert not any(j.done for j in graph.jobs if j.kind == "train")


def test_a_training_may_have_fewer_seeds(tiny_bench: SimpleNamespace) -> None:
    before = load_benchmark("tiny", tiny_bench.config).config_hash()
    text = tiny_bench.config.read_text().replace(
        'name = "bgnorm"\nobjective = "bgnorm"', 'name = "bgnorm"\nobjective = "bgnorm"\nseeds = 1')
    tiny_bench.config.write_text(text)
    bench = load_benchmark("tiny", tiny_bench.config)
    assert bench.training("bgnorm").seeds == 1 and bench.training("ce").seeds is None
    graph = plan_benchmark(bench, seeds=3, out_dir=tiny_bench.out, runs_dir=tiny_bench.runs,
                           data_root=tiny_bench.root, scorers=["msp"])
    assert [j.id for j in graph.of_kind("train")] == [
        "train/ce-s0", "train/bgnorm-s0", "train/ce-s1", "train/ce-s2"]
    assert bench.config_hash() != before  # a training's seeds enter the hash when set
