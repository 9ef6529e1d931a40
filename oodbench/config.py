"""Benchmark configuration: ``benchmarks.toml`` parsed by ``tomllib`` into validated objects.

A benchmark is a table ``[benchmarks.NAME]``; ``extends = "OTHER"`` starts from another
benchmark's table (sub-tables merge, lists replace). The classes below are pydantic dataclasses
(still plain dataclasses to ``dataclasses.asdict`` / ``replace``): their fields declare the
types, bounds and choices, and their validators check what needs no registry. This module
imports no registry: the names a benchmark gives (objectives, scorers, models, datasets,
protocols) are checked against them by :func:`oodbench.check.check_benchmark`, which the
public loaders :func:`oodbench.check.load_config` / :func:`~oodbench.check.load_benchmark`
run on what :func:`read_config` reads. Any wrong key or value raises :class:`ConfigError`
naming the file, the TOML table of the key, the key, its value, a close match and the
accepted values.

The default file is the project's top-level ``benchmarks.toml`` (in a checkout or an editable
install; a wheel ships it as ``oodbench/benchmarks.toml``); a ``benchmarks.toml`` in the working
directory overrides it, and an explicit ``path`` always wins.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ArgsKwargs, CoreSchema, PydanticCustomError, core_schema

from oodbench import compat
from oodbench.errors import ConfigError
from oodbench.registry import SAFE_NAME, RegistrationError, did_you_mean

__all__ = [
    "AUGMENTS",
    "DEFAULT_CONFIG",
    "DEVICES",
    "DEVICE_HELP",
    "DEVICE_PATTERN",
    "EVAL_PREFIX",
    "FIT_SPLITS",
    "INIT_MODEL",
    "MAX_IMAGE_SIZE",
    "MAX_SEEDS",
    "OOD_GROUPS",
    "SAFE_NAME",
    "SANITY",
    "SCHEDULES",
    "TYPE_ERRORS",
    "Benchmark",
    "ConfigError",
    "OODSpec",
    "OneOf",
    "Range",
    "StatsSpec",
    "TrainSpec",
    "TrainingSpec",
    "check_benchmark_name",
    "check_device",
    "check_name",
    "located",
    "not_accepted",
    "read_benchmark",
    "read_config",
    "rebuild",
    "register_ood_group",
    "scorer_list",
    "unknown_key",
]


def _presets() -> Path | Traversable:
    """The preset file: the copy a wheel ships inside the package, else the checkout's own
    top-level ``benchmarks.toml`` (a source tree or an editable install)."""
    packaged = files("oodbench") / "benchmarks.toml"
    return packaged if packaged.is_file() else Path(__file__).resolve().parent.parent / (
        "benchmarks.toml")


DEFAULT_CONFIG: Path | Traversable = _presets()

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::(?:0|[1-9][0-9]*))?")
"""Accepted device strings (``fullmatch``); whether the device exists is checked at run time."""
INIT_MODEL = "model"
"""``init`` of a training that starts from the benchmark's ``model_weights``."""

DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "auto, cpu, cuda, cuda:N (N = 0, 1, ...)"

Schedule = Literal["onecycle", "cosine"]
Augment = Literal["none", "crop-flip"]
AmpDtype = Literal["float16", "bfloat16"]
Correction = Literal["holm", "none"]  # of the verdicts' p-values, over a metric's cells
PairedTest = Literal["t", "wilcoxon"]  # the verdicts' test of the paired differences
# the ID split a scorer is fitted on (scorer_fit): ID-train (the default) or ID-validation
FitSplit = Literal["train", "val"]
FIT_SPLITS: tuple[str, ...] = get_args(FitSplit)
FIT_TRAIN, FIT_VAL = FIT_SPLITS
FIT_KEY = "fit_split"  # the key of a scorer's fit split in the manifest's scorer_params
SCHEDULES: tuple[str, ...] = get_args(Schedule)
AUGMENTS: tuple[str, ...] = get_args(Augment)
CHANNELS = (1, 3)
MAX_IMAGE_SIZE = 1024
MAX_SEEDS = 1000  # each seed trains every training anew: more is a typo, not a benchmark

SANITY = "sanity"  # the group of noise sets, left out of the tables' verdicts
OOD_GROUPS: dict[str, str] = {
    "near": "near OOD: semantic shift close to the ID classes (OpenOOD's nearood)",
    "far": "far OOD: semantic shift far from the ID classes (OpenOOD's farood)",
    "csid": "covariate-shifted ID: the ID classes under another distribution (ImageNet-V2/-C/-R)",
    SANITY: "sets that any working scorer separates (noise)",
    "extra": "the user's own sets (extra_ood, the default group there)",
}
"""The groups an OOD set's ``group`` may name (or leave empty: no group), with what each holds;
tables average over each group's sets. :func:`register_ood_group` adds one."""

