"""Checkpoints: round trip, shape mismatches, unsafe and broken files."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from oodbench.check import load_benchmark, load_config
from oodbench.checkpoint import load_checkpoint, save_checkpoint
from oodbench.cli import OPTIONS
from oodbench.errors import CheckpointError
from oodbench.modelref import load_model
from oodbench.models import create_model
from oodbench.train import training_key
from oodbench.weights import read_checkpoint
from tests.reference import evaluation as reference


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_keeps_weights_and_metadata(tmp_path: Path, suffix: str) -> None:
    model = create_model("resnet8", 10, 1, widths=(4, 8, 8))
    meta = {"arch": "resnet8", "widths": [4, 8, 8], "num_classes": 10, "in_channels": 1,
            "test_acc": 0.5}
    path = save_checkpoint(tmp_path / f"m{suffix}", model, meta)
    assert path.with_suffix(".json").is_file()
    if suffix == ".safetensors":  # a safetensors file, its metadata in the header
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            assert json.loads(f.metadata()["oodbench"]) == meta
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta | {"diagnostics": {}}  # every checkpoint's meta has the key
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    # weights in the channels-last format (as training leaves them) are saved as they are
    model.to(memory_format=torch.channels_last)
    again = load_checkpoint(save_checkpoint(tmp_path / f"cl{suffix}", model, meta))[0]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values(), strict=True))


def test_plain_state_dict_needs_arch(tmp_path: Path) -> None:
    model = create_model("resnet8", 10, 3)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain state_dict") as info:
        load_checkpoint(tmp_path / "plain.pt")
    assert "(--arch, --num-classes, --in-channels)" in info.value.render(OPTIONS)
    loaded, meta = load_checkpoint(tmp_path / "plain.pt", "resnet8", 10, 3)
    assert meta == {} and loaded.fc.out_features == 10


def test_wrong_shape_is_refused_naming_both_shapes(tmp_path: Path) -> None:
    torch.save(create_model("resnet8", 100, 3).state_dict(), tmp_path / "c100.pt")
    with pytest.raises(CheckpointError, match=r"\(100, 64\).*\(10, 64\)"):
        load_checkpoint(tmp_path / "c100.pt", "resnet8", 10, 3)


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    torch.save(create_model("resnet8", 10, 3).state_dict(), tmp_path / "r8.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(tmp_path / "r8.pt", "resnet18_32x32", 10, 3)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", create_model("resnet8", 10, 1),
                           {"arch": "resnet8", "num_classes": 10, "in_channels": 1})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def test_pickle_payload_never_runs(tmp_path: Path) -> None:
    marker = Path(__file__).parent / "PWNED"
    marker.unlink(missing_ok=True)
    torch.save({"state_dict": {}, "meta": "{}", "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("plain", [False, True], ids=["oodbench", "plain"])
def test_non_finite_weights_are_refused(tmp_path: Path, bad: float, plain: bool) -> None:
    model = create_model("resnet8", 10, 1)
    keys = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    with torch.no_grad():
        model.state_dict()[keys[3]].view(-1)[1] = bad  # state_dict tensors share storage
    path = tmp_path / "diverged.pt"
    if plain:
        torch.save(model.state_dict(), path)
    else:
        save_checkpoint(path, model, {"arch": "resnet8", "num_classes": 10, "in_channels": 1})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, "resnet8", 10, 1)
    assert info.value.message == (f"{path} holds non-finite (NaN/inf) weights, first at "
                                  f"{keys[3]!r}")
    assert "delete the file and train again (a lower lr" in info.value.hint


# ---------------------------------------------------------------- keys that must not change
# recorded from the code before hash stability moved to oodbench.compat (issue 23); fmnist, cifar10
# and cifar10-gpu again when SSOD, T2FNorm and RegMixup joined their trainings and cifar10 went
# to 3 seeds (issue 24). A changed
# value means old results or checkpoints no longer match their benchmark

PRESET_HASHES = {
    "fmnist": "b50251bae2b46c13fcf661f7845ffca45aef978e31dbc1ada108355bd8c54dca",
    "cifar10": "3a35a5f484e2352f2e94edc0168740fb1da4164ff199b673429f43e34f787611",
    "cifar10-gpu": "3b2ad6d2fac8874c733b2413aa4e37a3c9dce8d0dc31019f3194ba1bd211ef53",
    "cifar100": "ec6ff95a3adc8848ef0787c53b28e7224f36349f3cce96999858a3a6b097ae79",
    "cifar100-gpu": "565503c02819b4588432afdf1f58501a74d31a4475cdecf68a91853b0e8d2268",
    "imagenet200": "019773b422f52cc5b0fda5e91cdb5a954e8bf0c3e891f3c8b005ad41ee4346b0",
    "imagenet1k": "951d7caf40e554205527a8f1c737625c9aebc59e556563f73a749e4e2ef3b193",
}
REFERENCE_HASH = "661239f8813262351d17524b2736fccb6e0aa17f08a023c76c0fd1ae56151e1d"
# the reference training (tests/reference) and the fmnist preset's trainings, every objective,
# on the reference data; then the reference training with later train settings
TRAINING_KEYS = {
    "fmnist/ce": "e395082a288419edadf888183227e8e540bec436d56e55b6b6c0e3c29e46fdd5",
    "fmnist/bgnorm": "745cd4b5eac9daa8e2471bb127cbce1a091c1c6861f1564d84b0d53c897cd223",
    "fmnist/logitnorm": "0bbc651362c367cddb2695dbddd5af56d624fbcb9fec9de5c1abce259da27e35",
    "fmnist/ssod": "69116a7c917c0b466c94f883953893faeb75c10197aecdfe67793536ac9218ee",
    "fmnist/t2fnorm": "8c93ed1999a29d0ad4b7cafacabc4176183c492ca83ea4a4271a855da921eaa3",
    "fmnist/regmixup": "978cb765457f3f0ca1b73e16e6788397cf4cbbf06647f7960c5e6ab431854b6a",
    "fmnist/scratch-abs-l0.5": "aa9e52232718e8bb3929552285744d43bfaf257baab3f24e1f647ed833ac0cc9",
    "fmnist/scratch-abs-l0.05-wu":
        "86059cf1ceb95a96bf93cd958004a0206b3340077296909cc4dfddc72c8c21fc",
    "fmnist/scratch-ratio-l0.1-wu":
        "836cc22f73eec54188f81c6e33cdcce8346dd92d69c0f80f8f0e9b110a9c4250",
    "fmnist/scratch-ratio-l0.5-wu":
        "745cd4b5eac9daa8e2471bb127cbce1a091c1c6861f1564d84b0d53c897cd223",
    "fmnist/ft-l0": "cfe750da6a194c7dc61255756a08ffffda33d634fc41f8da5d6a139d07335b04",
    "fmnist/ft-ratio-l0.1": "64cca62dbecc58831c23ec80d8780141dfb2cf54ae18ae689a8db1880d63c83c",
    "fmnist/ft-ratio-l0.5": "aab361081cc9279ee1b617db045077aebd70228def36cdba262049f824ebe485",
    "fmnist/ft-ratio-l2": "dede9ef2c15f09b0ed1d07ed6812b186bd2bd1482a40760863cb7b19fc3adabc",
    "fmnist/ft-abs-l0.05": "bb2f73f852f937f9833ef5af66050100d1c81b3b1a8c762ee4d31cbbc14c9352",
    "fmnist/ft-hinge-l0.1": "5332d454f79ebd0082a0ee6115a926716ebccf55b1b013341c2e5c89d1af29f2",
    "fmnist/ft-ratio-l0.5-q0.25":
        "43d7de94009bcc237387829ce38c812a69f87f068409c7b26e29fcffc526b95a",
    "fmnist/ft-ratio-l0.5-q0.75":
        "632994d1cc59221e8fe280aa0a4f8c841a2c91b24bffaff729fadc35a31c0e14",
    "fmnist/ft-ratio-l0.5-prob": "ec4cc0775db68d294ebf75140e9724eb15efe27c6b77f44bf6262bd8808f2384",
}
TRAIN_VARIANTS = [
    ({}, "f9bb0937040f33d6fa4af95f0d8922e022fb90154d6fbfe11e8499e210b2fdd3"),
    ({"cpu_amp": True}, "e401a6e9ca5ecb179ef3eea25115128d9dd06c0d4ee7a1eb21db3e37b6b6caa8"),
    ({"amp_dtype": "bfloat16"}, "a642fe0d1db08e441777d0fa39214ce1ab55c37775f071f9835f1fc2efcfce00"),
    ({"amp_dtype": "bfloat16", "cpu_amp": True},
     "7834bf904cdfe1f8301d9cdd4153faba96360d783cb7430d54a46ce2cb14e1e3"),
]


def test_the_config_hashes_of_the_presets_and_the_reference_are_unchanged(
    tmp_path: Path,
) -> None:
    assert {name: bench.config_hash() for name, bench in load_config().items()} == PRESET_HASHES
    assert reference.benchmark(tmp_path).config_hash() == REFERENCE_HASH


def test_checkpoint_keys_are_unchanged(tmp_path: Path) -> None:
    splits, _ = reference.data()
    fmnist = load_benchmark("fmnist")
    keys = {f"fmnist/{t.name}": training_key(fmnist, t, 0, splits, None)
            for t in (*fmnist.trainings, *fmnist.ablate)}
    assert keys == TRAINING_KEYS
    bench = reference.benchmark(tmp_path)
    (training,) = bench.trainings
    for changes, key in TRAIN_VARIANTS:
        train = dataclasses.replace(training.train, **changes)
        assert training_key(bench, dataclasses.replace(training, train=train), 0, splits,
                            None) == key, changes


def test_old_checkpoint_metadata_is_upgraded(tmp_path: Path) -> None:
    model = create_model("resnet8", 3, 1, widths=(4, 4, 4))
    path = save_checkpoint(tmp_path / "old.pt", model, {"arch": "resnet8", "bgnorm_test": 0.5,
                                                        "test_acc": 0.9})
    meta = read_checkpoint(path)[1]
    assert meta["diagnostics"] == {"bgnorm_test": 0.5} and meta["test_acc"] == 0.9
    assert "bgnorm_test" not in meta


# ---------------------------------------------------------------- models by reference


@pytest.mark.parametrize("family", ["timm", "torchvision"])
def test_a_random_init_reference_has_num_classes_outputs(family: str) -> None:
    pytest.importorskip(family)
    model = load_model(f"{family}:resnet18", 7)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_a_pretrained_torchvision_model_gets_a_new_head_for_num_classes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As timm does: the pretrained weights everywhere but the head, which has num_classes
    outputs (the weights come from a random 1000-class net here, not a download)."""
    models = pytest.importorskip("torchvision.models")
    pretrained = models.resnet18(num_classes=1000).state_dict()
    monkeypatch.setattr(models.WeightsEnum, "get_state_dict",
                        lambda self, *args, **kwargs: pretrained)
    model = load_model("torchvision:resnet18", 7, pretrained=True)
    assert model.fc.out_features == 7
    assert torch.equal(model.state_dict()["conv1.weight"], pretrained["conv1.weight"])
    same = load_model("torchvision:resnet18", 1000, pretrained=True)
    assert torch.equal(same.state_dict()["fc.weight"], pretrained["fc.weight"])
