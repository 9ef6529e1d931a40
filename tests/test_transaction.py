"""A results folder is all-or-nothing: a failed re-run leaves the previous one byte for byte, a
finished one holds only what it produced, and plot/table refuse a folder that mixes runs."""

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from oodbench import cli, jobs, writers
from oodbench.errors import OutputError
from oodbench.fileio import StagedFolder
from tests.conftest import FAST_CONFIG


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(tb: SimpleNamespace, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    code = cli.main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                     str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), *extra])
    return code, " ".join(capsys.readouterr().err.split())


@pytest.fixture
def tb(tiny_bench: SimpleNamespace) -> SimpleNamespace:
    tiny_bench.config.write_text(FAST_CONFIG)
    return tiny_bench


def test_a_failed_rerun_leaves_the_previous_results_as_they_were(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(tb, capsys, "--scorers", "msp")[0] == 0
    folder = tb.out / "tiny"
    before = _snapshot(folder)

    def broken(*_: object) -> None:
        raise OutputError("plots could not be drawn")

    monkeypatch.setattr(writers, "write_plots", broken)  # after metrics.csv and scores
    code, err = _run(tb, capsys, "--scorers", "msp,knn")
    assert code == 1 and "plots could not be drawn" in err
    assert _snapshot(folder) == before
    staging = tb.out / ".tiny.staging"
    assert f"{folder} is left as it was" in err and str(staging) in err
    assert (staging / "metrics.csv").is_file()  # the partial output, where the message says
    monkeypatch.undo()
    assert _run(tb, capsys, "--scorers", "msp,knn")[0] == 0
    assert not staging.exists() and "scorer" in (folder / "metrics.csv").read_text()
    assert _snapshot(folder) != before


def test_a_refused_run_leaves_no_staging_folder(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: object, **__: object) -> None:
        raise OutputError("refused before anything was written")

    monkeypatch.setattr(jobs, "context", refused)
    code, err = _run(tb, capsys)
    assert code == 1 and "left as it was" not in err
    assert not (tb.out / ".tiny.staging").exists()


def test_a_smaller_rerun_keeps_nothing_stale(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    assert _run(tb, capsys, "--seeds", "2", "--scorers", "msp,knn")[0] == 0
    folder = tb.out / "tiny"
    assert {"scores/ce-s1.npz", "plots/roc_knn.png"} <= set(_snapshot(folder))
    (folder / "ablation.md").write_text("an ablation's table: another command's file\n")
    assert _run(tb, capsys, "--seeds", "1", "--scorers", "msp")[0] == 0
    files = set(_snapshot(folder))
    assert not [f for f in files if "-s1" in f or "knn" in f], files
    assert "ablation.md" in files  # kept: run does not own it
    code = cli.main(["plot", "--benchmark", "tiny", "--results", str(tb.out), "--seed", "1"])
    assert code == 1 and "seed 1" in capsys.readouterr().err


def test_plot_and_table_refuse_a_folder_that_mixes_runs(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    assert _run(tb, capsys, "--scorers", "msp")[0] == 0
    scores = tb.out / "tiny" / "scores" / "ce-s0.npz"
    with np.load(scores) as z:
        arrays = {k: z[k] + 1.0 for k in z.files}  # a valid file, of another run
    np.savez_compressed(scores, **arrays)
    for args in (["plot", "--benchmark", "tiny", "--results", str(tb.out)],
                 ["table", "--benchmark", "tiny", "--results", str(tb.out)]):
        assert cli.main(args) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"{scores} differs from the file" in err and "mixes files of different runs" in err


def test_a_swap_killed_halfway_is_undone(tmp_path: Path) -> None:
    target = tmp_path / "bench"
    target.mkdir()
    (target / "metrics.csv").write_text("old")
    # a kill between the two renames leaves the old folder as .previous and no target
    os.rename(target, tmp_path / ".bench.previous")
    stage = StagedFolder(target)
    assert (target / "metrics.csv").read_text() == "old"
    (stage.staging / "metrics.csv").write_text("new")
    assert stage.commit() == target and (target / "metrics.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]
