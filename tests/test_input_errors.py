"""Input errors are oodbench errors (issue 22, item 6): a user's model file, checkpoints, image
lists, float images, the network and a model too large for memory each give one paragraph
naming the input and the fix, never a traceback or a silently skipped set."""

from __future__ import annotations

import json
import re
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench import cli, plugins
from oodbench.check import load_benchmark
from oodbench.checkpoint import load_checkpoint, save_checkpoint
from oodbench.config import ConfigError
from oodbench.data import DataError, DatasetUnavailable
from oodbench.data.catalogue import load_image_list
from oodbench.data.convert import as_image_array
from oodbench.errors import CheckpointError, PluginError
from oodbench.modelref import load_model, reference_name
from oodbench.models import create_model
from oodbench.oodsets import load_ood_sets
from tests.conftest import write_tiny_bench


@pytest.fixture(autouse=True)
def isolated_registries() -> Iterator[None]:
    with plugins.scoped():
        yield


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-paragraph error the CLI prints for ``argv`` (exit 1, no traceback)."""
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text and "this is a bug" not in text, text
    return " ".join(text.split())


# --- FILE.py:FACTORY: one piece with --plugin files -----------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ("def make(num_classes):\n    raise RuntimeError('no GPU here')\n",
     r"raised in make\(\): RuntimeError: no GPU here \(at {path}:2\)"),
    ("def make(:\n    pass\n", "raised on import: SyntaxError"),
    ("import oodbench_missing_dependency\n\ndef make():\n    pass\n",
     r"raised on import: ModuleNotFoundError: No module named 'oodbench_missing_dependency' "
     r"\(at {path}:1\)"),
])
def test_a_model_factory_that_fails_names_its_file(
        tmp_path: Path, body: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.py"
    path.write_text(body)
    with pytest.raises(PluginError, match=expected.format(path=path)) as info:
        load_model(f"{path}:make", 10)
    assert f"model file {path}" in str(info.value) and "fix the file" in info.value.hint
    text = _cli_error(["eval", "--benchmark", "fmnist", "--model", f"{path}:make"], capsys)
    assert f"--model {path}:make" in text and "fix the file" in text


def test_a_hub_reference_says_hubs_are_unsupported(capsys: pytest.CaptureFixture[str]) -> None:
    for ref in ("timm:hf-hub:timm/resnet18.a1_in1k", "timm:local-dir:/models/r18"):
        with pytest.raises(ConfigError, match="hub references are not supported") as info:
            reference_name(ref)
        assert "safe name" not in str(info.value) and "FILE.py:FACTORY" in str(info.value)
    text = _cli_error(["eval", "--benchmark", "fmnist", "--model",
                       "timm:hf-hub:timm/resnet18.a1_in1k"], capsys)
    assert "hub references are not supported" in text and "--weights FILE" in text
    assert reference_name("torchvision:resnet18") == "resnet18"


# --- pretrained weights without a network ---------------------------------------------------


def test_pretrained_weights_without_a_network_are_one_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("timm")
    import httpx2
    import timm.models._hub
    import torchvision.models._api
    from huggingface_hub.errors import LocalEntryNotFoundError

    def connect(*args: object, **kwargs: object) -> None:
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    def no_cache(*args: object, **kwargs: object) -> None:
        try:
            connect()
        except httpx2.ConnectError as e:
            raise LocalEntryNotFoundError("cannot find the requested files in the local "
                                          "cache") from e

    def no_route(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_route)
    cases = [("timm:test_vit", connect, "ConnectError"),
             ("timm:test_vit", no_cache, "LocalEntryNotFoundError"),
             ("torchvision:squeezenet1_0", None, "URLError")]
    for ref, fake, kind in cases:
        if fake is not None:
            monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake)
        with pytest.raises(CheckpointError, match=f"could not be fetched \\({kind}") as info:
            load_model(ref, 10, pretrained=True)
        assert ref in str(info.value) and "no network" in str(info.value)
        assert "weights=FILE" in str(info.value)


# --- checkpoints ------------------------------------------------------------------------------

META = {"arch": "resnet8", "widths": [4, 4, 8], "num_classes": 10, "in_channels": 3,
        "image_size": 32, "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}


@pytest.mark.parametrize(("change", "key"), [
    ({"num_classes": "10"}, "'num_classes' is '10'"),
    ({"in_channels": True}, "'in_channels' is True"),
    ({"normalisation": {"mean": [0.5] * 3, "std": [0.25, 0.0, 0.25]}}, "'normalisation'"),
    ({"normalisation": {"mean": [0.5], "std": [0.25]}}, "'normalisation' has 1 value"),
    ({"widths": [4, "4", 8]}, "'widths'"),
])
def test_checkpoint_metadata_of_the_wrong_type_names_the_key(
        tmp_path: Path, change: dict[str, object], key: str) -> None:
    path = save_checkpoint(tmp_path / "ce-s0.pt", create_model("resnet8", 10, 3,
                                                               widths=(4, 4, 8)), META | change)
    with pytest.raises(CheckpointError, match=key) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_state_dict_that_is_a_tensor_names_the_file(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": torch.zeros(3), "meta": json.dumps(META)}, path)
    with pytest.raises(CheckpointError, match=r"'state_dict' is a Tensor of shape \(3,\)"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "good.pt", create_model("resnet8", 10, 3, widths=(4, 4, 8)), META)
    assert load_checkpoint(tmp_path / "good.pt")[1]["num_classes"] == 10
    text = _cli_error(["eval", "--benchmark", "fmnist", "--checkpoint", str(path)], capsys)
    assert str(path) in text and "'state_dict'" in text


# --- a model too large for memory -----------------------------------------------------------


@pytest.mark.parametrize(("widths", "said"), [
    ((4, 4, 100_000_000), r"its weights alone take 360,000,0[\d,]+ bytes"),  # counted
    ((4, 4, 10**13), "building it failed .*can't allocate memory"),  # refused by the allocator
])
def test_a_model_too_large_for_memory_names_its_widths(widths: tuple[int, ...],
                                                       said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"model 'resnet8' with widths {widths} "
                                                    "does not fit in memory: ") + said) as info:
        create_model("resnet8", 10, 1, widths=widths)
    assert "smaller widths" in info.value.hint


# --- image lists: strict, and an error rather than a skipped set ----------------------------


LIST = "benchmark_imglist/tiny/test_scribbles.txt"


def _list_bench(tmp_path: Path, lines: list[str] | bytes) -> SimpleNamespace:
    """The tiny benchmark (no noise sets) with an image-list OOD set ``scribbles`` of three
    PNGs below ``images_classic/scribbles/``, whose list holds ``lines``."""
    tiny = write_tiny_bench(tmp_path, n_train=32, n_ood=8, noise=False)
    folder = tiny.root / "images_classic" / "scribbles"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (28, 28), 40 * i).save(folder / f"{i}.png")
    listed = tiny.root / LIST
    listed.parent.mkdir(parents=True)
    listed.write_bytes(lines if isinstance(lines, bytes) else "\n".join(lines).encode() + b"\n")
    tiny.config.write_text(tiny.config.read_text() + f"""
