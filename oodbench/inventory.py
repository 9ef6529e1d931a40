"""What oodbench knows here: benchmarks, datasets (and whether each is available), models,
model adapters, objectives and scorers with their parameters, as plain data (``oodbench
list``, ``--json``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from oodbench.adapters import ADAPTERS
from oodbench.check import load_config
from oodbench.config import DATA_ROOT_TOKEN, Benchmark
from oodbench.data import (
    DATASETS,
    DatasetStatus,
    dataset_names,
    dataset_report,
    image_list_status,
    resolve_data_root,
)
from oodbench.errors import ConfigError
from oodbench.models import MODELS
from oodbench.objectives import OBJECTIVES, get_objective, objective_label
from oodbench.scoring import (
    SCORER_GROUPS,
    MapScorer,
    ModelScorer,
    create_scorer,
    get_scorer,
    list_scorers,
)
from oodbench.train import model_weights


def _status(report: DatasetStatus) -> dict[str, Any]:
    """A :class:`DatasetStatus` as plain data: where it loads from, or what each source needs
    and how to provide it."""
    if report.available:
        return {"available": True, "where": report.where}
    return {"available": False, "expected": list(report.expected),
            "reasons": list(report.reasons), "howto": list(dict.fromkeys(report.howto)),
            "notes": list(report.notes)}


def _detail(status: dict[str, Any]) -> str:
    """One line for the table: where it loads from, or the paths it looks for."""
    if status["available"]:
        return status["where"]
    return "expected: " + "; ".join(status["expected"])


def _dataset(name: str, data_root: Path | str | None) -> dict[str, Any]:
    """Every split's status of one dataset."""
    splits = {split: _status(dataset_report(name, split, data_root))
              for split in getattr(DATASETS.get(name), "splits", ("test",))}
    test = splits.get("test") or next(iter(splits.values()))
    return {"name": name, "available": test["available"], "detail": _detail(test),
            "splits": splits}


def _weights_status(bench: Benchmark, data_root: Path | str | None) -> dict[str, Any]:
    """Whether the benchmark's ``model_weights`` file is here."""
    try:
        path = model_weights(bench, resolve_data_root(data_root))
        return {"available": True, "where": str(path)}
    except ConfigError as e:
        root = resolve_data_root(data_root)
        name = str(bench.model_weights)
        expected = name.replace(DATA_ROOT_TOKEN, str(root)) if root is not None else name
        return {"available": False, "expected": [expected], "reasons": [e.message],
                "howto": [bench.model_weights_howto or e.hint or ""], "notes": []}


def benchmark_data(bench: Benchmark, data_root: Path | str | None = None) -> dict[str, Any]:
    """Whether each dataset a benchmark reads is here: its ID splits and every OOD set (image
    lists by their own paths), as :func:`_status` data keyed ``id/<split>`` and ``ood/<name>``,
    and the list of those missing."""
    id_splits = ("train", "val", "test") if bench.id_val == "split" else ("train", "test")
    needs = {f"id/{split}": _status(dataset_report(bench.id_dataset, split, data_root))
             for split in id_splits}
    for spec in bench.ood:
        report = (image_list_status(spec.imglist, spec.images, data_root) if spec.imglist
                  else dataset_report(spec.name, "test", data_root))
        needs[f"ood/{spec.name}"] = _status(report)
    if bench.model_weights is not None:
        needs["model_weights"] = _weights_status(bench, data_root)
    return {"datasets": needs, "missing": [k for k, v in needs.items() if not v["available"]]}


def _defined_in(cls: type) -> str:
    module = cls.__module__
    return module if module.startswith("oodbench.scorers.") else str(
        getattr(sys.modules.get(module), "__file__", module))


def inventory(config: Path | str | None = None,
              data_root: Path | str | None = None) -> dict[str, Any]:
    """Everything ``oodbench list`` shows, as JSON-ready data."""
    return {
        "benchmarks": [{"name": b.name, "id": b.id_dataset, "model": b.model,
                        "trainings": [t.name for t in b.trainings],
                        "ood": [o.name for o in b.ood], "scorers": list(b.scorers),
                        "source": b.source, "data": benchmark_data(b, data_root)}
                       for b in load_config(config).values()],
        "datasets": [_dataset(name, data_root) for name in dataset_names()],
        "models": [{"name": n, "params": MODELS.params(n)} for n in MODELS.names()],
        "adapters": [{"name": n, "takes": (ADAPTERS.get(n).__doc__ or "").split("\n")[0],
                      "defined_in": _defined_in(ADAPTERS.get(n))} for n in ADAPTERS.ordered()],
        "objectives": [{"name": n, "label": objective_label(n), "params": OBJECTIVES.params(n),
                        "diagnostics": list(get_objective(n).DIAGNOSTICS)}
                       for n in OBJECTIVES.names()],
        "scorer_groups": SCORER_GROUPS,
        "scorers": [{"name": n, "group": get_scorer(n).group,
                     "consumes": "model" if issubclass(get_scorer(n), ModelScorer)
                     else "feature map" if issubclass(get_scorer(n), MapScorer)
                     else "features",
                     "defaults": create_scorer(n).get_params(),
                     "defined_in": _defined_in(get_scorer(n))}
                    for n in list_scorers()],
    }
