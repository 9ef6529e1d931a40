"""What oodbench knows here: benchmarks, datasets (and whether each is available), models,
model adapters, objectives and scorers with their parameters, as plain data (``oodbench
list``, ``--json``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from oodbench.adapters import ADAPTERS
from oodbench.config import load_config
from oodbench.data import dataset_names, dataset_status
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


def _ways(why: str) -> str:
    """The numbered "how to get it" lines of an unavailable dataset, on one line."""
    ways = [line.strip().split(". ", 1)[1] for line in why.splitlines()[1:]
            if line.strip()[:1].isdigit() and ". " in line]
    return "sources tried: " + "; ".join(ways) if ways else why


def _defined_in(cls: type) -> str:
    module = cls.__module__
    return module if module.startswith("scorers.") else str(
        getattr(sys.modules.get(module), "__file__", module))


def inventory(config: Path | str | None = None,
              data_root: Path | str | None = None) -> dict[str, Any]:
    """Everything ``oodbench list`` shows, as JSON-ready data."""
    datasets = []
    for name in dataset_names():
        ok, why = dataset_status(name, "test", data_root)
        datasets.append({"name": name, "available": ok, "detail": why if ok else _ways(why)})
    return {
        "benchmarks": [{"name": b.name, "id": b.id_dataset, "model": b.model,
                        "trainings": [t.name for t in b.trainings],
                        "ood": [o.name for o in b.ood], "scorers": list(b.scorers),
                        "source": b.source}
                       for b in load_config(config).values()],
        "datasets": datasets,
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
