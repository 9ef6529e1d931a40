"""The OpenOOD v1.5 presets on fixture trees in OpenOOD's own layout: `oodbench list` names
what is missing, and `oodbench run --benchmark imagenet1k` runs end to end (a random ResNet-50
standing in for the pretrained weights) to the usual results and the OpenOOD-format CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from oodbench.check import load_benchmark
from oodbench.cli import main
from oodbench.inventory import benchmark_data
from oodbench.openood import MANIFEST_KEY
from tests.openood_fixture import build_openood_tree

PRESETS = {"cifar100": "cifar100", "imagenet200": "imagenet200", "imagenet1k": "imagenet"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_list_names_the_missing_files_and_finds_a_full_tree(
    preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark(preset)
    empty = benchmark_data(bench, tmp_path)
    weights = {"model_weights"} if bench.model_weights else set()
    assert set(empty["missing"]) == {f"id/{s}" for s in ("train", "val", "test")} | {
        f"ood/{o.name}" for o in bench.ood} | weights
    listed = json.dumps(empty)
    for spec in bench.ood:
        assert f"{tmp_path}/{spec.imglist}" in listed
    assert "scripts/download/download.py" in listed
    root = tmp_path / "openood"
    build_openood_tree(root, PRESETS[preset])
    assert benchmark_data(bench, root)["missing"] == sorted(weights)
    if weights:
        need = benchmark_data(bench, root)["datasets"]["model_weights"]
        assert need["expected"] == [f"{root}/weights/resnet50-0676ba61.pth"]
        assert "IMAGENET1K_V1" in need["howto"][0]
    capsys.readouterr()
    assert main(["list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"benchmark {preset}: missing data" in out
    assert "benchmark_imglist" in out


def test_imagenet1k_runs_end_to_end_on_a_fixture_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "openood"
    build_openood_tree(root, "imagenet", classes=2, per_class=2, ood_per_set=2)
    weights = root / "weights" / "resnet50-0676ba61.pth"
    assert main(["run", "--benchmark", "imagenet1k", "--data-root", str(root), "--device",
                 "cpu", "--runs-dir", str(tmp_path / "runs"), "--out",
                 str(tmp_path / "results")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert str(weights) in err and "IMAGENET1K_V1" in err
    weights.parent.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    assert main(["run", "--benchmark", "imagenet1k", "--data-root", str(root), "--device",
                 "cpu", "--runs-dir", str(tmp_path / "runs"), "--out",
                 str(tmp_path / "results"), "--scorers", "msp,knn,mahalanobis"]) == 0
    folder = tmp_path / "results" / "imagenet1k"
    df = pd.read_csv(folder / "metrics.csv")
    assert set(df.training) == {"ce", "bgnorm", "logitnorm"}
    assert set(df.ood_set.dropna()) >= {"ssb_hard", "ninco", "inaturalist", "textures",
                                        "openimage_o"}
    ood = df[df.metric == "auroc"]
    assert ood[ood.scorer != "knn"].value.notna().all(), ood[ood.value.isna()]
    # the preset's KNN searches the whole ID-train set, as OpenOOD: 4 images, fewer than k
    assert ood[ood.scorer == "knn"].note.str.contains("bank of 4 samples (alpha=1.0 of 4 "
                                                      "ID-train", regex=False).all()
    assert json.loads((tmp_path / "results" / "imagenet1k" / "manifest.json").read_text())[
        MANIFEST_KEY]["scorers"]["mahalanobis"]["postprocessor"] == "mds"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["id_dataset"]["val"]["source"].endswith("val_imagenet.txt")
    assert manifest["ood_sets"]["ssb_hard"]["shape"] is None
    assert main(["table", "--results", str(tmp_path / "results"), "--benchmark", "imagenet1k",
                 "--protocol", "openood-v1.5"]) == 0
    csvs = sorted((folder / "openood").rglob("*.csv"))
    assert csvs, "no OpenOOD-format CSV written"
