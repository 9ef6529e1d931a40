"""The thread policy: a job's torch threads are its resources' ``num_cpus`` (rounded down, at
least one), applied by training and scoring whatever the executor or command, and given back
to the process afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from oodbench import evaluation, train
from oodbench.check import load_benchmark
from oodbench.config import JobResources
from oodbench.matrix import run_benchmark
from oodbench.pipeline import evaluate_checkpoint
from oodbench.threads import job_threads

PROCESS = 3  # the process's own count: neither job's


@pytest.mark.parametrize(("num_cpus", "threads"),
                         [(0, 1), (0.25, 1), (1, 1), (1.9, 1), (2, 2), (8, 8)])
def test_num_cpus_give_whole_threads_and_at_least_one(num_cpus: float, threads: int) -> None:
    assert JobResources(num_cpus=num_cpus).threads == threads


def test_the_count_is_given_back_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), job_threads(JobResources(num_cpus=before + 1)) as n:
        assert torch.get_num_threads() == n == before + 1
        raise RuntimeError
    assert torch.get_num_threads() == before


def _spy(seen: dict[str, set[int]], module: ModuleType, name: str,
         monkeypatch: pytest.MonkeyPatch) -> None:
    """Record torch's thread count whenever ``module.name`` is called."""
    fn: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault(name, set()).add(torch.get_num_threads())
        return fn(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_training_and_scoring_run_on_their_resources_threads(
        tiny_bench: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_bench.config
    config.write_text(config.read_text().replace("epochs = 8", "epochs = 1")
                      + "\n[benchmarks.tiny.resources]\ntrain = { num_cpus = 0.5 }\n"
                        "eval = { num_cpus = 2.5 }\n")
    bench = load_benchmark("tiny", config)
    seen: dict[str, set[int]] = {}
    _spy(seen, train, "fit", monkeypatch)  # in every training
    _spy(seen, evaluation, "accuracy", monkeypatch)  # in every scoring
    options = {"runs_dir": tiny_bench.runs, "data_root": tiny_bench.root, "quiet": True}
    before = torch.get_num_threads()
    torch.set_num_threads(PROCESS)
    try:
        run_benchmark(bench, out_dir=tmp_path / "results", scorers=["msp"], **options)
        assert seen == {"fit": {1}, "accuracy": {2}}
        assert torch.get_num_threads() == PROCESS
        manifest = json.loads((tmp_path / "results" / "tiny" / "manifest.json").read_text())
        assert {j["job"].split("/")[0]: j["threads"] for j in manifest["jobs"]} == {
            "train": 1, "eval": 2}

        seen.clear()  # oodbench eval: the same policy as the matrix's eval jobs
        checkpoint = next(tiny_bench.runs.glob("tiny/ce-s0-*.safetensors"))
        evaluate_checkpoint(checkpoint, bench, out_dir=tmp_path / "eval", scorers=["msp"],
                            **options)
        assert seen == {"accuracy": {2}} and torch.get_num_threads() == PROCESS
    finally:
        torch.set_num_threads(before)