[[benchmarks.tiny.ood]]
name = "scribbles"
group = "far"
imglist = "{LIST}"
images = "images_classic"
""")
    tiny.list = listed
    return tiny


GOOD = ["scribbles/0.png -1", "", "scribbles/1.png -1", "scribbles/2.png -1"]


@pytest.mark.parametrize(("lines", "line", "why"), [
    ([*GOOD, "/etc/passwd -1"], 5, "relative/path"),
    ([*GOOD, "scribbles/../../secret.png -1"], 5, "no '..'"),
    ([*GOOD[:1], "scribbles/1.png\t-1"], 2, "a tab"),
    ([*GOOD[:1], "scribbles/1.png 1.5"], 2, "integer label"),
    ([*GOOD[:1], "scribbles/1.png"], 2, "relative/path label"),
    ([*GOOD[:1], "scribbles/sub -1"], 2, "a folder, not an image file"),
    ([*GOOD, "scribbles/gone.png -1"], 5, "listed but not found"),
    ("scribbles/0.png -1\nscribbles/caf\xe9.png -1\n".encode("latin-1"), 2, "not UTF-8"),
    ([*GOOD[:1], "scribbles/1.png 99999999999999999999999"], 2, "integer label"),  # > int64
    ([*GOOD[:1], "scribbles/1.png \u0661"], 2, "integer label"),  # an Arabic-Indic digit
    # a line separator that bytes do not split on: the line number still counts it
    ("scribbles/0.png -1\u2028scribbles/gone.png -1\n".encode(), 2, "listed but not found"),
])
def test_a_malformed_image_list_is_an_error_naming_the_line(
        tmp_path: Path, lines: list[str] | bytes, line: int, why: str) -> None:
    tiny = _list_bench(tmp_path, lines)
    bench = load_benchmark("tiny", tiny.config)
    with pytest.raises(DataError, match=why) as info:
        load_ood_sets(bench, tiny.root)
    assert not isinstance(info.value, DatasetUnavailable)  # never a skipped set
    assert f"{tiny.list}:{line}:" in str(info.value) and "'scribbles'" in str(info.value)


def test_a_windows_image_list_is_read(tmp_path: Path) -> None:
    """A byte-order mark, CRLF line endings, trailing spaces and labels with leading zeros, as
    Windows editors and scripts write them, are a well-formed list."""
    text = "\ufeffscribbles/0.png 01\r\n\r\nscribbles/1.png -1  \r\nscribbles/2.png 2\r\n"
    tiny = _list_bench(tmp_path, text.encode())
    sets = load_ood_sets(load_benchmark("tiny", tiny.config), tiny.root)
    assert len(sets.sets["scribbles"]) == 3


def test_an_empty_image_list_is_an_error_and_a_missing_one_a_skipped_set(tmp_path: Path) -> None:
    tiny = _list_bench(tmp_path, [])
    bench = load_benchmark("tiny", tiny.config)
    with pytest.raises(DataError, match="names no images") as info:
        load_ood_sets(bench, tiny.root)
    assert not isinstance(info.value, DatasetUnavailable)
    tiny.list.write_text("\n".join(GOOD) + "\n")
    sets = load_ood_sets(bench, tiny.root)
    assert len(sets.sets["scribbles"]) == 3 and sets.groups["scribbles"] == "far"
    tiny.list.unlink()  # not here at all: skipped, as a set not downloaded is
    sets = load_ood_sets(bench, tiny.root)
    assert "scribbles" not in sets.sets and "not found" in sets.skipped["scribbles"]


def test_a_file_that_fails_in_a_worker_is_its_own_error(tmp_path: Path) -> None:
    """A listed file that breaks after loading fails in a data-loader worker with its own
    message, not a DataLoader's re-raised traceback text."""
    from oodbench.data import Preprocess

    tiny = _list_bench(tmp_path, GOOD)
    arr = load_image_list("scribbles", LIST, "images_classic", tiny.root)
    (tiny.root / "images_classic" / "scribbles" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as info:
        list(arr.batches(Preprocess(28, 1, (0.5,), (0.25,)), 1, torch.device("cpu"),
                         workers=2))
    assert str(info.value).startswith(str(tiny.root / "images_classic" / "scribbles" / "2.png"))
    assert "Traceback" not in str(info.value)


# --- float images with NaN pixels -------------------------------------------------------------


def test_nan_pixels_in_float_images_are_refused_by_set_and_count() -> None:
    images = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
    images[1, 0, 0, 0] = np.nan
    images[3, 1:3, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"dataset 'odd' \(test\): 3 NaN or infinite pixel "
                                        r"values in 2 of its 5 images"):
        as_image_array((images, np.zeros(5)), "odd")

    class Items(torch.utils.data.Dataset):
        """Four C x H x W float images, the odd ones with two NaN pixels; no IndexError."""

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x = torch.full((3, 8, 8), 0.5)
            x[0, :2, 0] = float("nan") if i % 2 else 0.5
            return x, 0

    for data in (Items(), torch.utils.data.DataLoader(Items(), batch_size=3)):
        with pytest.raises(DataError, match="4 NaN or infinite pixel values in 2 of its 4"):
            as_image_array(data, "odd")
    images[np.isnan(images)] = 0.5
    assert as_image_array((images, np.zeros(5)), "fine").images.dtype == np.uint8
