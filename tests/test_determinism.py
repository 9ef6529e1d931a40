"""Reproducibility: bit-identical reruns, scores independent of the extraction batch size, a
manifest that records what a rerun needs, and cached features invalidated by changed data."""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import random_images, write_npz

from oodbench.check import load_benchmark
from oodbench.data import load_dataset
from oodbench.device import resolve_device
from oodbench.fileio import file_hash
from oodbench.layout import model_format
from oodbench.matrix import run_benchmark
from oodbench.scoring import list_scorers

NOISE = '[[benchmarks.tiny.ood]]\nname = "uniform-noise"\ngroup = "far"\n'


def _bench(tb: SimpleNamespace, name: str = "bench", epochs: int = 3, **replace: str):
    """The tiny benchmark with fewer epochs and without its 10k-image uniform-noise set."""
    text = tb.config.read_text().replace("epochs = 8", f"epochs = {epochs}").replace(NOISE, "")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tb.config.with_name(f"{name}.toml")
    path.write_text(text)
    return load_benchmark("tiny", path)


def _run(tb: SimpleNamespace, bench, tag: str, **kwargs) -> Path:
    run_benchmark(bench, out_dir=tb.out / tag, runs_dir=tb.runs / tag, data_root=tb.root,
                  device="cpu", quiet=True, **kwargs)
    return tb.out / tag / "tiny"


