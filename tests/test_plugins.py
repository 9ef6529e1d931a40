"""Plugins of every kind: files named at run time, installed entry points, their errors, and
the scoped registries that keep tests from leaking registrations."""

import importlib
import importlib.metadata
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oodbench import plugins
from oodbench.cli import main
from oodbench.errors import PluginError, PluginWarning
from oodbench.models import MODELS, create_model
from oodbench.objectives import OBJECTIVES, CrossEntropy, create_objective, register_objective
from oodbench.plugins import load_entry_points, load_plugin_file
from oodbench.scoring import (
    SCORERS,
    Features,
    Scorer,
    create_scorer,
    list_scorers,
    register_scorer,
)

PLUGIN = '''
from oodbench.scoring import Features, Scorer, register_scorer, to_scores


@register_scorer("{name}")
class Margin(Scorer):
    """Top-1 minus top-2 logit."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def score(self, data: Features):
        top = data.logits.topk(2, dim=1).values
        return to_scores(self.scale * (top[:, 0] - top[:, 1]){tail})
'''

OBJECTIVE = '''
import torch.nn.functional as F

from oodbench.objectives import Objective, register_objective


@register_objective("{name}")
class HalfCE(Objective):
    """Half the cross-entropy."""

    def __call__(self, fmap, logits, labels, head, epoch):
        ce = F.cross_entropy(logits, labels)
        return 0.5 * ce, {{"ce": ce.item()}}
'''

MODEL = '''
from oodbench.models import ResNet, register_model


@register_model("{name}")
def tiny_resnet(num_classes: int, in_channels: int, width: int = 4) -> ResNet:
    """One stage of one block."""
    return ResNet((width,), (1,), num_classes, in_channels)
'''

DATASET = '''
import numpy as np

from oodbench.data import ImageArray, register_dataset


@register_dataset("{name}")
def dots(split, data_root):
    """Two black 4x4 images."""
    images, labels = np.zeros((2, 4, 4, 1), np.uint8), np.full(2, -1, np.int64)
    return ImageArray(images, labels, "{name}", split, "dots")
'''

# per kind: plugin source, the factory it defines, the name it registers; datasets once
# oodbench.data.catalogue has its DATASETS registry
SOURCES = {"scorers": (PLUGIN.replace("{tail}", ""), "Margin", "margin"),
           "objectives": (OBJECTIVE, "HalfCE", "halfce"),
           "models": (MODEL, "tiny_resnet", "tinynet"),
           "datasets": (DATASET, "dots", "dots")}
if "datasets" not in plugins.registries():
    del SOURCES["datasets"]


def source(kind: str, decorated: bool = True) -> str:
    """The plugin source of ``kind``, without its ``@register_...`` line if not ``decorated``."""
    text, _, name = SOURCES[kind]
    text = text.replace("{name}", name).replace("{{", "{").replace("}}", "}")
    return text if decorated else re.sub(r"^@register_\w+\(.*\)\n", "", text, flags=re.M)


def assert_works(kind: str) -> None:
    """The plugin of ``kind`` is registered and does what its source says."""
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    if kind == "scorers":
        assert create_scorer("margin", scale=2.0).get_params() == {"scale": 2.0}
    elif kind == "objectives":
        loss, stats = create_objective("halfce")(torch.zeros(6, 2, 1, 1), logits, labels,
                                                 torch.nn.Linear(2, 3), 0.0)
        ce = F.cross_entropy(logits, labels)
        assert torch.allclose(loss, 0.5 * ce) and stats == {"ce": pytest.approx(ce.item())}
    elif kind == "models":
        assert create_model("tinynet", 3, 1, width=2)(torch.zeros(1, 1, 8, 8)).shape == (1, 3)
    else:
        from oodbench.data import load_dataset

        assert load_dataset("dots", "test").images.shape == (2, 4, 4, 1)


def write_plugin(path: Path, name: str = "margin", tail: str = "") -> Path:
    path.write_text(PLUGIN.format(name=name, tail=tail))
    return path


@pytest.fixture(autouse=True)
def isolated_registries() -> Iterator[None]:
    with plugins.scoped():
        yield


# --- plugin files ---------------------------------------------------------------------------


