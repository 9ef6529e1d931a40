"""Config validation that is complete and consistent (issue 22): scorer and objective parameter
types against their signatures, OOD groups from a fixed set, no empty scorer list or widths,
and no training whose objective's term never switches on, all refused before any training."""

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from oodbench import cli, config
from oodbench.check import _adapter, check_scorer, load_benchmark, override
from oodbench.config import OOD_GROUPS, ConfigError, register_ood_group
from oodbench.objectives import OBJECTIVES, list_objectives
from oodbench.registry import RegistrationError
from oodbench.scoring import SCORERS, list_scorers

BASE = """
[benchmarks.b]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
scorers = ["msp", "knn", "ash"]
{extra}

[benchmarks.b.train]
epochs = {epochs}

[[benchmarks.b.trainings]]
name = "ce"
objective = "ce"
{ce}
[[benchmarks.b.trainings]]
name = "bg"
objective = "bgnorm"
params = {params}

[[benchmarks.b.ood]]
name = "mnist"
{group}
"""


def _load(tmp_path: Path, extra: str = "", epochs: int = 3, params: str = "{ lam = 0.2 }",
          group: str = 'group = "near"', ce: str = "") -> config.Benchmark:
    path = tmp_path / "b.toml"
    path.write_text(BASE.format(extra=extra, epochs=epochs, params=params, group=group, ce=ce))
    return load_benchmark("b", path)


def _refused(tmp_path: Path, *needles: str, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, **kwargs)
    text = info.value.message
    assert str(tmp_path / "b.toml") in text
    for needle in needles:
        assert needle in text, text
    return info.value


# ---------------------------------------------------------------- scorer parameters


@pytest.mark.parametrize(
    ("extra", "needles"),
    [("scorer_params = { knn = { k = true } }",
      ("[benchmarks.b.scorer_params] knn", "k = True must be of type int")),
     ("scorer_params = { knn = { k = 2.5 } }", ("k = 2.5 must be of type int",)),
     ('scorer_params = { knn = { backend = 1 } }', ("backend = 1 must be of type str",)),
     ('scorer_params = { ash = { percentile = "90" } }',
      ("[benchmarks.b.scorer_params] ash", "percentile = '90' must be of type float")),
     ("scorer_params = { ash = { percentile = nan } }", ("percentile = nan must be a finite",)),
     ('scorer_params = { ash = { variant = "bb" } }',
      ("variant = 'bb' is not accepted; did you mean 'b'?",)),
     ("scorer_params = { fdbd = { distance_as_normalizer = 1 } }",
      ("distance_as_normalizer = 1 must be of type bool",)),
     ("scorer_params = { vim = { dim = true } }", ("dim = True must be of type int",)),
     ('val_ood = ["mnist"]\nscorer_grids = { knn = { k = [1, 2.5] } }',
      ("[benchmarks.b.scorer_grids.knn]", "candidate 2.5", "k = 2.5 must be of type int"))],
    ids=["k-true", "k-2.5", "backend-int", "percentile-string", "percentile-nan",
         "variant-typo", "bool-as-int", "dim-true", "grid-candidate"],
)
def test_scorer_parameter_types_are_checked_before_training(
    tmp_path: Path, extra: str, needles: tuple[str, ...]
) -> None:
    _refused(tmp_path, *needles, extra=extra)


def test_an_integer_is_a_float_parameter(tmp_path: Path) -> None:
    bench = _load(tmp_path, extra="scorer_params = { ash = { percentile = 85 }, "
                                  "knn = { k = 3, alpha = 1 } }")
    assert bench.scorer_params == {"ash": {"percentile": 85}, "knn": {"k": 3, "alpha": 1}}


def test_check_scorer_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        check_scorer("knn", {"k": True})
    assert re.match(r"<scorer>: knn parameters .*: k = True must be of type int$",
                    info.value.message), info.value.message


def test_every_builtin_parameter_declares_a_type_its_default_has() -> None:
    """The checks above are only as good as the signatures: every parameter of a built-in
    scorer and objective is annotated, and its default passes its own annotation."""
    for registry, names in ((SCORERS, list_scorers()), (OBJECTIVES, list_objectives())):
        for name in names:
            factory = registry.get(name)
            if not factory.__module__.startswith(("scorers.", "oodbench.")):
                continue  # an installed plugin's own business
            hints = registry.annotations(name)
            for key, default in registry.params(name).items():
                assert key in hints, f"{registry.kind} {name}: {key} has no type annotation"
                adapter = _adapter(hints[key])
                assert adapter is not None, f"{name}.{key}: {hints[key]} is not checkable"
                try:
                    adapter.validate_python(default)
                except ValidationError as e:
                    pytest.fail(f"{name}.{key}: default {default!r} fails {hints[key]}: {e}")