def _scores(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted((out / "scores").glob("*.npz")):
        with np.load(path) as z:
            arrays |= {f"{path.stem}:{k}": z[k] for k in z.files}
    return arrays


def test_same_seed_gives_bit_identical_scores(tiny_bench: SimpleNamespace) -> None:
    bench = _bench(tiny_bench)
    a, b = _run(tiny_bench, bench, "a"), _run(tiny_bench, bench, "b")
    sa, sb = _scores(a), _scores(b)
    assert sa.keys() == sb.keys() and len(sa) >= 2 * 6 * 2
    for key, value in sa.items():
        np.testing.assert_array_equal(value, sb[key], err_msg=key)
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


def test_extract_batch_does_not_change_scores(tiny_bench: SimpleNamespace) -> None:
    names = list_scorers()
    out = {}
    for batch in (128, 7):
        bench = _bench(tiny_bench, f"b{batch}", **{
            "extract_batch = 128": f"extract_batch = {batch}"})
        # one set of checkpoints, a fresh feature cache per batch size
        shutil.rmtree(tiny_bench.runs / "shared" / "tiny" / "cache", ignore_errors=True)
        run_benchmark(bench, out_dir=tiny_bench.out / str(batch), runs_dir=tiny_bench.runs /
                      "shared", data_root=tiny_bench.root, device="cpu", scorers=names,
                      quiet=True)
        manifest = json.loads((tiny_bench.out / str(batch) / "tiny" / "manifest.json").read_text())
        assert manifest["cache"]["hits"] == 0
        out[batch] = _scores(tiny_bench.out / str(batch) / "tiny")
    assert out[7].keys() == out[128].keys()
    scored = {k.split(":")[1].split("/")[0] for k in out[7]}
    assert len(scored) >= len(names) - 2, f"most scorers should work here; got {sorted(scored)}"
    for key, value in out[128].items():
        np.testing.assert_allclose(out[7][key], value, rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.kernels
def test_manifest_records_what_a_rerun_needs(tiny_bench: SimpleNamespace) -> None:
    bench = _bench(tiny_bench, epochs=1)
    out = _run(tiny_bench, bench, "m", scorers=["msp"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["config_hash"] == bench.config_hash()
    assert m["config"]["extract_batch"] == 128 and m["config"]["trainings"][1]["name"] == "bgnorm"
    assert m["config_file"] == bench.source and m["seeds"] == [0] and m["scorers"] == ["msp"]
    assert m["device"] == str(resolve_device("cpu"))
    # the tiny net (8/8/16) has no layer oneDNN #6035 breaks: channels-last, for both
    layout = {"format": "channels_last", "reason": model_format(torch.nn.Sequential()).reason}
    assert m["extraction"] == {"cpu": {"batch_size": 128, "setting": 128, "amp": False,
                                       "inference_mode": True, "memory_format": layout}}
    assert m["runtime"] == {"python": sys.version, "platform": platform.platform(),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "torch_threads": torch.get_num_threads()}
    versions = m["versions"]
    assert versions["python"] == platform.python_version() and versions["numpy"] == np.__version__
    assert {"torch", "scikit-learn", "scipy", "pandas", "torchvision"} <= versions.keys()
    assert {"git_commit", "dirty"} <= m["code"].keys()
    assert isinstance(m["command"], list)
    for name, ckpt in m["checkpoints"].items():
        assert ckpt["path"].startswith("checkpoints/")  # the copy kept in the folder
        assert ckpt["sha256"] == file_hash(out / ckpt["path"]), name
        assert ckpt["config_hash"] in ckpt["path"]
        assert ckpt["memory_format"] == layout, name
    for split in ("train", "val", "test"):
        assert len(m["id_dataset"][split]["sha256"]) == 64
        assert m["id_dataset"][split]["n"] > 0 and m["id_dataset"][split]["source"]
    mnist = load_dataset("mnist", "test", tiny_bench.root, image_shape=(28, 28, 1))
    assert m["ood_sets"]["mnist"]["sha256"] == mnist.fingerprint()
    assert m["ood_sets"]["mnist"]["group"] == "near"
    assert m["val_ood_sets"] == {}  # no scorer_grids: nothing was selected on val_ood
    assert "cifar10-gray" in m["skipped_ood_sets"]


def test_a_changed_data_file_invalidates_only_its_features(tiny_bench: SimpleNamespace) -> None:
    write_npz(tiny_bench.config.with_name("mine.npz"), images=random_images(20, 28, 28, 1, 3))
    bench = _bench(tiny_bench, epochs=2, **{'name = "cifar10-gray"\ngroup = "far"\n': (
        'name = "cifar10-gray"\ngroup = "far"\n\n[[benchmarks.tiny.extra_ood]]\n'
        'name = "mine"\npath = "mine.npz"\ngroup = "far"\n')})
    out = _run(tiny_bench, bench, "d", scorers=["msp", "knn"])
    before = pd.read_csv(out / "metrics.csv")
    sha = json.loads((out / "manifest.json").read_text())["ood_sets"]["mnist"]["sha256"]
    write_npz(tiny_bench.root / "mnist" / "test.npz", images=random_images(60, 28, 28, 1, 10),
              labels=np.arange(60) % 10)
    out = _run(tiny_bench, bench, "d", scorers=["msp", "knn"])
    after = pd.read_csv(out / "metrics.csv")
    manifest = json.loads((out / "manifest.json").read_text())
    # per checkpoint: ID train and test and "mine" are reused, the changed mnist is extracted
    assert manifest["cache"] == {"hits": 6, "misses": 2}
    assert manifest["ood_sets"]["mnist"]["sha256"] != sha
    cache = tiny_bench.runs / "d" / "tiny" / "cache"
    assert len(list(cache.glob("*/mnist-test-*.npz"))) == 4
    assert len(list(cache.glob("*/fashion-mnist-*.npz"))) == 4
    assert len(list(cache.glob("*/mine-*.npz"))) == 2
    ood = before.ood_set == "mnist"
    # 2 checkpoints x 2 scorers x (5 metrics + 4 bootstrap bounds)
    assert ood.sum() == 2 * 2 * 9 and (before[ood].value != after[ood].value).any()
    assert (before.ood_set == "mine").sum() == 2 * 2 * 9
    pd.testing.assert_frame_equal(before[~ood], after[~ood])


def test_manifest_names_the_code_version_read_at_the_start(
    tiny_bench: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = iter([{"git_commit": "at-start", "dirty": False}])
    later = {"git_commit": "edited-while-running", "dirty": True}
    monkeypatch.setattr("oodbench.manifest.code_version", lambda: next(calls, later))
    out = _run(tiny_bench, _bench(tiny_bench, epochs=1), "v", scorers=["msp"])
    assert json.loads((out / "manifest.json").read_text())["code"]["git_commit"] == "at-start"
