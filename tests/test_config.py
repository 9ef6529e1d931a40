"""benchmarks.toml validation: every error names the key, its table, accepted values and file."""

from pathlib import Path

import pytest

from oodbench.config import ConfigError, load_benchmark, load_config
from oodbench.scoring import list_scorers, load_builtin_scorers

BASE = """
[benchmarks.b]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
scorers = ["msp"]
{extra}

[benchmarks.b.train]
epochs = 2
{train}

[[benchmarks.b.trainings]]
name = "ce"
objective = "ce"
{trainings}
"""


def _write(tmp_path: Path, extra: str = "", train: str = "", trainings: str = "") -> Path:
    path = tmp_path / "b.toml"
    path.write_text(BASE.format(extra=extra, train=train, trainings=trainings))
    return path


def test_the_shipped_config_is_valid() -> None:
    benches = load_config()
    assert {"fmnist", "cifar10", "cifar10-gpu"} <= set(benches)
    fm = benches["fmnist"]
    assert [t.name for t in fm.trainings] == ["ce", "bgnorm", "logitnorm"]
    load_builtin_scorers()
    for bench in benches.values():
        assert set(bench.scorers) | set(bench.ablate_scorers) <= set(list_scorers())
    assert len(fm.scorers) >= 18
    gpu = benches["cifar10-gpu"]
    assert gpu.model == "resnet18_32x32" and gpu.id_dataset == "cifar10"
    assert gpu.trainings[0].train.augment == "crop-flip"


def test_a_minimal_benchmark_parses(tmp_path: Path) -> None:
    b = load_benchmark("b", _write(tmp_path))
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
    ],
)
def test_errors_name_key_table_values_and_file(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    path = _write(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_model_choice_lists_models(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_text(path.read_text().replace('"resnet8"', '"vgg"'))
    with pytest.raises(ConfigError, match="accepted values: resnet18_32x32, resnet8"):
        load_config(path)


def test_missing_key_and_bad_toml(tmp_path: Path) -> None:
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("num_classes = 10\n", ""))
    with pytest.raises(ConfigError, match="missing the key 'num_classes'"):
        load_config(path)
    path.write_text("[benchmarks.b\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_extends_merges_tables_and_detects_cycles(tmp_path: Path) -> None:
    path = _write(tmp_path, extra='seeds = 2')
    path.write_text(path.read_text() + '\n[benchmarks.c]\nextends = "b"\nseeds = 3\n'
                    '[benchmarks.c.train]\nlr = 0.5\n')
    c = load_benchmark("c", path)
    assert c.seeds == 3 and c.trainings[0].train.lr == 0.5 and c.trainings[0].train.epochs == 2
    path.write_text('[benchmarks.x]\nextends = "y"\n[benchmarks.y]\nextends = "x"\n')
    with pytest.raises(ConfigError, match="circular"):
        load_config(path)


def test_unknown_benchmark_lists_available(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="available: b"):
        load_benchmark("zzz", _write(tmp_path))


@pytest.mark.parametrize(("value", "ok"), [('"auto"', True), ("64", True), ('"big"', False),
                                           ("0", False), ("true", False)])
def test_extract_batch_is_auto_or_a_positive_int(tmp_path: Path, value: str, ok: bool) -> None:
    path = _write(tmp_path, extra=f"extract_batch = {value}\nextract_amp = false")
    if ok:
        bench = load_benchmark("b", path)
        assert str(bench.extract_batch) == value.strip('"') and bench.extract_amp is False
    else:
        with pytest.raises(ConfigError, match="extract_batch"):
            load_benchmark("b", path)