def test_scorer_file_registers_and_reloads(tmp_path: Path) -> None:
    path = write_plugin(tmp_path / "my_scorer.py")
    assert load_plugin_file(path) == {"scorers": ["margin"]}
    margin = SCORERS.get("margin")
    assert load_plugin_file(path) == {"scorers": ["margin"]}
    assert SCORERS.get("margin") is margin  # not imported twice
    assert load_plugin_file(path) == {"scorers": ["margin"]}
    assert "margin" in list_scorers()
    assert_works("scorers")


def test_objective_file(tmp_path: Path) -> None:
    path = tmp_path / "halfce.py"
    path.write_text(source("objectives"))
    assert load_plugin_file(path) == {"objectives": ["halfce"]}
    assert_works("objectives")


def test_one_file_registers_several_kinds(tmp_path: Path) -> None:
    path = tmp_path / "several.py"
    path.write_text("".join(source(kind) for kind in SOURCES))
    assert load_plugin_file(path) == {kind: [name] for kind, (_, _, name) in SOURCES.items()}
    for kind in SOURCES:
        assert_works(kind)


OBJECTIVE_HEAD = "from oodbench.objectives import Objective, register_objective\n\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("raise ImportError('needs faiss')\n", "raised on import: ImportError: needs faiss"),
        ("def broken(:\n", "raised on import: SyntaxError"),
        ("x = 1\n", r"registers nothing; decorate a Scorer subclass with "
                    r"@register_scorer\(\"name\"\) from oodbench\.scoring, an Objective subclass "
                    r"with @register_objective\(\"name\"\) from oodbench\.objectives"),
        (PLUGIN.format(name="msp", tail=""),
         r"scorer name 'msp' is already registered by oodbench\.scorers\.msp\.MSP .*Margin"),
        (OBJECTIVE.format(name="ce"),
         r"objective name 'ce' is already registered by oodbench\.objectives\.CrossEntropy"),
        ("from oodbench.scoring import Scorer, register_scorer\n\n"
         "@register_scorer('noscore')\nclass NoScore(Scorer):\n    pass\n",
         "scorer 'noscore' .* does not implement score"),
        (PLUGIN.format(name="needy", tail="").replace("scale: float = 1.0", "scale: float"),
         "scorer 'needy' .* constructor parameter 'scale' must be a named keyword argument "
         "with a default"),
        (OBJECTIVE_HEAD + "@register_objective('needy')\nclass Needy(Objective):\n"
         "    def __init__(self, lam):\n        self.lam = lam\n",
         "objective 'needy' .* constructor parameter 'lam' must be a named keyword argument"),
        (OBJECTIVE_HEAD + "@register_objective('plain')\nclass Plain:\n    pass\n",
         "objective 'plain' .* must subclass Objective"),
        ("from oodbench.models import register_model\n\n@register_model('needy')\n"
         "def needy(num_classes, in_channels, depth):\n    pass\n",
         "model 'needy' .*: parameter 'depth' must be a named keyword argument"),
        # the scorer registers, then the objective fails: neither stays
        (PLUGIN.format(name="margin", tail="") + OBJECTIVE.format(name="ce"),
         "objective name 'ce' is already registered"),
        *([("from oodbench.data import register_dataset\n\n@register_dataset('needy')\n"
            "def needy(split, data_root, size):\n    pass\n",
            "dataset 'needy' .*: parameter 'size' must be a named keyword argument")]
          if "datasets" in SOURCES else []),
    ],
)
def test_file_errors_name_the_file_and_register_nothing(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad_plugin.py"
    path.write_text(text)
    before = {kind: reg.snapshot() for kind, reg in plugins.registries().items()}
    with pytest.raises(PluginError, match=message) as info:
        load_plugin_file(path)
    assert str(path) in str(info.value) and "--" not in str(info.value)
    assert "leave the file out of --plugin" in info.value.render({"plugins": "--plugin"})
    assert {kind: reg.snapshot() for kind, reg in plugins.registries().items()} == before
    path.write_text(source("scorers"))  # fixed: the same file now loads
    assert load_plugin_file(path) == {"scorers": ["margin"]}


@pytest.mark.parametrize(("name", "message"), [("nope.py", "does not exist"),
                                               ("folder", "is not a file"),
                                               ("plugin.txt", "is not an importable Python")])
def test_unusable_path_names_the_file(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "plugin.txt").write_text(source("scorers"))
    with pytest.raises(PluginError, match=message) as info:
        load_plugin_file(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


# --- entry points ---------------------------------------------------------------------------


def install_fake_dist(site: Path, monkeypatch: pytest.MonkeyPatch, module_source: str,
                      entry_points: str, module: str = "oodbench_test_plugin") -> None:
    """A package 'installed' the way pip leaves it: module + dist-info with entry_points.txt;
    the distribution is named after the module, with dashes."""
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(module_source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    importlib.invalidate_caches()


@pytest.mark.parametrize("form", ["module", "class"])
@pytest.mark.parametrize("kind", list(SOURCES))
def test_entry_point_plugin_is_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, form: str
) -> None:
    _, factory, name = SOURCES[kind]
    value = "oodbench_test_plugin" + (f":{factory}" if form == "class" else "")
    # a bare class or function is registered under the entry point's name
    install_fake_dist(tmp_path, monkeypatch, source(kind, decorated=form == "module"),
                      f"[oodbench.{kind}]\n{name} = {value}\n")
    assert plugins.registries()[kind].group == f"oodbench.{kind}"
    assert name not in plugins.registries()[kind].snapshot()
    load_entry_points()
    assert_works(kind)


@pytest.mark.parametrize(
    "kind",
    ["scorers", "objectives", "models", *(["datasets"] if "datasets" in SOURCES else [])],
)
def test_registries_load_entry_points_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    install_fake_dist(tmp_path, monkeypatch, source(kind),
                      f"[oodbench.{kind}]\n{SOURCES[kind][2]} = oodbench_test_plugin\n")
    assert SOURCES[kind][2] in plugins.registries()[kind].names()


@pytest.mark.parametrize("kind", list(SOURCES))
def test_broken_entry_point_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    install_fake_dist(tmp_path / "broken", monkeypatch, "import not_a_module\n",
                      f"[oodbench.{kind}]\nbroken = oodbench_test_plugin\n")
    install_fake_dist(tmp_path / "good", monkeypatch, source("scorers"),
                      "[oodbench.scorers]\nmargin = oodbench_good_plugin\n",
                      module="oodbench_good_plugin")
    with pytest.warns(PluginWarning) as caught:
        load_entry_points()
    text = " ".join(str(w.message) for w in caught)
    for needle in ("entry point 'broken'", "oodbench-test-plugin", f"group oodbench.{kind}",
                   "ModuleNotFoundError"):
        assert needle in text
    assert "margin" in list_scorers() and "msp" in list_scorers()  # the others still load
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_entry_points()  # reported once


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("scorers", "oodbench_test_plugin:helper", "scorer 'bad' .* must subclass Scorer"),
    ("objectives", "oodbench_test_plugin:helper",
     "objective 'bad' .* must subclass Objective"),
    ("models", "oodbench_test_plugin:CONSTANT", "model 'bad' must be a class or a function, got 3"),
])
def test_entry_point_of_the_wrong_type_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, value: str, message: str
) -> None:
    install_fake_dist(tmp_path, monkeypatch, "CONSTANT = 3\n\ndef helper():\n    pass\n",
                      f"[oodbench.{kind}]\nbad = {value}\n")
    with pytest.warns(PluginWarning, match=message):
        load_entry_points()
    assert "bad" not in plugins.registries()[kind].snapshot()


