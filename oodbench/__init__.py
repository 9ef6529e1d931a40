"""oodbench: post-hoc OOD scorers, with and without training-time objectives, in one matrix.

The pipeline reads top-down: config -> data -> models -> train -> extract (cache) -> scorers
-> metrics -> report. Everything the CLI does is one call here::

    from oodbench import load_benchmark, run_benchmark
    df = run_benchmark(load_benchmark("fmnist"), seeds=1)
"""

from oodbench.checkpoint import load_checkpoint
from oodbench.config import Benchmark, ConfigError, load_benchmark, load_config
from oodbench.data import load_dataset
from oodbench.models import create_model, list_models, register_model
from oodbench.objectives import create_objective, list_objectives, register_objective
from oodbench.pipeline import ablate_benchmark, evaluate_checkpoint, run_benchmark
from oodbench.scoring import Features, Head, Scorer, create_scorer, list_scorers, register_scorer
from oodbench.train import Trainer, train_benchmark

__all__ = [
    "Benchmark",
    "ConfigError",
    "Features",
    "Head",
    "Scorer",
    "Trainer",
    "ablate_benchmark",
    "create_model",
    "create_objective",
    "create_scorer",
    "evaluate_checkpoint",
    "list_models",
    "list_objectives",
    "list_scorers",
    "load_benchmark",
    "load_checkpoint",
    "load_config",
    "load_dataset",
    "register_model",
    "register_objective",
    "register_scorer",
    "run_benchmark",
    "train_benchmark",
]