_CONFIG = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)
_TABLE = "a table ({ key = value, ... })"
TYPE_ERRORS = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "of type int"),
    **dict.fromkeys(("float_type", "float_parsing"), "of type float"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "of type bool"),
    **dict.fromkeys(("list_type", "tuple_type"), "of type list"),
    **dict.fromkeys(("dict_type", "dataclass_type", "dataclass_exact_type"), _TABLE),
    "string_type": "of type str",
}
"""pydantic's type errors in this project's words: ``lr = 'fast' must be of type float``."""
_FILE_ONLY = ("train", "extends")  # benchmark keys of the file that are not Benchmark fields
_SET_BY_LOADER = ("name", "source")  # Benchmark fields that the file cannot set
_SAFE_HINT = ("use 1 to 64 letters, digits, '.', '_', '+' or '-', starting with a letter or "
              "digit (it becomes a file or folder name)")

T = TypeVar("T")
Loc = tuple[str | int, ...]


# ---------------------------------------------------------------- refusals: pydantic's own errors
#
# Validators raise PydanticCustomError; its type says how _config_error names the key:
# "not_accepted" follows "key = value", "out_of_range" follows "key" (and "got value"),
# "invalid" follows "key:", "invalid_table" is about a table (ctx "at": where in it, relative
# to the model), "unknown_key" names a key the table does not take. ctx "hint" is the fix.


def _refused(value: object, choices: Iterable[object], shown: str = "") -> PydanticCustomError:
    """``value`` is none of ``choices``: a close match, and the accepted values (``shown``)."""
    choices = list(choices)
    return PydanticCustomError("not_accepted", "is not accepted;{close} accepted values: {shown}",
                               {"close": did_you_mean(value, choices),
                                "shown": shown or ", ".join(map(str, choices))})


def not_accepted(value: object, choices: Iterable[object], shown: str = "") -> str:
    """``is not accepted; did you mean ...? accepted values: ...``, to follow ``key = value``."""
    return _refused(value, choices, shown).message()


def _invalid(text: str, at: Loc = (), hint: str = "") -> PydanticCustomError:
    """``text`` about the table ``at`` (relative to the model that raises it)."""
    return PydanticCustomError("invalid_table", text, {"at": at, "hint": hint})


def _unknown(key: object, where: str, accepted: Iterable[str], note: str = "") -> str:
    accepted = sorted(accepted)
    table = f" in [{where}{note}]" if where else ""
    return (f"unknown key {key!r}{table};{did_you_mean(key, accepted)} accepted keys: "
            f"{', '.join(accepted)}")


def _checked(check: Callable[[Any], T], value: Any, arg: str = "") -> T:
    """``check(value)``; its refusal a :class:`ConfigError` (about the API argument ``<arg>``)."""
    try:
        return check(value)
    except PydanticCustomError as e:
        text = f"{value!r} {e.message()}" if e.type == "not_accepted" else e.message()
        raise ConfigError(f"<{arg}>: {text}" if arg else text,
                          (e.context or {}).get("hint", "")) from None


def _safe(what: str) -> Callable[[Any], str]:
    """A check that a ``what`` ("training name", ...) is a safe name (:data:`SAFE_NAME`)."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
            raise PydanticCustomError("invalid", "{what} {value} is not a safe name",
                                      {"what": what, "value": repr(value), "hint": _SAFE_HINT})
        return value
    return check


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe name (:data:`SAFE_NAME`), else :class:`ConfigError` naming
    ``what`` ("benchmark name", "extra OOD set name", ...)."""
    return _checked(_safe(what), value)


EVAL_PREFIX = "eval-"  # eval writes <out_dir>/eval-<name>/, beside run's <out_dir>/<benchmark>/


def _benchmark_name(value: Any) -> str:
    _safe("benchmark name")(value)
    if value.lower().startswith(EVAL_PREFIX):
        raise PydanticCustomError(
            "invalid", "benchmark name {value} starts with {prefix}, which names the results "
            "folders of eval (OUT/{folder}MODEL/): run and eval would replace each other's "
            "results", {"value": repr(value), "prefix": repr(EVAL_PREFIX), "folder": EVAL_PREFIX,
                        "hint": f"rename the benchmark (e.g. {value[len(EVAL_PREFIX):]!r})"})
    return value


def check_benchmark_name(value: str) -> str:
    """``value`` if it is a safe name that does not start with :data:`EVAL_PREFIX` (any case):
    ``run`` writes ``<out>/<benchmark>/`` and ``eval`` ``<out>/eval-<model>/``, so such a
    benchmark's results folder would be another command's."""
    return _checked(_benchmark_name, value)


