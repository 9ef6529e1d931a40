"""benchmarks.toml validation: every error names the key, its table, accepted values and file."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

import oodbench
from oodbench import compat
from oodbench.check import load_benchmark, load_config, override
from oodbench.config import (
    DEFAULT_CONFIG,
    DEVICE_PATTERN,
    SAFE_NAME,
    ConfigError,
    OODSpec,
    StatsSpec,
    TrainSpec,
    check_device,
    check_name,
)
from oodbench.scoring import get_scorer, list_scorers
from tests.conftest import write_config


def test_the_shipped_config_is_valid() -> None:
    benches = load_config()
    assert {"fmnist", "cifar10", "cifar10-gpu"} <= set(benches)
    fm = benches["fmnist"]
    assert [t.name for t in fm.trainings] == [
        "ce", "bgnorm", "logitnorm", "ssod", "t2fnorm", "regmixup"]
    for bench in benches.values():
        assert set(bench.scorers) | set(bench.ablate_scorers) <= set(list_scorers())
    assert len(fm.scorers) >= 18
    gpu = benches["cifar10-gpu"]
    assert gpu.model == "resnet18_32x32" and gpu.id_dataset == "cifar10"
    assert gpu.trainings[0].train.augment == "crop-flip"


def test_a_minimal_benchmark_parses(tmp_path: Path) -> None:
    b = load_benchmark("b", write_config(tmp_path))
    assert b.trainings[0].train.epochs == 2 and b.trainings[0].train.lr == 0.1
    assert len(b.config_hash()) == 64


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"extra": "colour = 1"}, r"unknown key 'colour' in \[benchmarks\.b\]; accepted keys"),
        ({"train": "epoch = 3"}, r"unknown key 'epoch' in \[benchmarks\.b\.train\]"),
        ({"train": 'schedule = "step"'}, r"schedule = 'step' is not accepted; accepted values: "
                                         r"onecycle, cosine"),
        ({"train": 'lr = "fast"'}, r"lr = 'fast' must be of type float"),
        ({"train": "batch_size = 0"}, r"batch_size must be >= 1"),
        ({"extra": 'device = "tpu"'}, r"accepted values: auto, cpu, cuda"),
        ({"extra": "val_fraction = 1.5"}, r"val_fraction must lie in \[0, 1\)"),
        ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjective = "focal"'},
         r"objective = 'focal' is not accepted; accepted values: .*bgnorm"),
        ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjective = "bgnorm"\n'
                       'params = { lambda = 1 }'},
         r"unknown key 'lambda' in \[benchmarks\.b\.trainings\[1\]\.params .*accepted keys: "),
        ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjective = "ce"\n'
                       'init = "nope"'}, r"init = 'nope' is not accepted; accepted values: ce"),
        ({"trainings": '[[benchmarks.b.trainings]]\nname = "ce"\nobjective = "ce"'},
         r"unique names"),
        ({"extra": '[[benchmarks.b.ood]]\nname = "not-a-set"'},
         r"name = 'not-a-set' is not accepted; accepted values: .*fashion-mnist"),
        ({"extra": "stats = { bootstrap_resamples = 10 }"},
         r"\[benchmarks\.b\.stats\] bootstrap_resamples must be >= 100, got 10"),
        ({"extra": "stats = { level = 1.0 }"}, r"level must lie in \(0, 1\), got 1\.0"),
        ({"extra": "stats = { alpha = 0.0 }"}, r"alpha must lie in \(0, 1\), got 0\.0"),
        ({"extra": 'stats = { correction = "bonferroni" }'},
         r"correction = 'bonferroni' is not accepted; accepted values: holm, none"),
        ({"extra": "stats = { resamples = 500 }"},
         r"unknown key 'resamples' in \[benchmarks\.b\.stats\]; did you mean "
         r"'bootstrap_resamples'"),
    ],
)
def test_errors_name_key_table_values_and_file(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    path = write_config(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_stats_at_their_defaults_leave_the_config_hash_alone(tmp_path: Path) -> None:
    """compat's rule for ``stats`` holds exactly StatsSpec's defaults, so a benchmark that
    does not set them keeps its hash; any other setting enters it."""
    rule = next(r for r in compat.RULES if r.field == "stats")
    assert rule.value == dataclasses.asdict(StatsSpec())
    bench = load_benchmark("b", write_config(tmp_path))
    assert "stats" not in compat.hashed_config(bench.to_dict())
    changed = dataclasses.replace(bench, stats=StatsSpec(bootstrap_seed=1))
    assert changed.config_hash() != bench.config_hash()
    path = write_config(tmp_path, extra="stats = { alpha = 0.01 }")
    assert load_benchmark("b", path).stats == StatsSpec(alpha=0.01)


def test_model_choice_lists_models(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"resnet8"', '"vgg"'))
    with pytest.raises(ConfigError, match="accepted values: resnet18_32x32, resnet8"):
        load_config(path)


def test_missing_key_and_bad_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("num_classes = 10\n", ""))
    with pytest.raises(ConfigError, match="missing the key 'num_classes'"):
        load_config(path)
    path.write_text("[benchmarks.b\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_extends_merges_tables_and_detects_cycles(tmp_path: Path) -> None:
    path = write_config(tmp_path, extra='seeds = 2')
    path.write_text(path.read_text() + '\n[benchmarks.c]\nextends = "b"\nseeds = 3\n'
                    '[benchmarks.c.train]\nlr = 0.5\n')
    c = load_benchmark("c", path)
    assert c.seeds == 3 and c.trainings[0].train.lr == 0.5 and c.trainings[0].train.epochs == 2
    path.write_text('[benchmarks.x]\nextends = "y"\n[benchmarks.y]\nextends = "x"\n')
    with pytest.raises(ConfigError, match="circular"):
        load_config(path)


def test_unknown_benchmark_lists_available(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="available: b"):
        load_benchmark("zzz", write_config(tmp_path))


@pytest.mark.parametrize(("value", "ok"), [('"auto"', True), ("64", True), ('"big"', False),
                                           ("0", False), ("true", False)])
def test_extract_batch_is_auto_or_a_positive_int(tmp_path: Path, value: str, ok: bool) -> None:
    path = write_config(tmp_path, extra=f"extract_batch = {value}\nextract_amp = false")
    if ok:
        bench = load_benchmark("b", path)
        assert str(bench.extract_batch) == value.strip('"') and bench.extract_amp is False
    else:
        with pytest.raises(ConfigError, match="extract_batch"):
            load_benchmark("b", path)


# ---------------------------------------------------------------- names, scorers, overrides

# the explicit list the shipped fmnist and cifar10 benchmarks had before `scorers = "all"`
OLD_SCORERS = ("msp", "maxlogit", "energy", "gen", "klm", "gradnorm", "react", "ash", "scale",
               "dice", "vim", "knn", "nnguide", "mahalanobis", "rmds", "she", "fdbd", "odin")
# "all" since ash-map was added: the old list with ash-map after the other activation scorers
ALL_SCORERS_NOW = (*OLD_SCORERS[:10], "ash-map", *OLD_SCORERS[10:])
# config_hash() of the shipped benchmarks as the hand-written validator (git HEAD before the
# pydantic models) computed them from the same file (whose "all" then meant OLD_SCORERS); fmnist,
# cifar10 and cifar10-gpu recorded again when SSOD, T2FNorm and RegMixup joined them and cifar10
# went to 3 seeds (issue 24)
OLD_HASHES = {
    "fmnist": "ff903f05c9acfbce6bdc497340657f1ed05335f875518b03b5b393f101f66713",
    "cifar10": "b4e38d7b2b7336bdd0dcc02e06109c6afab1af247807e595d214840d4f691a7d",
    "cifar10-gpu": "98dfcfd545d4ba7eb62899b4711af73eb48a16e46ab85a41df15f80a5353c993",
}
UNSAFE = ["../x", "/abs", "a/b", "", ".."]


def _replace(tmp_path: Path, old: str, new: str, **kwargs: str) -> Path:
    path = write_config(tmp_path, **kwargs)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_misspelt_scorer_in_the_file_fails_fast(
    tmp_path: Path, nothing_built: list[str]
) -> None:
    path = _replace(tmp_path, 'scorers = ["msp"]', 'scorers = ["msp", "knnn"]')
    before = _files(tmp_path)
    with pytest.raises(ConfigError, match=r"\[benchmarks\.b\] scorers: unknown scorer 'knnn'; "
                                          r"did you mean 'knn'\? available: ") as info:
        load_benchmark("b", path)
    assert str(path) in str(info.value) and _files(tmp_path) == before
    assert nothing_built == []


def test_misspelt_scorer_override_fails_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_built: list[str]
) -> None:
    bench = load_benchmark("b", write_config(tmp_path))
    with pytest.raises(ConfigError) as info:
        override(bench, scorers=["msp", "knnn"])
    assert info.value.message.startswith("<scorers>: unknown scorer 'knnn'; did you mean 'knn'?")
    assert info.value.render({"scorers": "--scorers"}).startswith("--scorers: unknown scorer")
    from oodbench.matrix import run_benchmark

    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'knn'"):
        run_benchmark(load_benchmark("fmnist", str(DEFAULT_CONFIG)), scorers=["knnn"],
                      out_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    assert _files(tmp_path) == before and nothing_built == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"seeds": 0}, r"<seeds>: must be an integer from 1 to 1000 .*, got 0"),
        ({"seeds": True}, r"<seeds>: must be an integer from 1 to 1000 .*, got True"),
        ({"device": "gpu"}, r"<device>: 'gpu' is not accepted; did you mean 'cpu'\? accepted "
                            r"values: auto, cpu, cuda, cuda:N"),
        ({"scorers": ["msp", "msp"]}, r"<scorers>: scorer 'msp' is listed twice"),
        ({"scorers": 5}, r"<scorers>: must be a scorer name, a group name or a list"),
    ],
)
def test_overrides_are_validated(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError) as info:
        override(load_benchmark("b", write_config(tmp_path)), **kwargs)
    assert re.match(pattern, info.value.message), info.value.message


def test_overrides_replace_validated_values(tmp_path: Path) -> None:
    bench = load_benchmark("b", write_config(tmp_path))
    assert bench.with_overrides() is bench and override(bench) is bench
    new = override(bench, scorers="features", seeds=3, device="cuda:1")
    assert (new.seeds, new.device, new.source) == (3, "cuda:1", bench.source)
    assert new.scorers == tuple(n for n in OLD_SCORERS if get_scorer(n).group == "features")
    assert new.config_hash() != bench.config_hash() and bench.seeds == 1


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("scorer_params = { knn = { kk = 5 } }",
         r"\[benchmarks\.b\.scorer_params\] knn = \{'kk': 5\} has unknown parameter\(s\) kk; "
         r"accepted: k, .*did you mean 'k'\?"),
        ("scorer_params = { knnn = { k = 5 } }",
         r"\[benchmarks\.b\.scorer_params\] knnn: unknown scorer 'knnn'; did you mean 'knn'\?"),
        ("scorer_params = { knn = { k = 0 } }",
         r"\[benchmarks\.b\.scorer_params\] knn = \{'k': 0\} is refused by scorer 'knn': .*"
         r"must be >= 1.*; fix that value"),
        ("scorer_params = { react = { percentile = 150.0 } }",
         r"scorer_params\] react = \{'percentile': 150\.0\} is refused by scorer 'react'"),
        ('val_ood = ["mnist"]\nscorer_grids = { knn = { kk = [5] } }',
         r"\[benchmarks\.b\.scorer_grids\] knn = \{'kk': \[5\]\} has unknown parameter\(s\) kk;"
         r".*did you mean 'k'\?"),
        ('val_ood = ["mnist"]\nscorer_grids = { knnn = { k = [5] } }',
         r"\[benchmarks\.b\.scorer_grids\] knnn: unknown scorer 'knnn'; did you mean 'knn'\?"),
        ('val_ood = ["mnist"]\nscorer_grids = { knn = { k = [5, 0] } }',
         r"\[benchmarks\.b\.scorer_grids\.knn\] k = \[5, 0\]: candidate 0 is refused by scorer "
         r"'knn'"),
        ('val_ood = ["mnist"]\nscorer_params = { knn = { chunk_size = 0 } }\n'
         "scorer_grids = { knn = { k = [5] } }", r"scorer_params\] knn = \{'chunk_size': 0\}"),
        ('val_ood = ["mnist"]\nscorer_grids = { knn = { k = [] } }',
         r"\[benchmarks\.b\.scorer_grids\.knn\] k needs at least one candidate value"),
        ("scorer_grids = { knn = { k = [5] } }", r"scorer_grids need a val_ood set"),
    ],
    ids=["params-key", "params-scorer", "params-value", "params-range", "grids-key",
         "grids-scorer", "grids-candidate", "grids-over-params", "grids-empty", "grids-no-val"],
)
def test_scorer_params_and_grids_are_checked(tmp_path: Path, line: str, pattern: str) -> None:
    path = write_config(tmp_path, extra=line)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_valid_scorer_params_and_grids_load(tmp_path: Path) -> None:
    bench = load_benchmark("b", write_config(tmp_path, extra=(
        'val_ood = ["mnist"]\nscorer_params = { knn = { k = 7 } }\n'
        "scorer_grids = { knn = { alpha = [0.5, 1.0] }, react = { percentile = [80.0, 95.0] } }")))
    assert bench.scorer_params == {"knn": {"k": 7}}
    assert bench.scorer_grids["react"] == {"percentile": [80.0, 95.0]}


def test_all_expands_to_the_old_explicit_list(tmp_path: Path) -> None:
    shipped = load_config(str(DEFAULT_CONFIG))
    assert shipped["fmnist"].scorers == ALL_SCORERS_NOW == shipped["cifar10"].scorers
    assert shipped["fmnist"].ablate_scorers == ("msp", "energy", "react", "ash", "knn",
                                                "mahalanobis")
    path = _replace(tmp_path, 'scorers = ["msp"]', 'scorers = "all"')
    assert load_benchmark("b", path).scorers == ALL_SCORERS_NOW


@pytest.mark.parametrize("spec", ['"features"', '["logits", "odin"]', '["features"]'])
def test_group_names_expand(tmp_path: Path, spec: str) -> None:
    path = _replace(tmp_path, 'scorers = ["msp"]', f"scorers = {spec}\nablate_scorers = {spec}")
    groups = [spec.strip('"')] if spec.startswith('"') else json.loads(spec)
    expected = tuple(n for g in groups for n in OLD_SCORERS
                     if n == g or get_scorer(n).group == g)
    bench = load_benchmark("b", path)
    assert len(expected) >= 2 and bench.scorers == expected == bench.ablate_scorers


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [('["msp", "msp"]', r"scorer 'msp' is listed twice; name each scorer once"),
     ('["features", "knn"]', r"scorer 'knn' is listed twice \('features' and 'knn'\)"),
     ('["all", "logits"]', r"scorer 'msp' is listed twice \('all' and 'logits'\)"),
     ('"featurs"', r"unknown scorer 'featurs'.*groups: all, logits.*did you mean 'features'\?"),
     ('"other"', r"'other' names no scorer"),
     ("[]", r"\[\] names no scorer")],
)
def test_bad_scorer_lists(tmp_path: Path, spec: str, pattern: str) -> None:
    path = _replace(tmp_path, 'scorers = ["msp"]', f"scorers = {spec}")
    with pytest.raises(ConfigError, match=r"\[benchmarks\.b\] scorers: " + pattern):
        load_config(path)


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ('[[benchmarks.b.ood]]\nname = "mnist"\n[[benchmarks.b.ood]]\nname = "mnist"',
         r"\[benchmarks\.b\.ood\[1\]\] name = 'mnist' is listed twice \(also ood\[0\]\)"),
        ('[[benchmarks.b.ood]]\nname = "mnist"\n[[benchmarks.b.extra_ood]]\nname = "mnist"\n'
         'path = "x.npz"', r"\[benchmarks\.b\.extra_ood\[0\]\] name = 'mnist' clashes with "
                           r"ood\[0\]"),
        ('[[benchmarks.b.extra_ood]]\nname = "fashion-mnist"\npath = "x.npz"',
         r"name = 'fashion-mnist' clashes with the ID set"),
        ('[[benchmarks.b.extra_ood]]\nname = "mine"\npath = "a.npz"\n'
         '[[benchmarks.b.extra_ood]]\nname = "mine"\npath = "b.npz"',
         r"\[benchmarks\.b\.extra_ood\[1\]\] name = 'mine' clashes with extra_ood\[0\]"),
        ('val_ood = ["mnist", "mnist"]', r"val_ood\[1\] = 'mnist' is listed twice"),
        ('[[benchmarks.b.ood]]\nname = "mnist"\npath = "x.npz"',
         r"unknown key 'path' in \[benchmarks\.b\.ood\[0\]\]; accepted keys: group, name"),
        ('[[benchmarks.b.extra_ood]]\nname = "mine"',
         r"\[benchmarks\.b\.extra_ood\[0\]\] is missing the key 'path'"),
    ],
    ids=["ood-twice", "extra-vs-ood", "extra-vs-id", "extra-twice", "val-ood-twice",
         "path-in-ood", "extra-without-path"],
)
def test_each_ood_set_once(tmp_path: Path, extra: str, pattern: str) -> None:
    # the [[...]] tables go last: after them, plain keys would belong to the array's table
    path = write_config(tmp_path, trainings=extra) if extra.startswith("[[") else write_config(
        tmp_path, extra=extra)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_extra_ood_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, trainings='[[benchmarks.b.extra_ood]]\nname = "mine"\n'
                                      'path = "sets/mine.npz"')
    (spec,) = load_benchmark("b", path).extra_ood
    assert (spec.name, spec.group, spec.path) == ("mine", "extra", str(tmp_path / "sets/mine.npz"))


@pytest.mark.parametrize("name", UNSAFE)
@pytest.mark.parametrize("kind", ["benchmark", "training", "ablate", "extra_ood"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str, kind: str) -> None:
    quoted = json.dumps(name)
    path = write_config(tmp_path, trainings={
        "benchmark": "",
        "training": f"[[benchmarks.b.trainings]]\nname = {quoted}\nobjective = \"ce\"",
        "ablate": f"[[benchmarks.b.ablate]]\nname = {quoted}\nobjective = \"ce\"",
        "extra_ood": f"[[benchmarks.b.extra_ood]]\nname = {quoted}\npath = \"x.npz\"",
    }[kind])
    if kind == "benchmark":
        path.write_text(path.read_text().replace("benchmarks.b", f"benchmarks.{quoted}"))
    what = {"benchmark": "benchmark name", "extra_ood": "OOD set name"}.get(kind, "training name")
    with pytest.raises(ConfigError, match=f"{what} {re.escape(repr(name))} is not a safe name") \
            as info:
        load_config(path)
    assert str(path) in str(info.value) and "letters, digits" in str(info.value)
    with pytest.raises(ConfigError, match="is not a safe name"):
        check_name(name, what)


def test_safe_names_pass() -> None:
    for name in ("scratch-ratio-l0.5-wu", "cifar10-gpu", "ft-ratio-l0.5-q0.25", "a", "x" * 64,
                 "A_b+c.d"):
        assert check_name(name, "name") == name and SAFE_NAME.fullmatch(name)
    for name in ("x" * 65, "-x", ".x", "a b", "a\\b", "é"):
        with pytest.raises(ConfigError):
            check_name(name, "name")


@pytest.mark.parametrize(
    ("device", "ok"),
    [("auto", True), ("cpu", True), ("cuda", True), ("cuda:0", True), ("cuda:12", True),
     ("gpu", False), ("cuda:-1", False), ("cuda:x", False), ("CUDA", False), ("cuda:01", False),
     ("cuda:", False), ("tpu", False)],
)
def test_device_strings(tmp_path: Path, device: str, ok: bool) -> None:
    path = write_config(tmp_path, extra=f'device = "{device}"')
    if ok:
        assert load_benchmark("b", path).device == device == check_device(device)
        assert DEVICE_PATTERN.fullmatch(device)
        return
    with pytest.raises(ConfigError, match=rf"\[benchmarks\.b\] device = '{device}' is not "
                                          r"accepted;.* accepted values: auto, cpu, cuda, cuda:N"):
        load_benchmark("b", path)
    with pytest.raises(ConfigError) as info:
        check_device(device)
    assert info.value.message.startswith(f"<device>: {device!r} is not accepted")
    if device == "gpu":
        with pytest.raises(ConfigError, match="did you mean 'cpu'"):
            load_benchmark("b", path)


@pytest.mark.parametrize(("size", "ok"), [(1024, True), (2048, False), (1025, False)])
def test_image_size_above_1024_is_refused(tmp_path: Path, size: int, ok: bool) -> None:
    path = _replace(tmp_path, "image_size = 28", f"image_size = {size}")
    if ok:
        assert load_benchmark("b", path).image_size == size
        return
    with pytest.raises(ConfigError, match=rf"\[benchmarks\.b\] image_size must lie in \[1, "
                                          rf"1024\], got {size}"):
        load_benchmark("b", path)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"train": "batch_size = 2.0"},
      r"\[benchmarks\.b\.train\] batch_size = 2\.0 must be of type int"),
     ({"train": "amp = 1"}, r"amp = 1 must be of type bool"),
     ({"train": "lr = inf"}, r"lr must be > 0 and finite, got inf"),
     ({"train": "momentum = 1.0"}, r"momentum must lie in \[0, 1\), got 1\.0"),
     ({"extra": "widths = [4, 0]"}, r"\[benchmarks\.b\] widths\[1\] must be >= 1, got 0"),
     ({"extra": "seeds = true"}, r"seeds = True must be of type int"),
     ({"extra": "id_dataset = 'mnist'"}, r"unknown key 'id_dataset' in \[benchmarks\.b\]"),
     ({"extra": "name = 'x'"}, r"unknown key 'name' in \[benchmarks\.b\]"),
     ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjective = "ce"\n'
                    "train = { epoch = 3 }"},
      r"unknown key 'epoch' in \[benchmarks\.b\.trainings\[1\]\.train\]; did you mean 'epochs'"),
     ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjective = "ce"\ninit = "y"\n'
                    '[[benchmarks.b.trainings]]\nname = "y"\nobjective = "ce"\ninit = "x"'},
      r"\[benchmarks\.b\.trainings\[1\]\] init chain x -> y -> x is circular"),
     ({"extra": 'loader_workers = "x"'},
      r"\[benchmarks\.b\] loader_workers = 'x' is not accepted: give \"auto\" or a number"),
     ({"trainings": '[[benchmarks.b.ood]]\nname = "x"\nimglist = "/a.txt"\nimages = "i"'},
      r"\[benchmarks\.b\.ood\[0\]\] imglist = '/a\.txt' must be a path relative to the data "
      r"root, without '\.\.'"),
     # a misspelt key is named before the key that it leaves missing
     ({"extra": "num_clases = 10"},
      r"unknown key 'num_clases' in \[benchmarks\.b\]; did you mean 'num_classes'\?"),
     ({"trainings": '[[benchmarks.b.trainings]]\nname = "x"\nobjectiv = "ce"'},
      r"unknown key 'objectiv' in \[benchmarks\.b\.trainings\[1\]\]; did you mean 'objective'")],
)
def test_types_bounds_and_keys(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    path = write_config(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [("2", r"channels = 2 is not accepted; accepted values: 1, 3"),
     ("3.0", r"channels = 3\.0 must be of type int"),
     ("true", r"channels = True must be of type int")],
)
def test_channels_are_1_or_3(tmp_path: Path, value: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"\[benchmarks\.b\] " + pattern):
        load_config(_replace(tmp_path, "channels = 1", f"channels = {value}"))


def test_the_packaged_file_is_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fmnist = load_benchmark("fmnist")
    top_level = Path(oodbench.__file__).parent.parent / "benchmarks.toml"  # the agreed layout
    assert Path(fmnist.source) == top_level and top_level.is_file()
    assert not (Path(oodbench.__file__).parent / "benchmarks.toml").exists()  # no stale copy


def test_a_local_file_overrides_and_a_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path).rename(tmp_path / "benchmarks.toml")
    monkeypatch.chdir(tmp_path)
    assert list(load_config()) == ["b"] and load_benchmark("b").source == "benchmarks.toml"
    with pytest.raises(ConfigError, match=r"benchmarks\.toml: no benchmark 'fmnist'"):
        load_benchmark("fmnist")
    assert "fmnist" in load_config(str(DEFAULT_CONFIG))


def test_config_hash_unchanged_from_the_old_validator() -> None:
    benches = load_config(str(DEFAULT_CONFIG))
    assert {n: dataclasses.replace(benches[n], scorers=OLD_SCORERS).config_hash()
            for n in OLD_HASHES} == OLD_HASHES


def test_the_messages_are_pydantics_own_errors() -> None:
    """The validators raise pydantic's custom errors: pydantic's own error list holds each
    message, which ConfigError writes after the table and the key."""
    with pytest.raises(ValidationError) as info:
        TypeAdapter(TrainSpec).validate_python({"lr": float("inf"), "schedule": "step"})
    errors = {e["loc"]: (e["type"], e["msg"]) for e in info.value.errors()}
    assert errors == {("lr",): ("out_of_range", "must be > 0 and finite"),
                      ("schedule",): ("not_accepted",
                                      "is not accepted; accepted values: onecycle, cosine")}


def test_objects_stay_plain_dataclasses_and_never_leak_pydantic_errors() -> None:
    spec = TrainSpec()
    assert dataclasses.asdict(spec)["epochs"] == 5
    assert dataclasses.replace(spec, lr=1).lr == 1.0 and isinstance(
        dataclasses.replace(spec, lr=1).lr, float)
    for make, pattern in ((lambda: TrainSpec(epochs=-1), r"TrainSpec: epochs must be >= 0"),
                          (lambda: TrainSpec(5, 0), r"TrainSpec: batch_size must be >= 1"),
                          (lambda: dataclasses.replace(spec, schedule="step"),
                           r"schedule = 'step' is not accepted"),
                          (lambda: OODSpec(name="../x"), r"not a safe name"),
                          (lambda: TrainSpec(epoch=3), r"TrainSpec: unknown key 'epoch'; did you "
                                                       r"mean 'epochs'\? accepted keys: amp, ")):
        with pytest.raises(ConfigError, match=pattern):
            make()
    fm = load_benchmark("fmnist", str(DEFAULT_CONFIG))
    assert fm.to_dict()["id_dataset"] == "fashion-mnist" and "id" not in fm.to_dict()
