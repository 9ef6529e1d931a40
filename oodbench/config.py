"""Benchmark configuration: ``benchmarks.toml`` parsed by ``tomllib`` into validated objects.

A benchmark is a table ``[benchmarks.NAME]``; ``extends = "OTHER"`` starts from another
benchmark's table (sub-tables merge, lists replace). Any wrong key or value raises
:class:`ConfigError` naming the key, its table, the accepted values and the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from oodbench.registry import did_you_mean

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "benchmarks.toml"
SCHEDULES = ("onecycle", "cosine")
AUGMENTS = ("none", "crop-flip")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A wrong key or value in a benchmark file."""


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings (SGD with Nesterov momentum).

    ``amp`` is float16 autocast on CUDA; ``cpu_amp`` is bfloat16 autocast on CPU, faster
    on a CPU with AVX512-BF16 or AMX (ignored, with a warning, on CPUs without native
    bfloat16).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    augment: str = "none"
    amp: bool = True
    cpu_amp: bool = False
    channels_last: bool = True


@dataclass(frozen=True)
class TrainingSpec:
    """One training of the matrix: an objective, its parameters, and an optional init."""

    name: str
    objective: str
    params: dict[str, Any]
    train: TrainSpec
    init: str | None = None


@dataclass(frozen=True)
class OODSpec:
    """An OOD test set and its group (near / far / sanity, or empty).

    ``path`` is set for a user's own set (an image folder or ``.npz``), empty for a catalogue
    dataset.
    """

    name: str
    group: str = ""
    path: str = ""