def register_ood_group(name: str, description: str) -> str:
    """Add ``name`` to :data:`OOD_GROUPS` (a plugin file's own kind of OOD set), so that an OOD
    set's ``group`` may name it; registering a name again with another description is a
    :class:`RegistrationError`."""
    try:
        _safe("OOD group name")(name)
    except PydanticCustomError as e:
        raise RegistrationError(f"{e.message()}: {_SAFE_HINT}") from None
    if OOD_GROUPS.get(name, description) != description:
        raise RegistrationError(f"OOD group {name!r} is already registered as "
                                f"{OOD_GROUPS[name]!r}")
    OOD_GROUPS[name] = description
    return name


def _group(value: str) -> str:
    if value and value not in OOD_GROUPS:
        raise _refused(value, OOD_GROUPS, f"{', '.join(OOD_GROUPS)} (or leave group out: none)")
    return value


def _device(value: object) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise _refused(value, DEVICES, DEVICE_HELP)
    return value


def check_device(value: str) -> str:
    """``value`` if it matches :data:`DEVICE_PATTERN`, else :class:`ConfigError` naming
    ``<device>``."""
    return _checked(_device, value, "device")


def _seed_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEEDS:
        raise PydanticCustomError("invalid", "must be an integer from 1 to {max} (each seed "
                                  "trains every training anew), got {value}",
                                  {"max": MAX_SEEDS, "value": repr(value)})
    return value


def scorer_list(value: object) -> tuple[str, ...]:
    """``value`` (a scorer or group name, or a list of them) as a tuple of names, not yet
    checked against the registry (:func:`oodbench.check.check_benchmark` expands groups)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise PydanticCustomError("invalid", "must be a scorer name, a group name or a list of "
                                  "them, got {value}", {"value": repr(value)})
    return tuple(items)


def _channels(value: int) -> int:
    if value not in CHANNELS:
        raise _refused(value, CHANNELS)
    return value


def _extract_batch(value: object) -> int | str:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise PydanticCustomError("invalid", 'must be "auto" or an integer >= 1, got {value}',
                                  {"value": repr(value)})
    return value


def _workers(value: object) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise PydanticCustomError("not_accepted", 'is not accepted: give "auto" or a number of '
                              "worker processes (0: load in the main process)")


def _on_device(value: object) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise _refused(value, ("auto", True, False), '"auto", true, false')


@dataclasses.dataclass(frozen=True)
class Range:
    """A number field's bounds, declared as ``Field``'s are; a value outside them, or a float
    that is not finite, is refused with the whole range (``must lie in [0, 1)``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: float) -> float:
        real = isinstance(value, float)
        if ((not real or math.isfinite(value))
                and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)):
            return value
        raise PydanticCustomError("out_of_range", self.text(real))

    def text(self, real: bool) -> str:
        """``must be >= 1``, ``must lie in [0, 1)``, ``must be > 0 and finite`` (``real``)."""
        ge, gt, le, lt = (self.ge is not None, self.gt is not None, self.le is not None,
                          self.lt is not None)
        low = f"[{self.ge}" if ge else f"({self.gt}" if gt else ""
        high = f"{self.le}]" if le else f"{self.lt})" if lt else ""
        if low and high:
            return f"must lie in {low}, {high}"
        text = (f"must be {'>=' if ge else '>'} {low[1:]}" if low
                else f"must be {'<=' if le else '<'} {high[:-1]}")
        return f"{text} and finite" if real else text


class OneOf:
    """A ``Literal`` field whose refusal names a close match and lists the accepted values."""

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        choices = get_args(source)

        def check(value: object) -> object:
            if value not in choices:
                raise _refused(value, choices)
            return value
        return core_schema.no_info_before_validator_function(check, handler(source))


# ---------------------------------------------------------------- the classes


class _Raises(type):
    """Calling a table class (directly, or by ``dataclasses.replace``) raises a
    :class:`ConfigError`, not pydantic's error: pydantic has no setting for the exception that
    a dataclass's ``__init__`` raises, and ``ConfigError``, a ``ValueError``, raised inside a
    validator would come out as a pydantic error again."""

    def __call__(cls: type[T], *args: Any, **kwargs: Any) -> T:
        # cls is annotated as the table class it is (for the return type), so mypy sees
        # neither type.__call__ (misc) nor the dataclass's fields (attr-defined)
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        except ValidationError as e:
            fields = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
            raise _config_error(e, cls.__name__, (), fields) from None


