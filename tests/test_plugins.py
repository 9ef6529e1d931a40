"""Scorer plugins: a file on the command line, an installed entry point, and their errors."""

import importlib.metadata
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from oodbench import scoring
from oodbench.cli import main
from oodbench.scoring import (
    PluginError,
    create_scorer,
    list_scorers,
    load_builtin_scorers,
    load_scorer_file,
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


def write_plugin(path: Path, name: str = "margin", tail: str = "") -> Path:
    path.write_text(PLUGIN.format(name=name, tail=tail))
    return path


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    load_builtin_scorers()
    monkeypatch.setattr(scoring.SCORERS, "_items", dict(scoring.SCORERS._items))
    monkeypatch.setattr(scoring, "_entry_points_seen", set())


def test_scorer_file_registers_and_reloads(tmp_path: Path) -> None:
    path = write_plugin(tmp_path / "my_scorer.py")
    assert load_scorer_file(path) == ["margin"]
    assert load_scorer_file(path) == ["margin"]
    assert "margin" in list_scorers()
    assert create_scorer("margin", scale=2.0).get_params() == {"scale": 2.0}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise ImportError('needs faiss')\n", "raised on import: ImportError: needs faiss"),
        ("x = 1\n", "registers no scorer"),
        (PLUGIN.format(name="msp", tail=""), "already registered by scorers.msp"),
        ("from oodbench.scoring import Scorer, register_scorer\n\n"
         "@register_scorer('noscore')\nclass NoScore(Scorer):\n    pass\n",
         "does not implement score"),
    ],
)
def test_scorer_file_errors_name_the_file(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "bad_scorer.py"
    path.write_text(source)
    with pytest.raises(PluginError, match=message) as info:
        load_scorer_file(path)
    assert str(path) in str(info.value)


def test_missing_scorer_file(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        load_scorer_file(tmp_path / "nope.py")


def install_fake_dist(site: Path, monkeypatch: pytest.MonkeyPatch, value: str,
                      module_source: str, ep_name: str = "margin") -> None:
    """A package 'installed' the way pip leaves it: module + dist-info with entry_points.txt."""
    (site / "oodbench_margin_plugin.py").write_text(module_source)
    info = site / "oodbench_margin_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: oodbench-margin-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[oodbench.scorers]\n{ep_name} = {value}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "oodbench_margin_plugin", raising=False)
    importlib.invalidate_caches()


@pytest.mark.parametrize("value", ["oodbench_margin_plugin", "oodbench_margin_plugin:Margin"])
def test_entry_point_plugin_is_discovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    source = PLUGIN.format(name="margin", tail="")
    if ":" in value:  # a bare class, registered under the entry point's name
        source = source.replace('@register_scorer("margin")\n', "")
    install_fake_dist(tmp_path, monkeypatch, value, source)
    eps = importlib.metadata.entry_points(group=scoring.ENTRY_POINT_GROUP)
    assert value in [ep.value for ep in eps]
    load_builtin_scorers()
    assert "margin" in list_scorers()
    assert create_scorer("margin").get_params() == {"scale": 1.0}


def test_broken_entry_point_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_fake_dist(tmp_path, monkeypatch, "oodbench_margin_plugin", "import not_a_module\n")
    load_builtin_scorers()
    err = capsys.readouterr().err
    assert "skipped scorer plugin" in err and "oodbench-margin-plugin" in " ".join(err.split())
    assert "msp" in list_scorers() and "margin" not in list_scorers()


def _run(tb: SimpleNamespace, *extra: str) -> int:
    return main(["run", "--benchmark", "tiny", "--config", str(tb.config), "--data-root",
                 str(tb.root), "--runs-dir", str(tb.runs), "--out", str(tb.out), *extra])


def test_scorer_path_runs_in_the_matrix(
    tiny_bench: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    path = write_plugin(tmp_path / "margin_scorer.py")
    assert main(["list", "--scorer-path", str(path)]) == 0
    assert "│ margin " in capsys.readouterr().err
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


def test_bad_scorer_path_is_an_error(tiny_bench: SimpleNamespace, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tiny_bench, "--scorer-path", str(tmp_path / "missing.py")) == 1
    assert "does not exist" in " ".join(capsys.readouterr().err.split())


def test_readme_plugin_example_works(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("```python\n# margin_scorer.py")
    code = readme[start + len("```python\n") : readme.index("```", start + 10)]
    assert len(code.splitlines()) <= 40
    path = tmp_path / "margin_scorer.py"
    path.write_text(code)
    assert load_scorer_file(path) == ["margin"]
    from tests.scorer_data import make_features, make_head

    head = make_head(4, 8)
    scorer = create_scorer("margin", scale=2.0).fit(make_features(10, head, 0), head)
    data = make_features(6, head, 1)
    top2 = data.logits.topk(2, dim=1).values
    assert (scorer.score(data) == (2 * (top2[:, 0] - top2[:, 1])).double().numpy()).all()
