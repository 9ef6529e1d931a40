"""The README's "Evaluate your own model" example runs, offline: on a tiny benchmark, with
random-initialised weights in place of the downloads."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import FAST_CONFIG

README = Path(__file__).resolve().parents[1] / "README.md"
OFFLINE = {'timm.create_model("resnet18", pretrained=True': 'timm.create_model("resnet18", '
                                                           'pretrained=False',
           'resnet18(weights="DEFAULT")': "resnet18(weights=None)"}


def _example() -> str:
    section = README.read_text().split("## Evaluate your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readme_example_runs(tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture) -> None:
    code = _example()
    for online, offline in OFFLINE.items():
        assert online in code
        code = code.replace(online, offline)
    tiny_bench.config.write_text(FAST_CONFIG)
    code = code.replace('oodbench.load_benchmark("fmnist")',
                        f'oodbench.load_benchmark("tiny", {str(tiny_bench.config)!r})')
    monkeypatch.setenv("OODBENCH_DATA", str(tiny_bench.root))
    monkeypatch.chdir(tiny_bench.root.parent)
    exec(compile(code, str(README), "exec"), {})
    printed = capsys.readouterr().out
    assert "msp" in printed and "mnist" in printed
    assert sorted(p.name for p in Path("my-detector").iterdir()) == ["detector.json",
                                                                     "scorer.safetensors"]