# --- scoped registries ----------------------------------------------------------------------


def test_scoped_undoes_registrations_and_plugin_loads(tmp_path: Path) -> None:
    path = tmp_path / "several.py"
    path.write_text(source("scorers") + source("objectives"))
    with plugins.scoped():
        @register_scorer("inside")
        class Inside(Scorer):
            def score(self, data: Features) -> np.ndarray:
                return np.zeros(len(data))

        @register_objective("inside")
        class Plain(CrossEntropy):
            pass

        assert load_plugin_file(path) == {"scorers": ["margin"], "objectives": ["halfce"]}
        assert {"inside", "margin"} <= set(SCORERS.names())
    assert not {"inside", "margin"} & set(SCORERS.names())
    assert not {"inside", "halfce"} & set(OBJECTIVES.names())
    assert load_plugin_file(path) == {"scorers": ["margin"], "objectives": ["halfce"]}
    assert_works("objectives")


def test_registry_scoped_restores_one_registry(tmp_path: Path) -> None:
    path = tmp_path / "halfce.py"
    path.write_text(source("objectives"))
    models = MODELS.snapshot()
    with OBJECTIVES.scoped() as registry:
        assert registry is OBJECTIVES
        load_plugin_file(path)
        assert "halfce" in OBJECTIVES.names()
    assert "halfce" not in OBJECTIVES.names() and MODELS.snapshot() == models
    assert load_plugin_file(path) == {"objectives": ["halfce"]}  # loads again, not stale
    assert_works("objectives")