@dataclass(frozen=True)
class Benchmark:
    """A named benchmark: ID set, model, trainings, OOD sets and scorers."""

    name: str
    id_dataset: str
    num_classes: int
    image_size: int
    channels: int
    model: str
    trainings: tuple[TrainingSpec, ...]
    ood: tuple[OODSpec, ...]
    scorers: tuple[str, ...]
    description: str = ""
    widths: tuple[int, ...] = ()
    seeds: int = 1
    val_fraction: float = 0.1
    val_ood: tuple[str, ...] = ()
    device: str = "auto"
    extract_batch: int | str = "auto"
    extract_amp: bool = True
    scorer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    scorer_grids: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    ablate: tuple[TrainingSpec, ...] = ()
    ablate_scorers: tuple[str, ...] = ()
    extra_ood: tuple[OODSpec, ...] = ()
    source: str = ""

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`oodbench.models.create_model`."""
        return {"widths": self.widths} if self.widths else {}

    def training(self, name: str) -> TrainingSpec:
        """The training called ``name``."""
        for t in (*self.trainings, *self.ablate):
            if t.name == name:
                return t
        raise KeyError(f"benchmark {self.name!r} has no training {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for manifests and hashing."""
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that determines the results (not the file path)."""
        skip = ("source", "description", "ablate", "ablate_scorers")
        data = {k: v for k, v in self.to_dict().items() if k not in skip}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


_BENCH_KEYS = {f.name for f in fields(Benchmark)} - {"name", "source", "id_dataset"} | {
    "id",
    "train",
    "extends",
}
_TRAIN_KEYS = {f.name for f in fields(TrainSpec)}
_TRAINING_KEYS = {"name", "objective", "params", "train", "init"}
_OOD_KEYS = {"name", "group"}
_EXTRA_OOD_KEYS = {"name", "path", "group"}


def _check_keys(
    table: dict[str, Any], accepted: set[str], where: str, path: Path,
    required: tuple[str, ...] = (),
) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{where}] must be a table ({{ key = value, ... }}), got "
                          f"{table!r}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{path}: [{where}] is missing the key {key!r}")
    unknown = sorted(set(table) - accepted)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} in [{where}];"
            f"{did_you_mean(unknown[0], accepted)} accepted keys: "
            f"{', '.join(sorted(accepted))}"
        )


def _typed(value: Any, kind: type, key: str, where: str, path: Path) -> Any:
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(
            f"{path}: [{where}] {key} = {value!r} must be of type {kind.__name__}"
        )
    return value


def _choice(value: Any, choices: tuple[str, ...] | list[str], key: str, where: str, path: Path):
    if value not in choices:
        raise ConfigError(
            f"{path}: [{where}] {key} = {value!r} is not accepted;"
            f"{did_you_mean(value, choices)} accepted values: "
            f"{', '.join(map(str, choices))}"
        )
    return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _train_spec(table: dict[str, Any], base: TrainSpec, where: str, path: Path) -> TrainSpec:
    _check_keys(table, _TRAIN_KEYS, where, path)
    values = asdict(base)
    for f in fields(TrainSpec):
        if f.name in table:
            kind = type(getattr(base, f.name))
            values[f.name] = _typed(table[f.name], kind, f.name, where, path)
    _choice(values["schedule"], SCHEDULES, "schedule", where, path)
    _choice(values["augment"], AUGMENTS, "augment", where, path)
    for key in ("epochs", "batch_size"):
        if values[key] < 1:
            raise ConfigError(f"{path}: [{where}] {key} must be >= 1, got {values[key]}")
    for key, low, high in (("lr", 0.0, math.inf), ("momentum", 0.0, 1.0),
                           ("weight_decay", 0.0, math.inf)):
        value = values[key]
        if not (math.isfinite(value) and low <= value < high) or (key == "lr" and value == 0):
            raise ConfigError(f"{path}: [{where}] {key} = {value} is out of range "
                              f"({'> 0' if key == 'lr' else f'[{low}, {high})'} and finite)")
    return TrainSpec(**values)


def _positive(value: Any, key: str, where: str, path: Path) -> int:
    """An int >= 1."""
    if _typed(value, int, key, where, path) < 1:
        raise ConfigError(f"{path}: [{where}] {key} must be >= 1, got {value}")
    return value


def _batch(value: Any, where: str, path: Path) -> int | str:
    """``"auto"`` or an int >= 1."""
    if value == "auto":
        return value
    if isinstance(value, str):
        raise ConfigError(f'{path}: [{where}] extract_batch must be "auto" or an integer >= 1, '
                          f"got {value!r}")
    return _positive(value, "extract_batch", where, path)


def _training(
    table: dict[str, Any], base: TrainSpec, where: str, path: Path
) -> TrainingSpec:
    from oodbench.objectives import create_objective, list_objectives, objective_params

    _check_keys(table, _TRAINING_KEYS, where, path, required=("name", "objective"))
    name = _typed(table["name"], str, "name", where, path)
    objective = _choice(table["objective"], list_objectives(), "objective", where, path)
    params = _typed(table.get("params", {}), dict, "params", where, path)
    accepted = objective_params(objective)
    _check_keys(params, set(accepted), f"{where}.params (objective {objective!r})", path)
    try:
        create_objective(objective, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: [{where}.params] objective {objective!r}: {e}; fix that "
                          "value in the file") from e
    train = _train_spec(_typed(table.get("train", {}), dict, "train", where, path), base,
                        f"{where}.train", path)
    init = table.get("init")
    if init is not None:
        _typed(init, str, "init", where, path)
    return TrainingSpec(name, objective, dict(params), train, init)


def _benchmark(name: str, raw: dict[str, Any], path: Path) -> Benchmark:
    from oodbench.data import dataset_names
    from oodbench.models import list_models

    where = f"benchmarks.{name}"
    _check_keys(raw, _BENCH_KEYS, where, path, required=(
        "id", "num_classes", "image_size", "channels", "model", "trainings", "scorers"))
    datasets = dataset_names()
    base_train = _train_spec(_typed(raw.get("train", {}), dict, "train", where, path),
                             TrainSpec(), f"{where}.train", path)
    trainings_raw = _typed(raw["trainings"], list, "trainings", where, path)
    trainings = tuple(
        _training(t, base_train, f"{where}.trainings[{i}]", path)
        for i, t in enumerate(trainings_raw)
    )
    ablate = tuple(
        _training(t, base_train, f"{where}.ablate[{i}]", path)
        for i, t in enumerate(_typed(raw.get("ablate", []), list, "ablate", where, path))
    )
    names = [t.name for t in (*trainings, *ablate)]
    if not trainings or len(set(names)) != len(names):
        raise ConfigError(
            f"{path}: [{where}] trainings and ablate variants need unique names, got {names}"
        )
    for t in (*trainings, *ablate):
        if t.init is not None:
            _choice(t.init, [n for n in names if n != t.name], "init",
                    f"{where}.trainings ({t.name})", path)
    ood = []
    for i, o in enumerate(_typed(raw.get("ood", []), list, "ood", where, path)):
        w = f"{where}.ood[{i}]"
        _check_keys(o, _OOD_KEYS, w, path)
        ood.append(OODSpec(_choice(o.get("name"), datasets, "name", w, path),
                           _typed(o.get("group", ""), str, "group", w, path)))
    extra_ood = []
    for i, o in enumerate(_typed(raw.get("extra_ood", []), list, "extra_ood", where, path)):
        w = f"{where}.extra_ood[{i}]"
        _check_keys(o, _EXTRA_OOD_KEYS, w, path, required=("name", "path"))
        target = Path(_typed(o["path"], str, "path", w, path))
        extra_ood.append(OODSpec(_typed(o["name"], str, "name", w, path),
                                 _typed(o.get("group", "extra"), str, "group", w, path),
                                 str(target if target.is_absolute() else path.parent / target)))
    scorer_params = _typed(raw.get("scorer_params", {}), dict, "scorer_params", where, path)
    for scorer, params in scorer_params.items():
        _typed(params, dict, scorer, f"{where}.scorer_params", path)
    scorer_grids = _typed(raw.get("scorer_grids", {}), dict, "scorer_grids", where, path)
    for scorer, grid in scorer_grids.items():
        for key, values in _typed(grid, dict, scorer, f"{where}.scorer_grids", path).items():
            if not _typed(values, list, key, f"{where}.scorer_grids.{scorer}", path):
                raise ConfigError(f"{path}: [{where}.scorer_grids.{scorer}] {key} needs at "
                                  "least one candidate value")
    if scorer_grids and not raw.get("val_ood"):
        raise ConfigError(f"{path}: [{where}] scorer_grids need a val_ood set to select on "
                          "(the test OOD sets are never used for selection)")
    channels = _typed(raw["channels"], int, "channels", where, path)
    _choice(channels, (1, 3), "channels", where, path)
    fraction = _typed(raw.get("val_fraction", 0.1), float, "val_fraction", where, path)
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"{path}: [{where}] val_fraction must lie in [0, 1), got {fraction}")
    return Benchmark(
        name=name,
        description=_typed(raw.get("description", ""), str, "description", where, path),
        id_dataset=_choice(raw["id"], datasets, "id", where, path),
        num_classes=_positive(raw["num_classes"], "num_classes", where, path),
        image_size=_positive(raw["image_size"], "image_size", where, path),
        channels=channels,
        model=_choice(raw["model"], list_models(), "model", where, path),
        widths=tuple(_positive(w, "widths", where, path)
                     for w in _typed(raw.get("widths", []), list, "widths", where, path)),
        trainings=trainings,
        ood=tuple(ood),
        scorers=tuple(_typed(n, str, "scorers", where, path)
                      for n in _typed(raw["scorers"], list, "scorers", where, path)),
        seeds=_positive(raw.get("seeds", 1), "seeds", where, path),
        val_fraction=fraction,
        val_ood=tuple(_choice(v, datasets, "val_ood", where, path)
                      for v in _typed(raw.get("val_ood", []), list, "val_ood", where, path)),
        device=_choice(raw.get("device", "auto"), DEVICES, "device", where, path),
        extract_batch=_batch(raw.get("extract_batch", "auto"), where, path),
        extract_amp=_typed(raw.get("extract_amp", True), bool, "extract_amp", where, path),
        scorer_params=dict(scorer_params),
        scorer_grids=dict(scorer_grids),
        ablate=ablate,
        ablate_scorers=tuple(_typed(n, str, "ablate_scorers", where, path) for n in _typed(
            raw.get("ablate_scorers", []), list, "ablate_scorers", where, path)),
        extra_ood=tuple(extra_ood),
        source=str(path),
    )


def load_config(path: Path | str | None = None) -> dict[str, Benchmark]:
    """Parse and validate every benchmark of a TOML file.

    Default: ``benchmarks.toml`` in the working directory, else the repository's own.
    """
    if path is None:
        path = Path("benchmarks.toml") if Path("benchmarks.toml").is_file() else DEFAULT_CONFIG
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}; fix the syntax there (strings in "
                          '"quotes", tables as [benchmarks.NAME])') from e
    _check_keys(doc, {"benchmarks"}, "top level", path)
    tables = _typed(doc.get("benchmarks", {}), dict, "benchmarks", "top level", path)
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in seen:
            raise ConfigError(f"{path}: circular 'extends' chain {' -> '.join((*seen, name))}")
        if name not in resolved:
            raw = _typed(tables[name], dict, name, "benchmarks", path)
            parent = raw.get("extends")
            if parent is not None:
                _choice(parent, sorted(tables), "extends", f"benchmarks.{name}", path)
                raw = _merge(resolve(parent, (*seen, name)), raw)
            resolved[name] = {k: v for k, v in raw.items() if k != "extends"}
        return resolved[name]

    return {name: _benchmark(name, resolve(name, ()), path) for name in tables}


def load_benchmark(name: str, path: Path | str | None = None) -> Benchmark:
    """One benchmark by name; an unknown name lists the available ones."""
    benches = load_config(path)
    if name not in benches:
        raise ConfigError(
            f"{path or DEFAULT_CONFIG}: no benchmark {name!r};{did_you_mean(name, benches)} "
            f"available: {', '.join(benches)}"
        )
    return benches[name]