class _Table(metaclass=_Raises):
    """A table of the file: a key it does not take is named, before any other error, with the
    keys it does take; built in Python, its errors are :class:`ConfigError` (:class:`_Raises`)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        keys = data.kwargs if isinstance(data, ArgsKwargs) else data
        if isinstance(keys, dict):
            # a pydantic dataclass's fields, set by its decorator (unknown to mypy)
            fields: dict[str, FieldInfo] = cls.__pydantic_fields__  # type: ignore[attr-defined]
            accepted = [f.alias or name for name, f in fields.items()]
            for key in keys:
                if key not in fields and key not in accepted:
                    raise PydanticCustomError("unknown_key", "unknown key {key}",
                                              {"key": key, "accepted": accepted})
        return data


Count = Annotated[int, Strict(), Range(ge=1)]
Real = Annotated[float, Strict()]  # finite: every Range of a float refuses inf and nan
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
Dataset = Text  # a catalogue name: oodbench.check checks it against the catalogue


# a model_weights path starting with this lies below the data root (resolved where it is used)
DATA_ROOT_TOKEN = "{data_root}"


@dataclass(frozen=True, config=_CONFIG)
class TrainSpec(_Table):
    """Optimisation settings (SGD with Nesterov momentum).

    ``amp`` is autocast on CUDA in ``amp_dtype`` (float16 with a gradient scaler; bfloat16
    needs none); ``cpu_amp`` is bfloat16 autocast on CPU, faster on a CPU with AVX512-BF16
    or AMX (ignored, with a warning, on CPUs without native bfloat16).
    """

    epochs: Annotated[int, Strict(), Range(ge=0)] = 5  # 0: the init weights as they are
    batch_size: Count = 128
    lr: Annotated[Real, Range(gt=0)] = 0.1
    momentum: Annotated[Real, Range(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[Real, Range(ge=0)] = 5e-4
    schedule: Annotated[Schedule, OneOf()] = "onecycle"
    augment: Annotated[Augment, OneOf()] = "none"
    amp: Flag = True
    amp_dtype: Annotated[AmpDtype, OneOf()] = "float16"
    cpu_amp: Flag = False
    channels_last: Flag = True


@dataclass(frozen=True, config=_CONFIG)
class TrainingSpec(_Table):
    """One training of the matrix: an objective, its parameters, an optional init (the name
    of another training whose checkpoint it starts from, or ``"model"``: the benchmark's
    ``model_weights``) and optionally fewer ``seeds`` than the benchmark's (a costly training
    beside the others). The objective and its parameters are checked by
    :func:`oodbench.check.check_benchmark`."""

    name: Annotated[str, Strict(), AfterValidator(_safe("training name"))]
    objective: Text
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    init: Text | None = None
    seeds: Annotated[int, Strict(), Range(ge=1, le=MAX_SEEDS)] | None = None


@dataclass(frozen=True, config=_CONFIG)
class OODSpec(_Table):
    """An OOD test set and its group (one of :data:`OOD_GROUPS`, or empty: none).

    ``path`` is set for a user's own set (an image folder or ``.npz``), empty for a catalogue
    dataset. ``imglist`` and ``images`` (paths relative to the data root) make it an image
    list, as OpenOOD's ``benchmark_imglist/...`` files: ``name`` is then only its label.
    """

    name: Annotated[str, Strict(), AfterValidator(_safe("OOD set name"))]
    group: Annotated[str, Strict(), AfterValidator(_group)] = ""
    path: Text = ""
    imglist: Text = ""
    images: Text = ""


Amount = Annotated[float, Range(ge=0)]


@dataclass(frozen=True, config=_CONFIG)
class JobResources(_Table):
    """What one job of the matrix asks an executor for (Ray: a task's ``num_cpus`` and
    ``num_gpus``; fractions such as ``num_gpus = 0.25`` pack small nets on one GPU), and the
    torch CPU threads it runs with on any executor (:attr:`threads`)."""

    num_cpus: Amount = 1.0
    num_gpus: Amount = 0.0

    @property
    def threads(self) -> int:
        """torch's CPU threads for the job: ``num_cpus`` rounded down, at least 1 (a fraction
        packs jobs for Ray's scheduling; a job never runs on fewer than one thread). CPU
        results depend on it, so every executor applies it (:mod:`oodbench.threads`)."""
        return max(1, int(self.num_cpus))


@dataclass(frozen=True, config=_CONFIG)
class Resources(_Table):
    """Per-job resources of the matrix (``train``: one checkpoint; ``eval``: every scorer on
    one checkpoint) and how often a task whose worker died is retried (``max_retries``). They
    decide where jobs run, not their results, so they stay out of ``config_hash``."""

    train: JobResources = Field(default_factory=JobResources)
    eval: JobResources = Field(default_factory=JobResources)
    max_retries: Annotated[int, Strict(), Range(ge=0)] = 3


@dataclass(frozen=True, config=_CONFIG)
class StatsSpec(_Table):
    """The statistics of the results: a percentile bootstrap of each cell's FPR95 and AUROC
    over its test samples (``bootstrap_resamples`` resamples, a ``level`` interval, seeded per
    cell from ``bootstrap_seed``: :mod:`oodbench.uncertainty`, stored in ``metrics.csv``), and
    the tables' verdicts: a paired ``test`` (t, or Wilcoxon signed-rank) of each training
    against the baseline at ``alpha``, with ``correction`` over the training × scorer cells of
    a metric (:mod:`oodbench.verdicts`)."""

    bootstrap_resamples: Annotated[int, Strict(), Range(ge=100)] = 1000
    level: Annotated[Real, Range(gt=0, lt=1)] = 0.95
    bootstrap_seed: Annotated[int, Strict(), Range(ge=0)] = 0
    alpha: Annotated[Real, Range(gt=0, lt=1)] = 0.05
    correction: Annotated[Correction, OneOf()] = "holm"
    test: Annotated[PairedTest, OneOf()] = "t"


@dataclass(frozen=True, config=_CONFIG)
class Benchmark(_Table):
    """A named benchmark: ID set, model, trainings, OOD sets and scorers.

    ``scorers`` and ``ablate_scorers`` accept scorer and group names (``"all"``, ``"logits"``,
    ...) and hold the expanded scorer names. ``id_dataset`` is the key ``id`` of the file.
    """

    name: Annotated[str, Strict(), AfterValidator(_benchmark_name)]
    id_dataset: Annotated[Dataset, Field(alias="id")]
    num_classes: Count
    image_size: Annotated[int, Strict(), Range(ge=1, le=MAX_IMAGE_SIZE)]
    channels: Annotated[int, Strict(), AfterValidator(_channels)]
    model: Text  # a registered model or a reference (oodbench.check checks which)
    trainings: Annotated[tuple[TrainingSpec, ...], Field(min_length=1)]
    ood: tuple[OODSpec, ...]
    scorers: Annotated[tuple[str, ...], BeforeValidator(scorer_list)]
    description: Text = ""
    widths: tuple[Count, ...] = ()
    seeds: Annotated[int, Strict(), Range(ge=1, le=MAX_SEEDS)] = 1
    val_fraction: Annotated[Real, Range(ge=0, lt=1)] = 0.1
    val_ood: tuple[Dataset, ...] = ()
    device: Annotated[str, BeforeValidator(_device)] = "auto"
    extract_batch: Annotated[int | str, BeforeValidator(_extract_batch)] = "auto"
    extract_amp: Flag = True
    scorer_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scorer_grids: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    # default: FIT_TRAIN
    scorer_fit: dict[str, Annotated[FitSplit, OneOf()]] = Field(default_factory=dict)
    # another project's settings (oodbench.openood.PROTOCOLS) under scorer_params / scorer_fit
    protocol: Text = ""
    ablate: tuple[TrainingSpec, ...] = ()
    ablate_scorers: Annotated[tuple[str, ...], BeforeValidator(scorer_list)] = ()
    extra_ood: tuple[OODSpec, ...] = ()
    model_weights: Text | None = None
    model_weights_howto: Text = ""  # how to get model_weights, for the message when missing
    # "holdout": val_fraction of ID train, held out with a fixed seed; "split": the ID
    # dataset's own "val" split (OpenOOD's val lists)
    id_val: Annotated[Literal["holdout", "split"], OneOf()] = "holdout"
    crop_pct: Annotated[Real, Range(gt=0, le=1)] = 1.0  # resize to size / crop_pct, crop size
    loader_workers: Annotated[int | str, BeforeValidator(_workers)] = "auto"
    # the uint8 training set held on the device, batches made there: "auto" (on CUDA, when it
    # needs no resize and fits), true (required) or false; in no key (the same batches)
    data_on_device: Annotated[bool | str, BeforeValidator(_on_device)] = "auto"
    resources: Resources = Field(default_factory=Resources)
    stats: StatsSpec = Field(default_factory=StatsSpec)
    source: Text = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self._check_sets()
        self._check_trainings()
        self._check_scorers()
        return self

    def _check_sets(self) -> None:
        seen: dict[str, str] = {self.id_dataset: "the ID set"}
        for i, spec in enumerate(self.ood):
            if bool(spec.imglist) != bool(spec.images):
                raise _invalid("an image-list set needs both imglist and images", ("ood", i),
                               "set imglist = \"benchmark_imglist/...txt\" and images = "
                               "\"images_classic\" (both relative to the data root)")
            for key in ("imglist", "images") if spec.imglist else ():
                value = getattr(spec, key)
                if Path(value).is_absolute() or ".." in Path(value).parts:
                    raise _invalid(f"{key} = {value!r} must be a path relative to the data "
                                   "root, without '..'", ("ood", i))
            if spec.path:
                raise PydanticCustomError("unknown_key", "unknown key 'path'", {
                    "key": "path", "at": ("ood", i), "accepted": ("name", "group")})
            if spec.name in seen and seen[spec.name] != "the ID set":
                raise _invalid(f"name = {spec.name!r} is listed twice (also {seen[spec.name]})",
                               ("ood", i), "list each OOD set once")
            seen[spec.name] = f"ood[{i}]"
        for i, spec in enumerate(self.extra_ood):
            if not spec.path:
                raise _invalid("is missing the key 'path'", ("extra_ood", i))
            if spec.name in seen:
                raise _invalid(f"name = {spec.name!r} clashes with {seen[spec.name]}",
                               ("extra_ood", i), "give it another name")
            seen[spec.name] = f"extra_ood[{i}]"
        for i, name in enumerate(self.val_ood):
            if name in self.val_ood[:i]:
                raise _invalid(f"val_ood[{i}] = {name!r} is listed twice", (),
                               "list each set once")

    def _check_trainings(self) -> None:
        entries = [("trainings", i, t) for i, t in enumerate(self.trainings)]
        entries += [("ablate", i, t) for i, t in enumerate(self.ablate)]
        by_name: dict[str, str] = {}
        for kind, i, t in entries:
            if t.name in by_name:
                raise _invalid(f"name = {t.name!r} is taken by {by_name[t.name]}: trainings and "
                               "ablate variants need unique names", (kind, i))
            by_name[t.name] = f"{kind}[{i}]"
        specs = {t.name: t for _, _, t in entries}
        for kind, i, t in entries:
            others = [n for n in specs if n != t.name]
            if t.init == INIT_MODEL:
                if self.model_weights is None:
                    raise _invalid(f"init = {INIT_MODEL!r} starts from the weights in "
                                   "model_weights, which the benchmark does not set", (kind, i),
                                   "set model_weights = \"path/to/weights.safetensors\"")
            elif t.init is not None and t.init not in others:
                raise _invalid(f"init = {t.init!r} {not_accepted(t.init, [*others, INIT_MODEL])}",
                               (kind, i))
        for kind, i, t in entries:
            if t.train.epochs == 0 and t.init is None:
                raise _invalid("train.epochs = 0 keeps the init weights as they are, but there "
                               "is no init", (kind, i),
                               f"set init = {INIT_MODEL!r} (model_weights) or another training")
        for kind, i, t in entries:
            chain = [t.name]
            while (parent := specs[chain[-1]].init) not in (None, INIT_MODEL):
                chain.append(parent)
                if parent == t.name:
                    raise _invalid(f"init chain {' -> '.join(chain)} is circular", (kind, i))
                if chain.count(parent) > 1:
                    break  # a loop that does not pass through t: reported from its own entry

    def _check_scorers(self) -> None:
        """The scorer tables' consistency (their names and parameters are checked against the
        scorers by :func:`oodbench.check.check_benchmark`)."""
        for name, grid in self.scorer_grids.items():
            for key, values in grid.items():
                if not values:
                    raise _invalid(f"{key} needs at least one candidate value",
                                   ("scorer_grids", name))
        if self.scorer_grids and (not self.val_ood or not self.val_fraction):
            raise _invalid("scorer_grids need a val_ood set and val_fraction > 0 to select on "
                           "(the test OOD sets are never used for selection)", (),
                           "add val_ood = [...] or remove scorer_grids")
        on_val = [n for n, split in self.scorer_fit.items() if split == FIT_VAL]
        if on_val and self.id_val == "holdout" and not self.val_fraction:
            raise _invalid(f"{', '.join(on_val)} = \"{FIT_VAL}\" fits on ID-validation images, "
                           "but val_fraction = 0 holds none out", ("scorer_fit",),
                           "set val_fraction > 0 or id_val = \"split\"")
        for name in on_val:
            if name in self.scorer_grids:
                raise _invalid(f"{name} = \"{FIT_VAL}\" would fit {name} on the ID-validation "
                               "images that its scorer_grids entry selects on", ("scorer_fit",),
                               f"fit {name} on \"{FIT_TRAIN}\" or remove its grid")

    def fit_split(self, scorer: str) -> str:
        """The ID split ``scorer`` is fitted on (:data:`FIT_SPLITS`)."""
        return self.scorer_fit.get(scorer, FIT_TRAIN)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`oodbench.models.create_model`."""
        return {"widths": self.widths} if self.widths else {}

    def cells(self) -> list[tuple[int, TrainingSpec]]:
        """The (seed, training) cells of the matrix, seed by seed: each training at its
        ``seeds`` (at most the benchmark's), else the benchmark's."""
        return [(seed, t) for seed in range(self.seeds) for t in self.trainings
                if seed < (t.seeds or self.seeds)]

    def training(self, name: str) -> TrainingSpec:
        """The training called ``name``."""
        for t in (*self.trainings, *self.ablate):
            if t.name == name:
                return t
        raise KeyError(f"benchmark {self.name!r} has no training {name!r}")

    def with_overrides(self, *, seeds: int | None = None, device: str | None = None,
                       extract_batch: int | str | None = None) -> Benchmark:
        """A validated copy with these API arguments replacing the file's (``None``: keep);
        a bad one is a :class:`ConfigError` naming it as ``<seeds>``, ``<device>`` or
        ``<extract_batch>``. Scorers, which need the registry, are replaced by
        :func:`oodbench.check.override`."""
        changes: dict[str, Any] = {}
        if extract_batch is not None:
            changes["extract_batch"] = _checked(_extract_batch, extract_batch, "extract_batch")
        if seeds is not None:
            changes["seeds"] = _checked(_seed_count, seeds, "seeds")
        if device is not None:
            changes["device"] = check_device(device)
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, for manifests and hashing."""
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that determines the results (not the file path, nor the
        fields :mod:`oodbench.compat` leaves out so that older benchmarks keep their hash)."""
        data = compat.hashed_config(self.to_dict())
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- pydantic's errors -> ConfigError


