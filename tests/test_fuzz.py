"""Property-based tests: the metrics on any finite scores, the config loader on any TOML."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from oodbench.check import load_benchmark
from oodbench.config import (
    AUGMENTS,
    DEVICE_PATTERN,
    DEVICES,
    MAX_IMAGE_SIZE,
    SAFE_NAME,
    SCHEDULES,
    Benchmark,
    ConfigError,
)
from oodbench.data import dataset_names
from oodbench.metrics import RECALL, ood_metrics
from oodbench.models import list_models
from oodbench.objectives import list_objectives, objective_params
from oodbench.scoring import SCORER_GROUPS, list_scorers

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- metrics

SCALES = (5e-324, 1e-300, 1e-8, 1.0, 1e8, 1e300, 1e307)


@st.composite
def score_sets(draw: st.DrawFn) -> np.ndarray:
    """1-D finite scores: free values, or drawn from a small pool (ties, constants), at a
    magnitude from subnormal to near the float64 maximum, sometimes on a huge offset."""
    n = draw(st.integers(1, 40))
    if draw(st.booleans()):
        pool = draw(st.lists(st.floats(-1, 1), min_size=1, max_size=3))
        values = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    else:
        values = draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))
    arr = np.asarray(values) * draw(st.sampled_from(SCALES))
    return arr + draw(st.sampled_from((0.0, 1e16))) if draw(st.booleans()) else arr


def fpr_at_recall(pos: np.ndarray, neg: np.ndarray) -> float:
    """Brute force: the strictest threshold t (scores >= t accepted as positive) that accepts
    at least RECALL of ``pos``; the fraction of ``neg`` it accepts."""
    ok = [t for t in np.unique(np.concatenate([pos, neg])) if (pos >= t).mean() >= RECALL]
    return float((neg >= max(ok)).mean())


def mann_whitney(ids: np.ndarray, oods: np.ndarray) -> float:
    """P(id > ood) + P(id == ood) / 2 over all pairs."""
    return float((ids[:, None] > oods[None, :]).mean()
                 + 0.5 * (ids[:, None] == oods[None, :]).mean())


@SETTINGS
@given(ids=score_sets(), oods=score_sets(), same=st.booleans())
def test_metrics_on_any_finite_scores(ids: np.ndarray, oods: np.ndarray, same: bool) -> None:
    if same:  # ID and OOD indistinguishable
        oods = ids.copy()
    m = ood_metrics(ids, oods)
    assert m.keys() == {"fpr95", "fpr95_oodpos", "auroc", "aupr_in", "aupr_out"}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in m.values()), m
    labels = np.r_[np.ones(len(ids)), np.zeros(len(oods))]
    scores = np.r_[ids, oods]
    # ood_metrics derives everything from one ROC curve: equal to scikit-learn up to rounding
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["auroc"] == pytest.approx(mann_whitney(ids, oods), abs=1e-12)
    # scikit-learn's AP, clipped to [0, 1] (its float sum can overshoot 1 by an ulp)
    assert m["aupr_in"] == pytest.approx(min(1.0, average_precision_score(labels, scores)),
                                         abs=1e-12)
    assert m["aupr_out"] == pytest.approx(
        min(1.0, average_precision_score(1 - labels, -scores)), abs=1e-12)
    assert m["fpr95"] == fpr_at_recall(ids, oods)
    assert m["fpr95_oodpos"] == fpr_at_recall(-oods, -ids)
    if same:
        assert m["auroc"] == pytest.approx(0.5, abs=1e-12)
    if len(set(scores)) == 1:  # constant scores: no information
        assert m["fpr95"] == m["fpr95_oodpos"] == 1.0


# ---------------------------------------------------------------- config files

DATASETS = dataset_names()
SCORERS = [*list_scorers(), "no-such-scorer"]
OBJECTIVES = [*list_objectives(), "no-such-objective"]
NAMES = ["ce", "variant", "other"]
UNSAFE = ["../x", "a/b", "", "..", "/abs"]
GROUPS = ["all", *SCORER_GROUPS]

scalars = st.one_of(st.integers(-3, 600), st.floats(), st.text(max_size=6), st.booleans())
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def maybe(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any] = anything
          ) -> st.SearchStrategy[Any]:
    """Nine times in ten a valid value, else ``invalid`` (by default anything at all)."""
    return st.integers(0, 9).flatmap(lambda i: invalid if i == 9 else valid)


def _train_table() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "epochs": maybe(st.integers(0, 10)), "batch_size": maybe(st.integers(0, 256)),
        "lr": maybe(st.floats(-0.1, 1.0)), "momentum": maybe(st.floats(0, 1)),
        "weight_decay": maybe(st.floats(0, 1e-2)),
        "schedule": maybe(st.sampled_from([*SCHEDULES, "linear"])),
        "augment": maybe(st.sampled_from([*AUGMENTS, "mixup"])),
        "amp": maybe(st.booleans()), "cpu_amp": maybe(st.booleans()),
        "channels_last": maybe(st.booleans())})


@st.composite
def _training(draw: st.DrawFn) -> dict[str, Any]:
    objective = draw(st.sampled_from(OBJECTIVES))
    known = list(objective_params(objective)) if objective in list_objectives() else []
    params = st.dictionaries(st.sampled_from([*known, "bogus"]),
                             maybe(st.floats(-1, 5) | st.sampled_from(["ratio", "abs"])),
                             max_size=3)
    return draw(st.fixed_dictionaries(
        {"name": maybe(st.sampled_from(NAMES), st.sampled_from(UNSAFE) | anything),
         "objective": maybe(st.just(objective))},
        optional={"params": maybe(params), "train": maybe(_train_table()),
                  "init": maybe(st.nothing(), st.sampled_from(NAMES))}))


_ood = st.fixed_dictionaries({"name": maybe(st.sampled_from([*DATASETS, "nope"]))},
                             optional={"group": maybe(st.sampled_from(["near", "far", ""]))})
_trainings = st.lists(_training(), min_size=1, max_size=3, unique_by=lambda t: str(t.get("name")))
# scorer and group names, sometimes repeated or overlapping (an error), or one name alone
_scorer_names = st.one_of(st.lists(st.sampled_from(SCORERS), min_size=1, max_size=4, unique=True),
                          st.sampled_from(GROUPS[:-1]),
                          st.lists(st.sampled_from([*SCORERS, *GROUPS]), max_size=4))

_bench = st.fixed_dictionaries(
    {"id": maybe(st.sampled_from(DATASETS)), "num_classes": maybe(st.integers(1, 100)),
     "image_size": maybe(st.sampled_from([28, 32]), st.just(2048) | anything),
     "channels": maybe(st.sampled_from([1, 3])),
     "model": maybe(st.sampled_from(list_models())),
     "trainings": maybe(_trainings), "scorers": maybe(_scorer_names)},
    optional={
        "widths": maybe(st.lists(st.integers(-1, 64), max_size=4)),
        "seeds": maybe(st.integers(0, 3)), "val_fraction": maybe(st.floats(-0.5, 1.5)),
        "val_ood": maybe(st.lists(st.sampled_from(DATASETS), max_size=2)),
        "device": maybe(st.sampled_from([*DEVICES, "cuda:0", "cuda:3", "cuda:-1", "gpu", "tpu"])),
        "extract_batch": maybe(st.one_of(st.integers(0, 1024), st.just("auto"))),
        "extract_amp": maybe(st.booleans()),
        "scorer_params": maybe(st.dictionaries(st.sampled_from(SCORERS),
                                               maybe(st.dictionaries(st.text(max_size=5),
                                                                     scalars, max_size=2)),
                                               max_size=2)),
        "scorer_grids": maybe(st.dictionaries(st.sampled_from(SCORERS), maybe(
            st.dictionaries(st.text(max_size=5), maybe(st.lists(scalars, max_size=3)),
                            max_size=2)), max_size=2)),
        "ood": maybe(st.lists(_ood, max_size=3)), "train": maybe(_train_table()),
        "description": maybe(st.text(max_size=10)),
        "extra_ood": maybe(st.lists(st.fixed_dictionaries(
            {"name": maybe(st.text(max_size=5) | st.sampled_from([*DATASETS, *NAMES, *UNSAFE])),
             "path": maybe(st.text(max_size=8))},
            optional={"group": maybe(st.text(max_size=5))}), max_size=2)),
        "ablate": maybe(st.lists(_training(), max_size=1)),
        "ablate_scorers": maybe(_scorer_names),
        "extends": maybe(st.nothing(), st.sampled_from(["tiny", "other"])),
        "typo_key": maybe(st.nothing())})

_document = maybe(
    st.fixed_dictionaries({"benchmarks": st.fixed_dictionaries(
        {"tiny": maybe(_bench)}, optional={"other": maybe(_bench)})}),
    st.dictionaries(st.text(max_size=8), anything, max_size=2))


def to_toml(value: Any) -> str:
    """TOML for plain data, all inline (keys and strings as basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).replace("infinity", "inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(map(to_toml, value)) + "]"
    return "{" + ", ".join(f"{to_toml(str(k))} = {to_toml(v)}" for k, v in value.items()) + "}"