def test_an_unannotated_plugin_parameter_is_left_to_its_constructor(tmp_path: Path) -> None:
    from oodbench.scoring import Scorer, register_scorer

    with SCORERS.scoped():
        @register_scorer("loose")
        class Loose(Scorer):
            def __init__(self, k=3) -> None:  # type: ignore[no-untyped-def]
                self.k = k

            def score(self, data):  # type: ignore[no-untyped-def]
                return data.logits.max(dim=1).values.double().numpy()

        bench = _load(tmp_path, extra='scorer_params = { loose = { k = "any" } }')
        assert bench.scorer_params["loose"] == {"k": "any"}


# ---------------------------------------------------------------- objective parameters


@pytest.mark.parametrize(
    ("params", "needles"),
    [('{ lam = "0.2" }', ("[benchmarks.b.trainings[1].params]", "objective 'bgnorm'",
                          "lam = '0.2' must be of type float")),
     ("{ lam = true }", ("lam = True must be of type float",)),
     ("{ lam = 0.2, warmup_start = inf }", ("warmup_start = inf must be a finite number",)),
     ('{ form = "rato" }', ("form = 'rato' is not accepted; did you mean 'ratio'?",
                            "abs, ratio, hinge")),
     ("{ warmup_start = -1.0 }", ("warmup_start and warmup_epochs must be >= 0",)),
     ("{ warmup_start = 0.0, warmup_epochs = -1.0 }", ("got 0.0 and -1.0",))],
    ids=["lam-string", "lam-bool", "warmup-inf", "form-typo", "warmup-negative",
         "warmup-epochs-negative"],
)
def test_wrong_typed_objective_parameters_name_their_key(
    tmp_path: Path, params: str, needles: tuple[str, ...]
) -> None:
    _refused(tmp_path, *needles, params=params)


# ---------------------------------------------------------------- a term that never switches on


@pytest.mark.parametrize(
    ("epochs", "params"),
    [(1, "{ lam = 0.2 }"), (2, "{ lam = 0.2, warmup_start = 2.0 }"),
     (0, "{ lam = 0.2, warmup_start = 0.0 }")],
    ids=["default-warmup-1-epoch", "warmup-at-the-end", "no-epochs"],
)
def test_a_training_whose_term_never_switches_on_is_refused(
    tmp_path: Path, epochs: int, params: str
) -> None:
    extra = 'model_weights = "w.safetensors"' if epochs == 0 else ""
    ce = 'init = "model"' if epochs == 0 else ""  # 0 epochs keeps an init: give both one
    if epochs == 0:
        params += '\ninit = "model"'
    error = _refused(tmp_path, "[benchmarks.b.trainings[1]] training 'bg'",
                     "objective 'bgnorm' adds its term from epoch warmup_start = ",
                     f"train.epochs = {epochs}", "plain cross-entropy", extra=extra,
                     epochs=epochs, params=params, ce=ce)
    assert "warmup_start below" in error.hint and "epochs above" in error.hint


def test_a_term_that_switches_on_in_time_or_a_zero_lambda_control_loads(tmp_path: Path) -> None:
    assert _load(tmp_path, epochs=3).training("bg").params == {"lam": 0.2}
    assert _load(tmp_path, epochs=2, params="{ lam = 0.2, warmup_start = 1.5 }")
    assert _load(tmp_path, epochs=1, params="{ lam = 0.2, warmup_start = 0.0 }")
    # lam = 0 is cross-entropy on purpose (the presets' ft-l0 control): no term to wait for
    assert _load(tmp_path, epochs=1, params="{ lam = 0.0 }")


def test_an_ablate_variant_whose_term_never_switches_on_is_refused(tmp_path: Path) -> None:
    variant = ('[[benchmarks.b.ablate]]\nname = "late"\nobjective = "bgnorm"\n'
               'params = { lam = 0.5, warmup_start = 4.0 }\ntrain = { epochs = 4 }')
    _refused(tmp_path, "[benchmarks.b.ablate[0]] training 'late'", "train.epochs = 4",
             extra=variant)


# ---------------------------------------------------------------- OOD groups


@pytest.mark.parametrize(
    ("group", "needles"),
    [('group = "nera"', ("[benchmarks.b.ood[0]] group = 'nera' is not accepted; did you "
                         "mean 'near'?", "near, far, csid, sanity, extra")),
     ('group = "Far"', ("did you mean 'far'?",)),
     ("group = 1", ("group = 1 must be of type str",))],
    ids=["nera", "Far", "int"],
)
def test_an_unknown_ood_group_is_refused(tmp_path: Path, group: str,
                                         needles: tuple[str, ...]) -> None:
    _refused(tmp_path, *needles, group=group)


def test_an_extra_set_group_is_checked_too(tmp_path: Path) -> None:
    extra = '[[benchmarks.b.extra_ood]]\nname = "mine"\npath = "x.npz"\ngroup = "farr"'
    _refused(tmp_path, "[benchmarks.b.extra_ood[0]] group = 'farr'", "did you mean 'far'?",
             extra=extra)


