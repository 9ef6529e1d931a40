"""``oodbench.evaluate``: any model, side-effect free, the same numbers as the checkpoint path."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from oodbench.check import load_benchmark
from oodbench.checkpoint import save_checkpoint
from oodbench.config import ConfigError
from oodbench.models import create_model
from oodbench.pipeline import evaluate, evaluate_checkpoint
from oodbench.report import read_metrics
from tests.conftest import FAST_CONFIG


@pytest.fixture
def tb(tiny_bench: SimpleNamespace) -> SimpleNamespace:
    tiny_bench.config.write_text(FAST_CONFIG)
    tiny_bench.bench = load_benchmark("tiny", tiny_bench.config)
    return tiny_bench


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10, 1, widths=(4, 4, 8))


def test_evaluate_writes_nothing_and_matches_the_checkpoint_path(tb: SimpleNamespace) -> None:
    net = _net()
    before = _files(tb.root.parent)
    df = evaluate(net, tb.bench, data_root=tb.root, name="ce")
    assert _files(tb.root.parent) == before  # nothing written
    ckpt = save_checkpoint(tb.root.parent / "m.pt", net, {"arch": "resnet8", "widths": [4, 4, 8],
                                                          "num_classes": 10, "in_channels": 1,
                                                          "training": "ce"})
    want = evaluate_checkpoint(ckpt, tb.bench, out_dir=tb.out / "eval", data_root=tb.root,
                               runs_dir=tb.runs, quiet=True)
    key = ["scorer", "ood_set", "metric"]
    got = df.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert set(df.scorer) == {"", "msp", "knn"} and set(df.ood_set) == {"", "mnist"}


def test_evaluate_with_out_writes_the_run_files(tb: SimpleNamespace) -> None:
    df = evaluate(_net(), tb.bench, data_root=tb.root, out_dir=tb.out, scorers="msp")
    out = tb.out / "eval-model"  # out/eval-<name>, never out itself
    names = {p.relative_to(out).as_posix() for p in _files(out)}
    assert {"metrics.csv", "manifest.json", "compat.md", "scores/model-s0.npz"} <= names
    np.testing.assert_array_equal(read_metrics(out)["value"].to_numpy(), df["value"].to_numpy())


class _PILSet(Dataset):
    """Grey PIL images, as a torchvision dataset without transforms yields them."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i], mode="L"), 0


def test_ood_sets_as_datasets_and_loaders(tb: SimpleNamespace) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 28, 28), dtype=np.uint8)
    tensors = torch.from_numpy(images)[:, None].float() / 255  # ToTensor's output
    ood = {"pil": _PILSet(images),
           "loader": DataLoader(TensorDataset(tensors, torch.zeros(24)), batch_size=10),
           "pair": (images[..., None], np.zeros(24))}
    df = evaluate(_net(), tb.bench, data_root=tb.root, ood=ood, scorers="msp")
    auroc = df[df.metric == "auroc"].set_index("ood_set")["value"]
    assert set(auroc.index) == set(ood)
    assert auroc["pil"] == auroc["loader"] == auroc["pair"]  # the same images, decoded alike


def test_normalised_images_and_a_small_head_are_refused(tb: SimpleNamespace) -> None:
    normalised = TensorDataset(torch.randn(4, 1, 28, 28), torch.zeros(4))
    with pytest.raises(Exception, match="look normalised"):
        evaluate(_net(), tb.bench, data_root=tb.root, ood={"x": normalised})
    with pytest.raises(ConfigError, match="has 5 outputs"):
        evaluate(create_model("resnet8", 5, 1, widths=(4, 4, 8)), tb.bench, data_root=tb.root)