def _check_load(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        bench = load_benchmark("tiny", path)
    except ConfigError:
        return
    assert isinstance(bench, Benchmark)
    # what loaded holds the documented invariants
    names = [bench.name, *(t.name for t in (*bench.trainings, *bench.ablate)),
             *(o.name for o in bench.extra_ood)]
    assert all(SAFE_NAME.fullmatch(n) for n in names), names
    assert bench.scorers and set(bench.scorers) <= set(list_scorers())
    assert len(set(bench.scorers)) == len(bench.scorers)
    sets = [bench.id_dataset, *(o.name for o in (*bench.ood, *bench.extra_ood))]
    assert len(set(sets)) == len(sets)
    assert DEVICE_PATTERN.fullmatch(bench.device) and 1 <= bench.image_size <= MAX_IMAGE_SIZE
    assert len(bench.config_hash()) == 64 and bench.with_overrides(seeds=2).seeds == 2


@SETTINGS
@given(doc=_document)
def test_any_config_loads_or_raises_config_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    _check_load(tmp_path / "bench.toml", "\n".join(f"{to_toml(k)} = {to_toml(v)}"
                                                    for k, v in doc.items()) + "\n")


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_any_text_loads_or_raises_config_error(tmp_path: Path, text: str) -> None:
    _check_load(tmp_path / "bench.toml", text)
