"""Benchmarks checked against the registries: the public loaders and the API's scorer checks.

:mod:`oodbench.config` reads and validates a benchmark as far as no registry is needed;
:func:`check_benchmark` checks the rest, above the registries it names: the ID, validation
and OOD datasets, the model, the objectives and their parameters, the scorers (groups
expanded) and their parameters, the protocol (its scorer settings put under the benchmark's
own), and the scorer parameters that cannot work on the model's feature size. Every error is
a :class:`~oodbench.errors.ConfigError` naming the file, the table and the key, as the
file's own errors do. :func:`load_config` and :func:`load_benchmark` read a file and check
it; a command given a :class:`~oodbench.config.Benchmark` built in Python checks it too.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.errors import PydanticUserError

from oodbench.config import (
    TYPE_ERRORS,
    Benchmark,
    ConfigError,
    TrainingSpec,
    located,
    not_accepted,
    read_benchmark,
    read_config,
    rebuild,
    scorer_list,
    unknown_key,
)
from oodbench.data import dataset_names
from oodbench.modelref import check_reference, is_reference
from oodbench.models import feature_size, list_models
from oodbench.objectives import OBJECTIVES, create_objective, list_objectives, objective_params
from oodbench.openood import POSTPROCESSORS, PROTOCOLS, protocol_settings
from oodbench.registry import Registry, UnknownName, did_you_mean
from oodbench.scoring import (
    ALL_SCORERS,
    SCORER_GROUPS,
    SCORERS,
    Scorer,
    create_scorer,
    expand_scorers,
    get_scorer,
)

__all__ = ["check_benchmark", "check_scorer", "load_benchmark", "load_config", "override"]


def load_config(path: Path | str | None = None) -> dict[str, Benchmark]:
    """Parse and check every benchmark of a TOML file (:func:`oodbench.config.read_config`,
    then :func:`check_benchmark`).

    Default: ``benchmarks.toml`` in the working directory, else the packaged one.
    """
    return {name: check_benchmark(bench) for name, bench in read_config(path).items()}


def load_benchmark(name: str, path: Path | str | None = None) -> Benchmark:
    """One benchmark by name, checked; an unknown name lists the available ones."""
    return check_benchmark(read_benchmark(name, path))


def check_benchmark(bench: Benchmark) -> Benchmark:
    """``bench`` with its names checked against the registries, its scorer groups expanded and
    its protocol's scorer settings under its own; ``bench`` itself when that changes nothing
    (checking a checked benchmark again)."""
    _check_datasets(bench)
    _check_model(bench)
    if bench.protocol and bench.protocol not in PROTOCOLS:
        raise located(bench, (), f"protocol = {bench.protocol!r} "
                      f"{not_accepted(bench.protocol, PROTOCOLS)}")
    for kind, i, training in _trainings(bench):
        _check_training(bench, (kind, i), training)
    changes: dict[str, Any] = {}
    for key, required in (("scorers", True), ("ablate_scorers", False)):
        try:
            changes[key] = _scorer_names(getattr(bench, key), required)
        except ValueError as e:
            raise located(bench, (), f"{key}: {e}") from None
    if bench.protocol:
        changes["scorer_params"], changes["scorer_fit"] = protocol_settings(
            bench.scorer_params, bench.scorer_fit)
    changes = {k: v for k, v in changes.items() if getattr(bench, k) != v}
    bench = rebuild(bench, **changes) if changes else bench
    _check_scorers(bench)
    return bench


def override(bench: Benchmark, *, scorers: list[str] | str | None = None,
             seeds: int | None = None, device: str | None = None,
             extract_batch: int | str | None = None) -> Benchmark:
    """:meth:`Benchmark.with_overrides` that may also replace the scorers (names or groups),
    checked (:func:`check_benchmark`); a bad scorer is a :class:`ConfigError` naming
    ``<scorers>``."""
    bench = bench.with_overrides(seeds=seeds, device=device, extract_batch=extract_batch)
    if scorers is not None:
        try:
            bench = dataclasses.replace(bench, scorers=_scorer_names(scorers))
        except ValueError as e:
            raise ConfigError(f"<scorers>: {e}") from None
    return check_benchmark(bench)


def check_scorer(name: str, params: Mapping[str, Any]) -> Scorer:
    """Scorer ``name`` built with ``params``, checked as a file's ``scorer_params`` are: an
    unknown scorer or parameter, or a value its constructor refuses, is a
    :class:`ConfigError` naming ``<scorer>``."""
    try:
        get_scorer(name)
        return _scorer(name, dict(params), f"{name} parameters {dict(params)!r}")
    except UnknownName as e:
        raise ConfigError(f"<scorer>: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"<scorer>: {e.message}", e.hint) from None


# ---------------------------------------------------------------- names


def _check_datasets(bench: Benchmark) -> None:
    """The ID, validation and OOD sets are catalogue datasets (an image list names none)."""
    names = dataset_names()
    if bench.id_dataset not in names:
        raise located(bench, (), f"id = {bench.id_dataset!r} "
                      f"{not_accepted(bench.id_dataset, names)}")
    for i, name in enumerate(bench.val_ood):
        if name not in names:
            raise located(bench, (), f"val_ood[{i}] = {name!r} {not_accepted(name, names)}")
    for i, spec in enumerate(bench.ood):
        if not spec.imglist and spec.name not in names:
            raise located(bench, ("ood", i),
                          f"name = {spec.name!r} {not_accepted(spec.name, names)}")


def _check_model(bench: Benchmark) -> None:
    """The model is a registered one or a well-formed reference."""
    value = bench.model
    if is_reference(value):
        try:
            check_reference(value)
        except ValueError as e:
            raise located(bench, (), f"model = {value!r} "
                          f"{str(e).removeprefix(f'{value!r} ')}") from None
    elif value not in list_models():
        raise located(bench, (), f"model = {value!r} {not_accepted(value, list_models())}; or "
                      "a model reference timm:NAME, torchvision:NAME or FILE.py:FACTORY")


def _trainings(bench: Benchmark) -> list[tuple[str, int, TrainingSpec]]:
    return ([("trainings", i, t) for i, t in enumerate(bench.trainings)]
            + [("ablate", i, t) for i, t in enumerate(bench.ablate)])


def _check_training(bench: Benchmark, at: tuple[str | int, ...], t: TrainingSpec) -> None:
    """The objective exists, takes these parameters and switches its term on in time."""
    if t.objective not in list_objectives():
        raise located(bench, at, f"objective = {t.objective!r} "
                      f"{not_accepted(t.objective, list_objectives())}")
    accepted = objective_params(t.objective)
    for key in t.params:
        if key not in accepted:
            raise unknown_key(bench, (*at, "params", key), accepted,
                              f" (objective {t.objective!r})")
    fix = "fix that value in the file"
    try:
        _check_param_types(OBJECTIVES, t.objective, t.params)
        objective = create_objective(t.objective, **t.params)
    except (TypeError, ValueError) as e:
        raise located(bench, (*at, "params"), f"objective {t.objective!r}: {e}", fix) from e
    start = objective.term_start()
    epochs = t.train.epochs
    if start is not None and start[1] >= epochs:
        key, epoch = start
        raise located(
            bench, at, f"training {t.name!r}: objective {t.objective!r} adds its term from "
            f"epoch {key} = {epoch!r} on, but train.epochs = {epochs} ends the training before: "
            "it would be plain cross-entropy, identical to a CE training",
            f"set {key} below {epochs} (in params) or epochs above {epoch!r} (in train)")


def _scorer_names(value: object, required: bool = True) -> tuple[str, ...]:
    """Scorer names from a scorer or group name or a list of them (``expand_scorers``); a scorer
    named twice, directly or by a group, is an error (ValueError)."""
    items = scorer_list(value)
    if isinstance(value, tuple):  # as a file gives it (oodbench.config.scorer_list): one name
        value = value[0] if len(value) == 1 else list(value)  # is shown as written, "NAME"
    groups = (ALL_SCORERS, *SCORER_GROUPS)
    names = f"name each scorer or group ({', '.join(groups)}), at least one"
    if "" in items:  # what an empty or trailing comma-separated list gives
        empty = "names no scorer" if not any(items) else "holds an empty name"
        raise ValueError(f"{value!r} {empty}; {names}")
    seen: dict[str, str] = {}
    for item in items:
        try:
            expanded = expand_scorers(item)
        except UnknownName as e:
            close = "" if "did you mean" in str(e) else did_you_mean(item, groups)
            raise ValueError(f"{e}; groups: {', '.join(groups)}"
                             + (f";{close}" if close else "")) from None
        for name in expanded:
            if name in seen:
                both = "" if seen[name] == item == name else f" ({seen[name]!r} and {item!r})"
                raise ValueError(f"scorer {name!r} is listed twice{both}; name each scorer once")
            seen[name] = item
    if required and not seen:
        raise ValueError(f"{value!r} names no scorer; {names}")
    return tuple(seen)


# ---------------------------------------------------------------- parameters


_PARAM_TYPES = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)


@functools.cache
def _adapter(hint: Any) -> TypeAdapter[Any] | None:
    """A strict validator of ``hint`` (``true`` is no int, ``2.5`` no int, ``"0.2"`` no float;
    floats finite), ``None`` where pydantic builds none (the factory then judges the value)."""
    try:
        return TypeAdapter(hint, config=_PARAM_TYPES)
    except PydanticUserError:
        return None


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values of the ``Literal`` inside ``hint`` (``Annotated``, ``| None``), if any."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    return next((c for arg in get_args(hint) if (c := _choices(arg))), ())


def _check_param_types(registry: Registry[Any], name: str, params: Mapping[str, Any]) -> None:
    """ValueError naming the first of ``params`` whose value is not of the type that the
    signature of ``registry``'s ``name`` declares for it."""
    hints = registry.annotations(name)
    for key, value in params.items():
        try:
            adapter = _adapter(hints[key]) if key in hints else None
        except TypeError:  # an unhashable hint
            adapter = TypeAdapter(hints[key], config=_PARAM_TYPES)
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            kind = err["type"]
            if kind == "literal_error" and _choices(hints[key]):
                text = not_accepted(value, _choices(hints[key]))
            elif kind in TYPE_ERRORS:
                text = f"must be {TYPE_ERRORS[kind]}"
            elif kind == "finite_number":
                text = "must be a finite number"
            else:
                text = f"is not accepted: {err['msg']}"
            raise ValueError(f"{key} = {value!r} {text}") from None


