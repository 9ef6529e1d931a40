"""Hash stability: every rule that keeps the keys of older configs and checkpoints valid.

A benchmark's ``config_hash`` and a checkpoint's key are SHA-256 hashes of plain data. A field
added after results were published enters them only when it is set to something else than
the value older files behaved as; fields that decide where or how fast a job runs, not its
results, never enter ``config_hash``. :data:`RULES` is the one table of these rules; the
functions below apply it. Checkpoint metadata written by an older version is brought up to
date by :func:`upgrade_meta`. A bottom module: it imports nothing of oodbench.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ALWAYS", "RULES", "Rule", "hashed_config", "key_train_fields", "upgrade_meta"]

# a Benchmark, one of its OOD sets, one of its trainings, a train table
Table = Literal["benchmark", "ood", "training", "train"]
Hash = Literal["config", "checkpoint"]  # Benchmark.config_hash, a checkpoint's key

ALWAYS = object()
"""A rule's ``value`` for a field that never enters the hash, whatever its value."""


@dataclass(frozen=True)
class Rule:
    """Field ``field`` of a ``table`` is left out of the hashes in ``hashes`` when its value is
    ``value`` (:data:`ALWAYS`: always), for the reason ``why``."""

    table: Table
    field: str
    value: Any
    hashes: tuple[Hash, ...]
    why: str


_WHERE = "decides where or how a job runs, not its results"
_LATER = "added after results were published: older benchmarks keep their hash"
RULES: tuple[Rule, ...] = (
    Rule("benchmark", "source", ALWAYS, ("config",), "where the file lies, not what it says"),
    Rule("benchmark", "description", ALWAYS, ("config",), "words for people"),
    Rule("benchmark", "ablate", ALWAYS, ("config",), "the ablation has checkpoints of its own"),
    Rule("benchmark", "ablate_scorers", ALWAYS, ("config",), "scores only the ablation"),
    Rule("benchmark", "loader_workers", ALWAYS, ("config",), _WHERE),
    Rule("benchmark", "model_weights_howto", ALWAYS, ("config",), "words for people"),
    Rule("benchmark", "resources", ALWAYS, ("config",), _WHERE),
    Rule("benchmark", "data_on_device", ALWAYS, ("config",), _WHERE + " (the same batches)"),
    Rule("benchmark", "model_weights", None, ("config",), _LATER),
    Rule("benchmark", "id_val", "holdout", ("config",), _LATER),
    Rule("benchmark", "crop_pct", 1.0, ("config",), _LATER),
    Rule("benchmark", "protocol", "", ("config",), _LATER),
    Rule("benchmark", "scorer_fit", {}, ("config",), _LATER),
    Rule("benchmark", "stats", {"bootstrap_resamples": 1000, "level": 0.95, "bootstrap_seed": 0,
                                "alpha": 0.05, "correction": "holm", "test": "t"}, ("config",),
         _LATER),
    Rule("training", "seeds", None, ("config",), _LATER),
    Rule("ood", "imglist", "", ("config",), _LATER),
    Rule("ood", "images", "", ("config",), _LATER),
    Rule("train", "amp_dtype", "float16", ("config", "checkpoint"), _LATER),
    # cpu_amp predates config_hash's rules: it is in the hash of every benchmark, off or on
    Rule("train", "cpu_amp", False, ("checkpoint",), "added after checkpoints were published"),
)


def _kept(data: Mapping[str, Any], table: Table, hashed: Hash) -> dict[str, Any]:
    """``data`` (one ``table``) without the fields that :data:`RULES` leave out of ``hashed``."""
    rules = {r.field: r.value for r in RULES if r.table == table and hashed in r.hashes}
    return {k: v for k, v in data.items()
            if not (k in rules and (rules[k] is ALWAYS or v == rules[k]))}


def hashed_config(benchmark: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a benchmark's plain data (``dataclasses.asdict``) that its ``config_hash``
    is taken of."""
    data = _kept(benchmark, "benchmark", "config")
    data["trainings"] = [{**_kept(spec, "training", "config"),
                          "train": _kept(spec["train"], "train", "config")}
                         for spec in data["trainings"]]
    for key in ("ood", "extra_ood"):
        data[key] = [_kept(spec, "ood", "config") for spec in data[key]]
    return data


def key_train_fields(train: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a train table (``dataclasses.asdict``) that enter a checkpoint's key."""
    return _kept(train, "train", "checkpoint")


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint metadata in today's form: metadata written before the diagnostics moved
    under one key has its ``<name>_test`` entries moved to ``diagnostics``."""
    if meta and "diagnostics" not in meta:
        meta["diagnostics"] = {k: meta.pop(k) for k in list(meta)
                               if k.endswith("_test") and k != "test_acc"}
    return meta