def test_ood_groups_are_the_fixed_set_or_a_registered_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert list(OOD_GROUPS) == ["near", "far", "csid", "sanity", "extra"]
    assert _load(tmp_path, group="").ood[0].group == ""  # no group key: no group
    monkeypatch.setattr(config, "OOD_GROUPS", dict(OOD_GROUPS))
    _refused(tmp_path, "group = 'adversarial'", group='group = "adversarial"')
    assert register_ood_group("adversarial", "attacked ID images") == "adversarial"
    assert _load(tmp_path, group='group = "adversarial"').ood[0].group == "adversarial"
    assert register_ood_group("adversarial", "attacked ID images") == "adversarial"
    with pytest.raises(RegistrationError, match="already registered"):
        register_ood_group("adversarial", "something else")
    with pytest.raises(RegistrationError, match="not a safe name"):
        register_ood_group("../x", "bad")


def test_a_plugin_file_may_register_only_an_ood_group(tmp_path: Path) -> None:
    """The README's way to add a group (a plug-in calling register_ood_group) was refused as
    "registers nothing"; a refused file leaves no group behind."""
    from oodbench import plugins

    with plugins.scoped():
        good, bad = tmp_path / "groups.py", tmp_path / "bad.py"
        good.write_text("from oodbench.config import register_ood_group\n"
                        "register_ood_group('adversarial', 'attacked ID images')\n")
        bad.write_text("from oodbench.config import register_ood_group\n"
                       "register_ood_group('typo', 'x')\nraise RuntimeError('broken')\n")
        with pytest.raises(plugins.PluginError, match="broken"):
            plugins.load_plugin_file(bad)
        assert "typo" not in config.OOD_GROUPS
        assert plugins.load_plugin_file(good) == {}
        assert _load(tmp_path, group='group = "adversarial"').ood[0].group == "adversarial"
    assert "adversarial" not in config.OOD_GROUPS  # scoped() undoes it


def test_a_config_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Windows editors (Notepad) start UTF-8 files with a BOM, which tomllib refuses."""
    path = tmp_path / "b.toml"
    text = BASE.format(extra="", epochs=3, params="{ lam = 0.2 }", group='group = "near"', ce="")
    path.write_bytes("\ufeff".encode() + text.replace("\n", "\r\n").encode())
    assert load_benchmark("b", path).name == "b"


# ---------------------------------------------------------------- names of folders


@pytest.mark.parametrize("name", ["eval-ce", "Eval-ce"])
def test_a_benchmark_named_like_an_eval_folder_is_refused(tmp_path: Path, name: str) -> None:
    """``run`` writes ``<out>/<benchmark>/`` and ``eval`` ``<out>/eval-<model>/``: a benchmark
    ``eval-ce`` and ``eval`` of ``ce.pt`` would replace each other's results."""
    path = tmp_path / "b.toml"
    text = BASE.format(extra="", epochs=3, params="{ lam = 0.2 }", group='group = "near"', ce="")
    path.write_text(text.replace("benchmarks.b", f"benchmarks.{name}"))
    with pytest.raises(ConfigError, match=f"benchmark name '{name}' starts with 'eval-'"):
        load_benchmark(name, path)
    with pytest.raises((ConfigError, ValidationError), match="starts with 'eval-'"):
        dataclasses.replace(_load(tmp_path), name=name)  # a Benchmark built in Python


# ---------------------------------------------------------------- empty lists


def test_empty_widths_are_refused_and_omitted_ones_are_the_default(tmp_path: Path) -> None:
    error = _refused(tmp_path, "[benchmarks.b] widths = [] names no width", extra="widths = []")
    assert "leave the key out" in error.hint
    assert _load(tmp_path).widths == ()
    assert _load(tmp_path, extra="widths = [4, 4, 8]").widths == (4, 4, 8)


@pytest.mark.parametrize(
    ("scorers", "pattern"),
    [("", r"'' names no scorer"), ([""], r"\[''\] names no scorer"),
     ([], r"\[\] names no scorer"), (["msp", ""], r"\['msp', ''\] holds an empty name")],
    ids=["empty-string", "one-empty", "empty-list", "trailing-comma"],
)
def test_an_empty_scorer_override_is_refused(tmp_path: Path, scorers: Any, pattern: str) -> None:
    bench = _load(tmp_path)
    with pytest.raises(ConfigError) as info:
        override(bench, scorers=scorers)
    assert re.match(f"<scorers>: {pattern}; name each scorer or group \\(all, ",
                    info.value.message), info.value.message


def test_cli_empty_scorers_exits_1_like_an_empty_list(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _load(tmp_path)
    code = cli.main(["run", "--benchmark", "b", "--config", str(tmp_path / "b.toml"),
                     "--scorers", "", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
                     "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and re.search(r"error: --scorers: \[''\] names no scorer", err), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
