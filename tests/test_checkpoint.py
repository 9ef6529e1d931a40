"""Checkpoints: round trip, shape mismatches, unsafe and broken files."""

from pathlib import Path

import pytest
import torch

from oodbench.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from oodbench.cli import OPTIONS
from oodbench.models import create_model


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    model = create_model("resnet8", 10, 1, widths=(4, 8, 8))
    meta = {"arch": "resnet8", "widths": [4, 8, 8], "num_classes": 10, "in_channels": 1,
            "test_acc": 0.5}
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    assert path.with_suffix(".json").is_file()
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta | {"diagnostics": {}}  # every checkpoint's meta has the key
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))


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
