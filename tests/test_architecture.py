"""The layers' contracts: checks in the API, one manifest builder, extraction without side
effects, data on stdout, unwrapped logs, plugin objectives, and an installable wheel."""

import ast
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from oodbench import cli
from oodbench.check import load_benchmark
from oodbench.config import ConfigError
from oodbench.data import ImageArray, Preprocess
from oodbench.extract import forward_features
from oodbench.manifest import COMMON_KEYS
from oodbench.matrix import run_benchmark
from oodbench.models import create_model
from oodbench.plugins import scoped
from oodbench.progress import make_progress

REPO = Path(__file__).resolve().parent.parent

HALF_CE = '''
from torch.nn import functional as F

from oodbench.objectives import Objective, register_objective


@register_objective("halfce")
class HalfCE(Objective):
    """Half the cross-entropy: a plugin objective."""

    label = "Half-CE"

    def __call__(self, fmap, logits, labels, head, epoch):
        loss = 0.5 * F.cross_entropy(logits, labels)
        return loss, {"half": loss.item()}
'''


@pytest.fixture(autouse=True)
def isolated_registries():
    """Plugins registered in these tests do not outlive them."""
    with scoped():
        yield


def _files(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*") if p.is_file()]


def test_a_misspelt_scorer_fails_before_anything_is_written(
    tmp_path: Path, nothing_built: list[str]
) -> None:
    with pytest.raises(ConfigError, match="did you mean 'knn'"):
        run_benchmark(load_benchmark("fmnist"), scorers=["knnn"], out_dir=tmp_path / "out",
                      runs_dir=tmp_path / "runs")
    assert not _files(tmp_path) and nothing_built == []


def test_a_misspelt_scorer_param_fails_before_anything_is_written(
    tiny_bench: SimpleNamespace, nothing_built: list[str]
) -> None:
    text = tiny_bench.config.read_text().replace("knn = { k = 5 }", "knn = { kk = 5 }")
    tiny_bench.config.write_text(text)
    with pytest.raises(ConfigError, match="kk"):
        run_benchmark(load_benchmark("tiny", tiny_bench.config), out_dir=tiny_bench.out,
                      runs_dir=tiny_bench.runs, data_root=tiny_bench.root)
    assert not _files(tiny_bench.out, tiny_bench.runs) and nothing_built == []


def test_an_unknown_option_is_refused(tmp_path: Path) -> None:
    """Options are explicit keyword arguments: a misspelt one is refused, never ignored."""
    with pytest.raises(TypeError, match="run_dir"):
        run_benchmark(load_benchmark("fmnist"), out_dir=tmp_path, run_dir=tmp_path)


def test_extraction_leaves_the_model_as_it_was() -> None:
    model = create_model("resnet8", 10, 1, widths=(4, 4, 8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    arr = ImageArray(images, np.zeros(6, np.int64), "x", "test", "generated")
    feats = forward_features(model, arr, Preprocess(28, 1, (0.5,), (0.25,)),
                             torch.device("cpu"), batch_size=4)
    assert len(feats) == 6
    assert model.training  # not switched to eval mode
    conv = model.stages[1].conv1.weight  # 4 -> 4 channels: the two layouts differ
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    state = model.state_dict()
    assert all(torch.equal(before[k], state[k]) for k in before)


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_goes_to_stdout_and_as_json(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _cli(capsys, "list")
    assert code == 0 and "knn" in out and "fmnist" in out
    code, out, _ = _cli(capsys, "list", "--json")
    info = json.loads(out)
    assert code == 0 and set(info) >= {"benchmarks", "datasets", "models", "objectives",
                                       "scorers"}
    assert {d["name"]: d["available"] for d in info["datasets"]}["gaussian-noise"] is True
    assert len(info["scorers"]) >= 18 and "resnet8" in {m["name"] for m in info["models"]}
    fmnist = next(b for b in info["benchmarks"] if b["name"] == "fmnist")
    assert len(fmnist["scorers"]) == 19  # the 18 scorers of the results so far, and ash-map


def test_progress_off_a_terminal_logs_one_unwrapped_line_per_tenth() -> None:
    buf = io.StringIO()
    prog = make_progress(out=Console(file=buf, width=80, force_terminal=False))
    stats = "loss " + " ".join(f"{i:.3f}" for i in range(40))  # far wider than 80 columns
    with prog:
        task = prog.add_task("train x", total=100, stats=stats)
        for _ in range(100):
            prog.advance(task)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("train x:")]
    assert len(lines) == 10
    assert all(line.endswith(stats) for line in lines)


def test_a_plugin_objective_is_listed_and_trains(
    tiny_bench: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    plugin = tiny_bench.config.parent / "halfce.py"
    plugin.write_text(HALF_CE)
    code, out, _ = _cli(capsys, "list", "--json", "--plugin", str(plugin))
    objectives = {o["name"]: o for o in json.loads(out)["objectives"]}
    assert code == 0 and objectives["halfce"]["label"] == "Half-CE"
    text = tiny_bench.config.read_text().replace(
        'name = "bgnorm"\nobjective = "bgnorm"\nparams = { lam = 0.2, form = "abs", '
        'warmup_start = 0.0, warmup_epochs = 2.0 }', 'name = "halfce"\nobjective = "halfce"')
    tiny_bench.config.write_text(text.replace("epochs = 8", "epochs = 1"))
    code, _, err = _cli(capsys, "run", "--benchmark", "tiny", "--config",
                        str(tiny_bench.config), "--data-root", str(tiny_bench.root),
                        "--runs-dir", str(tiny_bench.runs), "--out", str(tiny_bench.out),
                        "--scorers", "msp", "--plugin", str(plugin))
    assert code == 0, err
    df = pd.read_csv(tiny_bench.out / "tiny" / "metrics.csv")
    assert set(df.training) == {"ce", "halfce"}
    assert "Half-CE" in (tiny_bench.out / "tiny" / "compat.md").read_text()


def test_run_eval_and_ablate_manifests_share_their_common_keys(
    tiny_bench: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    tiny_bench.config.write_text(tiny_bench.config.read_text().replace("epochs = 8",
                                                                       "epochs = 1"))
    common = ["--benchmark", "tiny", "--config", str(tiny_bench.config), "--data-root",
              str(tiny_bench.root), "--runs-dir", str(tiny_bench.runs)]
    assert _cli(capsys, "run", *common, "--scorers", "msp", "--out",
                str(tiny_bench.out))[0] == 0
    run = json.loads((tiny_bench.out / "tiny" / "manifest.json").read_text())
    ckpt = str(tiny_bench.out / "tiny" / run["checkpoints"]["ce-s0"]["path"])
    assert _cli(capsys, "eval", *common, "--checkpoint", ckpt, "--scorers", "msp", "--out",
                str(tiny_bench.out))[0] == 0
    assert _cli(capsys, "ablate", *common, "--out", str(tiny_bench.out / "ab"))[0] == 0
    manifests = [run, json.loads((tiny_bench.out / f"eval-{Path(ckpt).stem}" / "manifest.json")
                            .read_text()),
                 json.loads((tiny_bench.out / "ab" / "tiny" / "ablation_manifest.json")
                            .read_text())]
    for m in manifests:
        assert list(k for k in m if k in COMMON_KEYS) == sorted(COMMON_KEYS)  # json sorts
    same = ("benchmark", "config_file", "config_hash", "config", "device", "versions", "code")
    for key in same:
        assert manifests[0][key] == manifests[1][key] == manifests[2][key], key
    assert manifests[0]["ood_sets"] == manifests[1]["ood_sets"]  # same test sets, with group
    assert all("group" in info for m in manifests for info in m["ood_sets"].values())


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["run", "--seeds", "0"]])
def test_help_and_argument_errors_do_not_import_torch(argv: list[str]) -> None:
    code = (f"import sys\nfrom oodbench import cli\ntry:\n    cli.main({argv!r})\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out[-1] == "False" and out[-2] == ("0" if "--help" in argv else "2")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, function-level ones included; relative
    imports resolved against the package of ``path``."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            found.append((module, [a.name for a in node.names]))
    return found


def test_no_module_imports_its_own_half_built_package() -> None:
    """A module inside a package imports its siblings, never a name of the package itself:
    the package's ``__init__`` imports its modules, so it is half-built while they load."""
    wrong = []
    for path in sorted((REPO / "oodbench").rglob("*.py")):
        if path.name == "__init__.py" or path.parent == REPO / "oodbench":
            continue
        package = ".".join(path.parent.relative_to(REPO).parts)
        for module, names in _imports(path):
            submodules = [n for n in names if (path.parent / f"{n}.py").is_file()
                          or (path.parent / n / "__init__.py").is_file()]
            if module == package and (not names or len(submodules) < len(names)):
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert wrong == []


@pytest.mark.parametrize("module", ["oodbench.scoring", "oodbench.data", "oodbench.adapters"])
def test_a_registry_loads_its_plugins_without_the_plugins_module(module: str) -> None:
    """The registries sit below oodbench.plugins: listing one (which loads its built-in
    factories and installed entry points) imports no plugin-file machinery."""
    registry = {"oodbench.scoring": "SCORERS", "oodbench.data": "DATASETS",
                "oodbench.adapters": "ADAPTERS"}[module]
    code = (f"import sys\nimport {module} as m\nnames = m.{registry}.names()\n"
            "print(len(names) > 0, 'oodbench.plugins' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    assert out == ["True", "False"]
