"""Issue 22, items 1-2: output folders that cannot eat each other, and stored job outputs that
are verified before they are trusted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import oodbench.jobs
from oodbench import cli
from oodbench.check import load_benchmark
from oodbench.checkpoint import save_checkpoint
from oodbench.errors import OutputError
from oodbench.fileio import record_files
from oodbench.jobs import DONE_FILE, EVALS_DIR, RESULT_FILE, SCORES_FILE, stored_problem
from oodbench.matrix import plan_benchmark, run_benchmark
from oodbench.models import create_model
from oodbench.pipeline import ablate_benchmark, evaluate, evaluate_checkpoint
from oodbench.train import train_benchmark
from tests.conftest import FAST_CONFIG

# one training, one scorer: a run trains one epoch of one checkpoint
ONE_CE = FAST_CONFIG.replace('scorers = ["msp", "knn"]', 'scorers = ["msp"]').replace(
    '[[benchmarks.tiny.trainings]]\nname = "bgnorm"\nobjective = "bgnorm"\n'
    'params = { lam = 0.2, warmup_start = 0.0 }\n', "")


@pytest.fixture
def tb(tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    assert "bgnorm" not in ONE_CE
    tiny_bench.config.write_text(ONE_CE)
    tiny_bench.bench = load_benchmark("tiny", tiny_bench.config)
    # the eval key holds a fingerprint of the source: pinned, so only the files decide
    monkeypatch.setattr(oodbench.jobs, "source_fingerprint", lambda *_: "pinned")
    return tiny_bench


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10, 1, widths=(4, 4, 8))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. folders that may not contain one another ----------------------------------------------

def test_run_refuses_an_out_that_is_or_holds_the_runs_folder(tb: SimpleNamespace) -> None:
    shared = tb.root.parent / "D"
    with pytest.raises(OutputError, match=r"out_dir=.*D and runs_dir=.*D overlap: .*D/tiny "
                       r"\(results folder\) is .*D/tiny \(checkpoints"):
        run_benchmark(tb.bench, out_dir=shared, runs_dir=shared, data_root=tb.root)
    inner = tb.out / "tiny" / "runs"
    with pytest.raises(OutputError, match=r"results/tiny \(results folder\) contains "
                       r".*results/tiny/runs/tiny"):
        run_benchmark(tb.bench, out_dir=tb.out, runs_dir=inner, data_root=tb.root)
    with pytest.raises(OutputError, match=r"data_root=.*results/tiny overlap: .* is "):
        plan_benchmark(tb.bench, out_dir=tb.out, runs_dir=tb.runs, data_root=tb.out / "tiny")
    with pytest.raises(OutputError, match="data_root"):
        ablate_benchmark(dataclasses.replace(tb.bench, val_ood=["mnist"]), out_dir=tb.root,
                         runs_dir=tb.runs, data_root=tb.root)
    with pytest.raises(OutputError, match=r"data_root=.*data and runs_dir=.*data overlap"):
        train_benchmark(tb.bench, runs_dir=tb.root, data_root=tb.root)
    assert not shared.exists() and not tb.out.exists() and not tb.runs.exists()  # before any work


def test_a_dry_run_refuses_what_the_run_would(tb: SimpleNamespace, nothing_built: list[str]
                                              ) -> None:
    """A runs folder that is a file, or a results folder that is a link out of ``out``, is
    refused by the plan (``run --dry-run``) as by the run, before any data is loaded."""
    with pytest.raises(OutputError, match=r"bench.toml is a file, not a folder"):
        plan_benchmark(tb.bench, out_dir=tb.out, runs_dir=tb.config, data_root=tb.root)
    linked = tb.root.parent / "linked"
    linked.mkdir()
    (tb.runs / "tiny").mkdir(parents=True)
    (linked / "tiny").symlink_to(tb.runs / "tiny")
    with pytest.raises(OutputError, match=r"linked/tiny is a link to .*runs/tiny, outside "):
        plan_benchmark(tb.bench, out_dir=linked, runs_dir=tb.runs, data_root=tb.root)
    assert not nothing_built


def test_the_cli_names_both_options(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    shared = tb.root.parent / "D"
    code = cli.main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                     str(tb.root), "--runs-dir", str(shared), "--out", str(shared)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Traceback" not in err
    assert f"--out {shared} and --runs-dir {shared} overlap" in err


def test_eval_writes_a_subfolder_and_leaves_the_rest_of_out(tb: SimpleNamespace) -> None:
    other = tb.out / "cifar10"
    other.mkdir(parents=True)
    (other / "manifest.json").write_text("{}")
    (tb.out / "NOTES.txt").write_text("mine")
    before = _files(tb.out)
    ckpt = save_checkpoint(tb.root.parent / "m.pt", _net(), {
        "arch": "resnet8", "widths": [4, 4, 8], "num_classes": 10, "in_channels": 1})
    df = evaluate_checkpoint(ckpt, tb.bench, out_dir=tb.out, data_root=tb.root, runs_dir=tb.runs,
                             quiet=True)
    after = _files(tb.out)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else touched
    assert not df.empty and "eval-m/metrics.csv" in after
    evaluate(_net(), tb.bench, data_root=tb.root, out_dir=tb.out, name="mine", scorers="msp")
    assert (tb.out / "eval-mine" / "metrics.csv").is_file()
    assert (tb.out / "NOTES.txt").read_text() == "mine" and (other / "manifest.json").is_file()


def test_eval_refuses_a_checkpoint_inside_the_folder_it_replaces(tb: SimpleNamespace) -> None:
    folder = tb.out / "eval-m"
    ckpt = save_checkpoint(folder / "m.pt", _net(), {
        "arch": "resnet8", "widths": [4, 4, 8], "num_classes": 10, "in_channels": 1})
    with pytest.raises(OutputError, match=r"results folder\) contains .*m\.pt \(checkpoint\)"):
        evaluate_checkpoint(ckpt, tb.bench, out_dir=tb.out, data_root=tb.root, runs_dir=tb.runs)
    assert ckpt.is_file()


def test_eval_refuses_weights_inside_the_folder_it_replaces(
        tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> None:
    """``--weights`` are loaded by ``evaluate`` after the folder check: a weights file inside
    ``<out>/eval-<name>/`` (an earlier eval's folder) is refused, not loaded and deleted."""
    folder = tb.out / "eval-good"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")  # an earlier eval's folder: replaceable
    weights = folder / "w.pt"
    torch.save(_net().state_dict(), weights)
    factory = tb.root.parent / "m.py"
    factory.write_text("from oodbench.models import create_model\n\n\ndef good(num_classes):\n"
                       "    return create_model('resnet8', num_classes, 1, widths=(4, 4, 8))\n")
    code = cli.main(["eval", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                     str(tb.root), "--runs-dir", str(tb.runs), "--model", f"{factory}:good",
                     "--weights", str(weights), "--out", str(tb.out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Traceback" not in err
    assert f"--out {tb.out} and --weights {weights} overlap" in err
    assert weights.is_file()
    with pytest.raises(OutputError, match=r"\(weights file\)"):
        evaluate(_net(), tb.bench, data_root=tb.root, out_dir=tb.out, name="good", weights=weights)


def test_a_folder_oodbench_did_not_write_is_not_replaced(tb: SimpleNamespace) -> None:
    folder = tb.out / "eval-model"
    folder.mkdir(parents=True)
    (folder / "NOTES.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"eval-model holds files that oodbench did not write "
                       r"there \(NOTES.txt\)"):
        evaluate(_net(), tb.bench, data_root=tb.root, out_dir=tb.out, scorers="msp")
    assert _files(folder) == {"NOTES.txt": b"mine"}


# --- 2. stored job outputs are verified ------------------------------------------------------

def _eval_folder(tb: SimpleNamespace) -> Path:
    (folder,) = (tb.runs / "tiny" / EVALS_DIR).iterdir()
    return folder


def _rerun(tb: SimpleNamespace, capsys: pytest.CaptureFixture) -> tuple[pd.DataFrame, str]:
    capsys.readouterr()
    df = run_benchmark(tb.bench, out_dir=tb.out, runs_dir=tb.runs, data_root=tb.root,
                       quiet=True)
    return df, " ".join(capsys.readouterr().err.split())


def _ran(tb: SimpleNamespace) -> bool:
    jobs = json.loads((tb.out / "tiny" / "manifest.json").read_text())["jobs"]
    return next(j["ran"] for j in jobs if j["job"] == "eval/ce-s0")


def _stored(tb: SimpleNamespace) -> bool:
    """Whether the plan finds the evaluation stored (verified), so a run would reuse it."""
    graph = plan_benchmark(tb.bench, out_dir=tb.out, runs_dir=tb.runs, data_root=tb.root)
    return next(j.done for j in graph.jobs if j.id == "eval/ce-s0")


def test_a_damaged_stored_evaluation_is_computed_again(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    first, _ = _rerun(tb, capsys)
    folder = _eval_folder(tb)
    done = json.loads((folder / DONE_FILE).read_text())
    assert set(done["files"]) == {RESULT_FILE, SCORES_FILE}
    assert _stored(tb)

    def no_rows() -> None:  # with its hash recorded, as an older oodbench could leave it
        empty = json.loads((folder / RESULT_FILE).read_text()) | {"rows": []}
        (folder / RESULT_FILE).write_text(json.dumps(empty))
        (folder / DONE_FILE).write_text(json.dumps(done | {"files": record_files(
            folder, [RESULT_FILE, SCORES_FILE])}))

    def truncated() -> None:
        (folder / SCORES_FILE).write_bytes((folder / SCORES_FILE).read_bytes()[:100])

    def no_hashes() -> None:
        (folder / DONE_FILE).write_text(json.dumps(
            {k: v for k, v in done.items() if k != "files"}))

    def rehashed(change: str) -> None:
        """Damage that a recorded hash does not reveal (another tool's, or a user's, edit
        that also rewrote done.json): it must not fail every later run."""
        with np.load(folder / SCORES_FILE) as z:
            scores = {k: z[k] for k in z.files}
        if change == "rows":
            (folder / RESULT_FILE).write_text(json.dumps({"rows": [1], "params": {},
                                                          "checkpoint": {}}))
        else:
            key = next(k for k in scores if k.startswith("msp/"))
            scores = ({key: np.full_like(scores[key], np.nan)} if change == "nan"
                      else {k: v for k, v in scores.items() if k != key}) | {
                k: v for k, v in scores.items() if k != key}
            np.savez(folder / SCORES_FILE, **scores)
        (folder / DONE_FILE).write_text(json.dumps(done | {"files": record_files(
            folder, [RESULT_FILE, SCORES_FILE])}))

    kept = {name: (folder / name).read_bytes() for name in (DONE_FILE, RESULT_FILE, SCORES_FILE)}
    for change, why in (("rows", "is not an evaluation oodbench wrote"),
                        ("key", "its scorers score different sets")):
        rehashed(change)
        assert why in (stored_problem(folder) or "") and not _stored(tb)
        for name, data in kept.items():
            (folder / name).write_bytes(data)
    for damage, why in ((no_rows, "holds no rows"), (truncated, "differs from the file"),
                        (no_hashes, "records no hashes"),
                        (lambda: rehashed("nan"), "holds non-finite scores")):
        damage()
        df, err = _rerun(tb, capsys)
        assert f"note: the stored evaluation {folder} is computed again" in err, damage
        assert why in err and _ran(tb) and "Traceback" not in err
        pd.testing.assert_frame_equal(df, first)
        assert _stored(tb)  # and stored again, verified


def test_a_truncated_cache_entry_is_computed_again(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    cache = tb.runs / "cache"
    first = evaluate(_net(), tb.bench, data_root=tb.root, cache_dir=cache, scorers="msp")
    entries = sorted(cache.rglob("*.npz"))
    assert entries
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-200])
    capsys.readouterr()
    again = evaluate(_net(), tb.bench, data_root=tb.root, cache_dir=cache, scorers="msp")
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("note: the feature cache entry") == len(entries)
    pd.testing.assert_frame_equal(first, again)
    np.load(entries[0])["features"]  # whole again
    capsys.readouterr()
    evaluate(_net(), tb.bench, data_root=tb.root, cache_dir=cache, scorers="msp")
    assert "note:" not in capsys.readouterr().err


def test_a_cache_entry_of_other_dtypes_is_computed_again(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    """An entry that loads whole but holds arrays no pass writes (int or float16 features,
    float labels) would fail, or round, every later scorer's input: computed again."""
    cache = tb.runs / "cache"
    first = evaluate(_net(), tb.bench, data_root=tb.root, cache_dir=cache, scorers="msp")
    entries = sorted(cache.rglob("*.npz"))
    for entry, change in zip(entries, ({"features": np.int64}, {"logits": np.float16},
                                       {"labels": np.float64}), strict=False):
        with np.load(entry) as z:
            arrays = {k: z[k].astype(change.get(k, z[k].dtype)) for k in z.files}
        np.savez(entry, **arrays)
    capsys.readouterr()
    again = evaluate(_net(), tb.bench, data_root=tb.root, cache_dir=cache, scorers="msp")
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("note: the feature cache entry") == min(3, len(entries)), err
    assert "not float32, float32 and int64" in err
    pd.testing.assert_frame_equal(first, again)