def test_cli_eval_of_a_torchvision_model_with_safetensors_weights(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    import torchvision
    from safetensors.torch import save_file

    from oodbench.cli import main

    torch.manual_seed(0)
    weights = tb.root.parent / "r18.safetensors"
    save_file(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    args = ["eval", "--model", "torchvision:resnet18", "--num-classes", "10", "--benchmark",
            "tiny", "--config", str(tb.config), "--data-root", str(tb.root), "--runs-dir",
            str(tb.runs), "--scorers", "msp,energy,knn", "--out", str(tb.out / "r18")]
    assert main([*args, "--weights", str(weights)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "converted to the model's input 28x28x3: grey copied to RGB" in err
    df = read_metrics(tb.out / "r18" / "eval-resnet18")  # <out>/eval-<model name>
    assert set(df.scorer) == {"", "msp", "energy", "knn"} and df["value"].notna().all()
    again = main([*args[:-1], str(tb.out / "again"), "--weights", str(weights)])
    assert again == 0 and "all 3 entries reused" in capsys.readouterr().err  # cached by weights
    assert (read_metrics(tb.out / "again" / "eval-resnet18")["value"] == df["value"]).all()


def test_cli_eval_refuses_a_pickle_payload_in_pt_weights(
    tb: SimpleNamespace, capsys: pytest.CaptureFixture
) -> None:
    from oodbench.cli import main

    bad = tb.root.parent / "bad.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, bad)
    code = main(["eval", "--model", "torchvision:resnet18", "--benchmark", "tiny", "--config",
                 str(tb.config), "--data-root", str(tb.root), "--weights", str(bad)])
    assert code == 1 and "could not be loaded safely" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_id_sets_of_your_own(tb: SimpleNamespace) -> None:
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, size=(80, 28, 28, 1), dtype=np.uint8), np.arange(80) % 10)
    test = TensorDataset(torch.from_numpy(rng.integers(0, 256, size=(30, 1, 28, 28),
                                                       dtype=np.uint8)), torch.arange(30) % 10)
    ood = {"noise": (rng.integers(0, 256, size=(20, 28, 28, 1), dtype=np.uint8), np.zeros(20))}
    df = evaluate(_net(), tb.bench, id_train=train, id_test=test, ood=ood, scorers=["msp", "knn"])
    assert set(df.benchmark) == {"custom"} and set(df.ood_set) == {"", "noise"}
    assert df["value"].notna().all()
    with pytest.raises(ConfigError, match=r"has labels -1 \.\. -1"):
        evaluate(_net(), tb.bench, id_train=(train[0], -np.ones(80)), id_test=test, ood=ood)
    with pytest.raises(ConfigError, match="give both id_train and id_test"):
        evaluate(_net(), tb.bench, id_train=train)


def test_a_map_scorer_gets_its_own_cached_pass_only_when_requested(tb: SimpleNamespace) -> None:
    import dataclasses

    cache = tb.root.parent / "feature-cache"
    net = _net()
    evaluate(net, tb.bench, scorers=["energy"], cache_dir=cache, data_root=tb.root)
    assert not list(cache.rglob("*ash-map*"))  # nothing of the map stored unasked
    # unpruned ASH-P on the map pools to the penultimate features: ash-map == energy
    bench = dataclasses.replace(tb.bench, scorer_params={"ash-map": {"variant": "p",
                                                                     "percentile": 0.0}})
    df = evaluate(net, bench, scorers=["energy", "ash-map"], cache_dir=cache, data_root=tb.root)
    assert len(list(cache.rglob("*ash-map*"))) == 3  # ID train, ID test, mnist
    values = df[df.scorer != ""].pivot_table(index=["ood_set", "metric"], columns="scorer",
                                              values="value")
    np.testing.assert_allclose(values["ash-map"], values["energy"], atol=1e-6)


def _vit() -> torch.nn.Module:
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1,
                             num_classes=10)


class _Plain(torch.nn.Module):
    """A hand-written network, for the generic hook adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(x)).flatten(1))


@pytest.mark.parametrize("build, adapter", [
    (_vit, None), (_Plain, {"feature_layer": "body", "head_layer": "classifier"})])
def test_a_vit_and_a_hand_written_module_go_through_evaluate(tb: SimpleNamespace, build,
                                                             adapter) -> None:
    torch.manual_seed(0)
    df = evaluate(build(), tb.bench, data_root=tb.root, scorers=["energy", "knn", "ash-map"],
                  adapter=adapter)
    assert set(df.scorer) == {"", "energy", "knn", "ash-map"} and df["value"].notna().all()
