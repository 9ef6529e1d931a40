"""Per-scorer grid search: candidates, the selection rule, config checks, and a tiny run."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from oodbench.check import load_benchmark
from oodbench.cli import main
from oodbench.config import ConfigError
from oodbench.scoring import ScorerFailed
from oodbench.tuning import VAL_ID, candidates, select_params
from tests.conftest import TINY_CONFIG


def test_candidates_cover_the_grid_in_order() -> None:
    assert candidates({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert candidates({}) == [{}]


def test_select_params_picks_lowest_validation_fpr95() -> None:
    rng = np.random.default_rng(0)
    ood = rng.normal(0, 1, 500)

    def evaluate(params: dict[str, float]) -> dict[str, np.ndarray]:
        if params["shift"] < 0:
            raise ScorerFailed("negative shift")
        return {VAL_ID: rng.normal(params["shift"], 1, 500), "val": ood}

    chosen, trials = select_params({"shift": [0.5, 3.0, -1.0, 1.0]}, evaluate, ["val"])
    assert chosen == {"shift": 3.0}
    assert [t["params"]["shift"] for t in trials] == [0.5, 3.0, -1.0, 1.0]
    assert trials[2] == {"params": {"shift": -1.0}, "error": "negative shift"}
    fprs = [t["val_fpr95"] for t in trials if "error" not in t]
    assert fprs[1] == min(fprs) and fprs[0] > fprs[2] > fprs[1]
    with pytest.raises(ScorerFailed, match="every grid point failed"):
        select_params({"shift": [-1.0]}, evaluate, ["val"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('scorer_grids = { react = { percentile = [] } }\n', "at least one candidate"),
        ('scorer_grids = { react = { percentile = 90 } }\n', "must be of type list"),
    ],
)
def test_bad_grids_are_config_errors(tmp_path: Path, extra: str, message: str) -> None:
    config = tmp_path / "b.toml"
    config.write_text(TINY_CONFIG.replace('extract_batch = 128\n', f"extract_batch = 128\n{extra}"))
    with pytest.raises(ConfigError, match=message):
        load_benchmark("tiny", config)


def test_grids_need_a_validation_ood_set(tmp_path: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text(TINY_CONFIG.replace('val_ood = ["mnist"]\n', "").replace(
        'extract_batch = 128\n', 'extract_batch = 128\nscorer_grids = { react = { percentile = '
        '[50, 90] } }\n'))
    with pytest.raises(ConfigError, match="val_ood"):
        load_benchmark("tiny", config)


def test_run_selects_on_the_validation_side_and_records_it(tiny_bench: SimpleNamespace) -> None:
    config = Path(tiny_bench.config)
    config.write_text(TINY_CONFIG.replace(
        'extract_batch = 128\n', 'extract_batch = 128\nscorer_grids = { react = { percentile = '
        '[10, 50, 99] }, odin = { temperature = [1.0, 1000.0], noise = [0.0] } }\n'))
    assert main(["run", "--benchmark", "tiny", "--config", str(config), "--data-root",
                 str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs), "--out",
                 str(tiny_bench.out), "--scorers", "react,odin,msp"]) == 0
    manifest = json.loads((tiny_bench.out / "tiny" / "manifest.json").read_text())
    for ckpt in ("ce-s0", "bgnorm-s0"):
        for name, key in (("react", "percentile"), ("odin", "temperature")):
            params = manifest["scorer_params"][ckpt][name]
            search = params["grid_search"]
            assert search["selected_on"].startswith("ID val (64 images) vs mnist")
            scored = [t for t in search["trials"] if "error" not in t]
            best = min(scored, key=lambda t: (t["val_fpr95"], -t["val_auroc"]))
            assert params[key] == best["params"][key]
        assert "grid_search" not in manifest["scorer_params"][ckpt]["msp"]