def _scorer(name: str, params: dict[str, Any], what: str) -> Scorer:
    """Scorer ``name`` built with ``params``: a parameter it does not take, a value of another
    type than its signature declares, or one its constructor refuses, is a
    :class:`ConfigError` (``what``: the parameters as the message shows them)."""
    accepted = list(SCORERS.params(name))
    unknown = [k for k in params if k not in accepted]
    if unknown:
        close = did_you_mean(unknown[0], accepted)
        raise ConfigError(f"{what} has unknown parameter(s) {', '.join(unknown)}; accepted: "
                          f"{', '.join(accepted) or 'none'}" + (f";{close}" if close else ""))
    try:
        _check_param_types(SCORERS, name, params)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}", "fix that value") from None
    try:
        return create_scorer(name, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} is refused by scorer {name!r}: {e}", "fix that value") from e


def _at(bench: Benchmark, at: tuple[str | int, ...], name: str, params: dict[str, Any],
        what: str) -> Scorer:
    """:func:`_scorer`, its error about the table at ``at`` of ``bench``."""
    try:
        return _scorer(name, params, what)
    except ConfigError as e:
        raise located(bench, at, e.message, e.hint) from None


def _check_scorers(bench: Benchmark) -> None:
    """The scorer tables name scorers, with parameters and candidates they accept, that can
    work on the model's features."""
    for table in ("scorer_params", "scorer_grids", "scorer_fit"):
        for name in getattr(bench, table):
            try:
                get_scorer(name)
            except UnknownName as e:
                raise located(bench, (table,), f"{name}: {e}") from None
    built = {name: _at(bench, ("scorer_params",), name, dict(params), f"{name} = {params!r}")
             for name, params in bench.scorer_params.items()}
    for name, grid in bench.scorer_grids.items():
        base = bench.scorer_params.get(name, {})
        unknown = [k for k in grid if k not in SCORERS.params(name)]
        if unknown:
            _at(bench, ("scorer_grids",), name, dict.fromkeys(unknown), f"{name} = {grid!r}")
        for key, values in grid.items():
            for value in values:
                _at(bench, ("scorer_grids", name), name, {**base, key: value},
                    f"{key} = {values!r}: candidate {value!r}")
    _check_feature_size(bench, {n: built[n] for n in bench.scorers if n in built})


def _check_feature_size(bench: Benchmark, scorers: dict[str, Scorer]) -> None:
    """Refuse scorer parameters that cannot work on the model's feature size (ViM's dim),
    where the size is known without running user code; else ``fit`` refuses them."""
    checked = {n: s for n, s in scorers.items()
               if type(s).check_feature_size is not Scorer.check_feature_size}
    if not checked:
        return
    n_dims = feature_size(bench.model, bench.num_classes, bench.channels, bench.widths)
    if n_dims is None:
        return
    for name, scorer in checked.items():
        try:
            scorer.check_feature_size(n_dims)
        except ValueError as e:
            params = bench.scorer_params[name]
            post = POSTPROCESSORS.get(name)
            ours = bench.protocol and post and all(
                params.get(k) == v for k, v in post.params.items())
            source = f" (OpenOOD's setting, from protocol = {bench.protocol!r})" if ours else ""
            raise located(bench, ("scorer_params",), f"{name} = {dict(params)!r}{source} on "
                          f"model {bench.model!r}: {e}") from None