def _table(loc: Sequence[str | int]) -> str:
    """``benchmarks.b.trainings[1].params`` from a location."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _at(source: str, loc: Loc, text: str, hint: str = "") -> ConfigError:
    """``text`` about the table at ``loc`` of ``source``."""
    where = _table(loc)
    return ConfigError(f"{source}: [{where}] {text}" if where else f"{source}: {text}", hint)


def _config_error(exc: ValidationError, source: str, root: Loc,
                  fields: Sequence[str] = ()) -> ConfigError:
    """The first error of ``exc`` (validating the table ``root`` of ``source``; ``fields``: the
    class's, naming its positional arguments) as a :class:`ConfigError`: the table, the key
    and pydantic's message, written as the error's type says (see "refusals" above)."""
    err = exc.errors(include_url=False)[0]
    kind, msg, value, ctx = err["type"], err["msg"], err["input"], err.get("ctx", {})
    loc = tuple(err["loc"])
    if loc and isinstance(loc[0], int) and loc[0] < len(fields):  # a positional argument
        loc = (fields[loc[0]], *loc[1:])
    loc = (*root, *loc, *ctx.get("at", ()))
    if kind == "unknown_key":
        return ConfigError(f"{source}: {_unknown(ctx['key'], _table(loc), ctx['accepted'])}")
    if kind == "invalid_table":
        return _at(source, loc, msg, ctx["hint"])
    if kind.startswith("missing"):
        return _at(source, loc[:-1], f"is missing the key {loc[-1]!r}")
    split = max((i for i, p in enumerate(loc) if isinstance(p, str)), default=0)
    key = _table(loc[split:])  # from the last name on: "widths[1]"
    if kind in TYPE_ERRORS:
        text = f"{key} = {value!r} must be {TYPE_ERRORS[kind]}"
    elif kind == "not_accepted":
        text = f"{key} = {value!r} {msg}"
    elif kind == "out_of_range":
        text = f"{key} {msg}, got {value!r}"
    elif kind == "too_short":
        text = f"{key} needs at least one entry"
    else:  # "invalid", and pydantic's other errors
        text = f"{key}: {msg}"
    return _at(source, loc[:split], text, ctx.get("hint", ""))


def _validate(cls: type[T], data: Any, source: str, root: Loc) -> T:
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise _config_error(e, source, root) from None


def _origin(bench: Benchmark) -> tuple[str, Loc]:
    """Where ``bench`` was written: its file and table, or ``Benchmark`` (built in Python)."""
    return (bench.source, ("benchmarks", bench.name)) if bench.source else ("Benchmark", ())


def located(bench: Benchmark, at: Loc, text: str, hint: str = "") -> ConfigError:
    """A :class:`ConfigError` ``text`` about the table at ``at`` of ``bench`` (relative to
    it), naming its file and table, as the file's own errors do."""
    source, root = _origin(bench)
    return _at(source, (*root, *at), text, hint)


def unknown_key(bench: Benchmark, at: Loc, accepted: Iterable[str],
                note: str = "") -> ConfigError:
    """A :class:`ConfigError` for the unknown key ``at[-1]`` of the table ``at[:-1]`` of
    ``bench``, listing the ``accepted`` keys (``note``: said after the table)."""
    source, root = _origin(bench)
    return ConfigError(f"{source}: {_unknown(at[-1], _table((*root, *at[:-1])), accepted, note)}")


def rebuild(bench: Benchmark, **changes: Any) -> Benchmark:
    """``bench`` with ``changes``, validated again, its errors naming its file and table."""
    data = {f.name: getattr(bench, f.name) for f in dataclasses.fields(bench)} | changes
    return _validate(Benchmark, data, *_origin(bench))


# ---------------------------------------------------------------- the file


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with_train(entry: Any, base: TrainSpec) -> Any:
    """A training table with the benchmark's ``train`` values under its own."""
    if isinstance(entry, dict) and isinstance(entry.get("train", {}), dict):
        return {**entry, "train": {**dataclasses.asdict(base), **entry.get("train", {})}}
    return entry


def _extra_set(entry: Any, folder: Path) -> Any:
    """An ``extra_ood`` table with group ``extra`` by default and its path made relative to
    the file's folder."""
    if not isinstance(entry, dict):
        return entry
    entry = {"group": "extra", **entry}
    if isinstance(entry.get("path"), str):
        target = Path(entry["path"])
        entry["path"] = str(target if target.is_absolute() else folder / target)
    return entry


def _benchmark(name: str, raw: dict[str, Any], source: str, folder: Path) -> Benchmark:
    where = ("benchmarks", name)
    try:
        check_benchmark_name(name)
    except ConfigError as e:
        raise _at(source, ("benchmarks",), e.message, e.hint) from None
    fields = Benchmark.__pydantic_fields__  # type: ignore[attr-defined]  # set by pydantic
    keys = [f.alias or k for k, f in fields.items() if k not in _SET_BY_LOADER] + [*_FILE_ONLY]
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{source}: {_unknown(key, _table(where), keys)}")
    if raw.get("widths") == []:  # the field's empty default means the model's own widths
        raise _at(source, where, "widths = [] names no width", "give the stage widths (e.g. "
                  "widths = [16, 32, 64]), or leave the key out for the model's default widths")
    data = {"ood": [], **raw, "name": name, "source": source}
    base = _validate(TrainSpec, data.pop("train", {}), source, (*where, "train"))
    for key in ("trainings", "ablate"):
        if isinstance(data.get(key), list):
            data[key] = [_with_train(t, base) for t in data[key]]
    if isinstance(data.get("extra_ood"), list):
        data["extra_ood"] = [_extra_set(o, folder) for o in data["extra_ood"]]
    if isinstance(data.get("model_weights"), str) and not data["model_weights"].startswith(
            DATA_ROOT_TOKEN):
        weights = Path(data["model_weights"])
        data["model_weights"] = str(weights if weights.is_absolute() else folder / weights)
    return _validate(Benchmark, data, source, where)


def _default_source() -> Path | Traversable:
    local = Path("benchmarks.toml")
    return local if local.is_file() else DEFAULT_CONFIG


def read_config(path: Path | str | None = None) -> dict[str, Benchmark]:
    """Parse every benchmark of a TOML file, validated as far as no registry is needed
    (:func:`oodbench.check.load_config` also checks their names against the registries).

    Default: ``benchmarks.toml`` in the working directory, else the packaged one.
    """
    file = Path(path) if path is not None else _default_source()
    source = str(file)
    if not file.is_file():
        raise ConfigError(f"config file {source} does not exist", "pass an existing file")
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8-sig"))  # a BOM, as Notepad writes
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid TOML: {e}", 'fix the syntax there (strings in '
                          '"quotes", tables as [benchmarks.NAME])') from e
    for key in doc:
        if key != "benchmarks":
            raise ConfigError(f"{source}: {_unknown(key, 'top level', ['benchmarks'])}")
    tables = doc.get("benchmarks", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: benchmarks = {tables!r} must be {_TABLE}")
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
        if name in seen:
            raise ConfigError(f"{source}: circular 'extends' chain {' -> '.join((*seen, name))}")
        if name not in resolved:
            raw = tables[name]
            if not isinstance(raw, dict):
                raise _at(source, ("benchmarks",), f"{name} = {raw!r} must be {_TABLE}")
            parent = raw.get("extends")
            if parent is not None:
                if not isinstance(parent, str) or parent not in tables:
                    raise _at(source, ("benchmarks", name), f"extends = {parent!r} "
                              f"{not_accepted(parent, sorted(tables))}")
                raw = _merge(resolve(parent, (*seen, name)), raw)
            resolved[name] = {k: v for k, v in raw.items() if k != "extends"}
        return resolved[name]

    folder = Path(source).parent
    return {name: _benchmark(name, resolve(name, ()), source, folder) for name in tables}


def read_benchmark(name: str, path: Path | str | None = None) -> Benchmark:
    """One benchmark by name, as :func:`read_config` reads it; an unknown name lists the
    available ones."""
    benches = read_config(path)
    if name not in benches:
        source = path if path is not None else _default_source()
        raise ConfigError(f"{source}: no benchmark {name!r};{did_you_mean(name, benches)} "
                          f"available: {', '.join(benches)}")
    return benches[name]
