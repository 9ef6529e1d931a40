"""oodbench: post-hoc OOD scorers, with and without training-time objectives, in one matrix.

The pipeline reads top-down: config -> data -> models -> train -> extract (cache) -> scorers
-> metrics -> report. Everything the CLI does is one call here::

    from oodbench import load_benchmark, run_benchmark
    df = run_benchmark(load_benchmark("fmnist"), seeds=1)

The commands (``run_benchmark``, ``plan_benchmark``, ``train_benchmark``, ``ablate_benchmark``,
``evaluate_checkpoint``, ``evaluate``) take what they work on positionally and every option
by keyword, spelt as the benchmark's fields (``scorers``, ``seeds``, ``device``,
``extract_batch``) and as each other's (``out_dir``, ``runs_dir``, ``data_root``,
``extra_ood``, ``download``, ``quiet``). ``__all__`` is the public API; its names are imported
on first use, so ``import oodbench`` (and ``oodbench --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Benchmark": "oodbench.config",
    "load_benchmark": "oodbench.check",
    "load_config": "oodbench.check",
    "Detector": "oodbench.detector",
    "ConfigError": "oodbench.errors",
    "OodbenchError": "oodbench.errors",
    "load_checkpoint": "oodbench.checkpoint",
    "load_dataset": "oodbench.data",
    "register_dataset": "oodbench.data",
    "create_model": "oodbench.models",
    "list_models": "oodbench.models",
    "register_model": "oodbench.models",
    "Objective": "oodbench.objectives",
    "create_objective": "oodbench.objectives",
    "list_objectives": "oodbench.objectives",
    "register_objective": "oodbench.objectives",
    "ablate_benchmark": "oodbench.pipeline",
    "evaluate": "oodbench.pipeline",
    "evaluate_checkpoint": "oodbench.pipeline",
    "load_model": "oodbench.modelref",
    "ModelAdapter": "oodbench.adapters",
    "PreprocessConfig": "oodbench.adapters",
    "adapt": "oodbench.adapters",
    "register_adapter": "oodbench.adapters",
    "run_benchmark": "oodbench.matrix",
    "plan_benchmark": "oodbench.matrix",
    "load_plugin_file": "oodbench.plugins",
    "export_protocol": "oodbench.report",
    "inventory": "oodbench.inventory",
    "Features": "oodbench.scoring",
    "Head": "oodbench.scoring",
    "Scorer": "oodbench.scoring",
    "create_scorer": "oodbench.scoring",
    "list_scorers": "oodbench.scoring",
    "register_scorer": "oodbench.scoring",
    "Trainer": "oodbench.train",
    "train_benchmark": "oodbench.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'oodbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names and every exported one."""
    return sorted([*globals(), *_EXPORTS])