# --- command line ---------------------------------------------------------------------------


def _run(tb: SimpleNamespace, *extra: str) -> int:
    return main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                 str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), *extra])


def test_scorer_path_runs_in_the_matrix(
    tiny_bench: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    path = write_plugin(tmp_path / "margin_scorer.py")
    assert main(["list", "--scorer-path", str(path)]) == 0
    assert "│ margin " in capsys.readouterr().out
    assert _run(tiny_bench, "--scorer-path", str(path), "--scorers", "msp,margin") == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    auroc = df[(df.scorer == "margin") & (df.metric == "auroc")]
    assert len(auroc) > 0 and auroc.value.notna().all() and auroc.note.isna().all()


def test_wrong_length_names_the_file(tiny_bench: SimpleNamespace, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    path = write_plugin(tmp_path / "short_scorer.py", name="short", tail="[:-1]")
    assert _run(tiny_bench, "--scorer-path", str(path), "--scorers", "short") == 0
    note = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv").query("scorer == 'short'").note
    assert note.str.contains(str(path), regex=False).all()
    assert note.str.contains("scores for").all()


def test_bad_plugin_path_is_an_error(tiny_bench: SimpleNamespace, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tiny_bench, "--plugin", str(tmp_path / "missing.py")) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "does not exist" in err and "leave the file out of --plugin" in err


def test_readme_plugin_example_works(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("```python\n# margin_scorer.py")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    assert len(code.splitlines()) <= 40
    path = tmp_path / "margin_scorer.py"
    path.write_text(code)
    assert load_plugin_file(path) == {"scorers": ["margin"]}
    from tests.scorer_data import make_features, make_head

    head = make_head(4, 8)
    scorer = create_scorer("margin", scale=2.0).fit(make_features(10, head, 0), head)
    data = make_features(6, head, 1)
    top2 = data.logits.topk(2, dim=1).values
    assert (scorer.score(data) == (2 * (top2[:, 0] - top2[:, 1])).double().numpy()).all()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_an_unsafe_registry_name_is_refused(name: str) -> None:
    from oodbench.registry import RegistrationError, Registry

    with pytest.raises(RegistrationError, match="not a safe name"):
        Registry("scorer").register(name)(type("X", (), {}))


STREAMED_DATASET = '''
from pathlib import Path

from oodbench.data import DatasetUnavailable, load_path, register_dataset


def status(split, data_root):
    folder = (data_root or Path("/nonexistent")) / "scribbles"
    return folder.is_dir(), str(folder) if folder.is_dir() else f"expected {folder}/"


@register_dataset("scribbles", status=status)
def scribbles(split, data_root, stream=None):
    """An image folder below the data root, streamed from disk."""
    if data_root is None or not (data_root / "scribbles").is_dir():
        raise DatasetUnavailable("scribbles needs <data root>/scribbles/")
    return load_path(data_root / "scribbles", "scribbles", stream=True)
'''


def test_plugin_dataset_is_listed_and_runs_as_an_ood_set(
    tiny_bench: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import pandas as pd
    from PIL import Image

    path = tmp_path / "scribbles_plugin.py"
    path.write_text(STREAMED_DATASET)
    rng = np.random.default_rng(0)
    (tiny_bench.root / "scribbles").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (30 + i, 28), dtype=np.uint8)).save(
            tiny_bench.root / "scribbles" / f"{i}.png")
    capsys.readouterr()
    assert main(["list", "--plugin", str(path), "--json", "--data-root", str(tmp_path)]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)["datasets"]}
    assert listed["scribbles"]["available"] is False
    assert listed["scribbles"]["splits"]["test"]["reasons"] == [f"expected {tmp_path}/scribbles/"]
    config = tiny_bench.config.read_text() + '\n[[benchmarks.tiny.ood]]\nname = "scribbles"\n' \
        'group = "far"\n'
    tiny_bench.config.write_text(config)
    assert _run(tiny_bench, "--plugin", str(path), "--scorers", "msp,knn") == 0
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    rows = df[(df.ood_set == "scribbles") & (df.metric == "auroc")]
    assert len(rows) == 4 and rows.value.notna().all()
    manifest = json.loads((tiny_bench.out / "tiny" / "manifest.json").read_text())
    info = manifest["ood_sets"]["scribbles"]
    assert info["n"] == 12 and info["shape"] is None and len(info["sha256"]) == 64
