"""File-backed sets stream through DataLoader workers and give the input, features and trained
weights of the in-memory path; image lists; content-manifest cache keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from oodbench.config import TrainSpec
from oodbench.data import (
    DataError,
    ImageArray,
    ImageFiles,
    Preprocess,
    load_dataset,
    load_image_list,
    load_path,
)
from oodbench.data.readers import read_image_list
from oodbench.extract import FeatureCache, forward_features
from oodbench.models import create_model
from oodbench.objectives import create_objective
from oodbench.progress import make_progress
from oodbench.train import InMemory, Streamed, fit


def _folder(root: Path, sizes: list[tuple[int, int]], modes: tuple[str, ...] = ("RGB",),
            seed: int = 0) -> Path:
    """Class sub-folders of PNG/JPEG images of the given sizes and Pillow modes."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        mode = modes[i % len(modes)]
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(rgb).convert(mode)
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"img{i:03d}.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_the_in_memory_ones(tmp_path: Path, workers: int) -> None:
    sizes = [(40, 52), (33, 33), (64, 48), (32, 32), (50, 37), (45, 45), (36, 60)]
    root = _folder(tmp_path / "set", sizes, modes=("RGB", "L", "P", "RGBA"))
    streamed = load_path(root, "mixed", stream=True)
    assert isinstance(streamed, ImageFiles) and streamed.shape is None
    assert list(streamed.labels) == [0, 0, 0, 1, 1, 2, 2]  # sorted paths: class0 first
    for pre in (Preprocess(32, 3, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)),
                Preprocess(24, 1, (0.5,), (0.25,), crop_pct=0.875),
                Preprocess(24, 3, (0.5,) * 3, (0.25,) * 3, 0.9, interpolation="bicubic")):
        got = list(streamed.batches(pre, 3, torch.device("cpu"), workers=workers))
        assert [len(x) for x, _ in got] == [3, 3, 1]
        for i, path in enumerate(streamed.path(j) for j in range(len(streamed))):
            # one file decoded in memory alone: any size works there
            alone = load_path(_single(tmp_path / f"one{i}", path), "one", stream=False)
            assert isinstance(alone, ImageArray)
            want = pre(alone.images)
            batch, pos = divmod(i, 3)
            torch.testing.assert_close(got[batch][0][pos], want[0], atol=1e-6, rtol=0)
        assert torch.equal(torch.cat([y for _, y in got]), torch.as_tensor(streamed.labels))
    notes = streamed.conversions()
    assert any("palette expanded" in n for n in notes), notes


def test_preprocess_resizes_with_its_interpolation() -> None:
    x = torch.rand(1, 3, 40, 52)
    bilinear = Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3, crop_pct=0.875)
    bicubic = Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3, 0.875, interpolation="bicubic")
    # the shorter side to floor(32 / 0.875) = 36, the longer to round(52 * 36 / 40) = 47,
    # then the central 32 x 32 (offsets floored: 2 and 7)
    for pre, mode in ((bilinear, InterpolationMode.BILINEAR),
                      (bicubic, InterpolationMode.BICUBIC)):
        want = TF.resize(x, [36, 47], interpolation=mode, antialias=True)[..., 2:34, 7:39]
        assert torch.equal(pre.fit(x), want)
    assert not torch.equal(bilinear.fit(x), bicubic.fit(x))
    assert bilinear.key() == "s32-c3-m0.5000_0.5000_0.5000-sd0.2500_0.2500_0.2500-cp0.8750"
    assert bicubic.key() == bilinear.key() + "-bicubic"
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3, interpolation="lanczos")


def _single(folder: Path, path: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / path.name).write_bytes(path.read_bytes())
    return folder


def _same_size_folder(root: Path, n: int, seed: int = 0) -> Path:
    return _folder(root, [(32, 32)] * n, modes=("RGB", "L"), seed=seed)


@pytest.mark.kernels
def test_features_and_training_equal_the_in_memory_path(tmp_path: Path) -> None:
    root = _same_size_folder(tmp_path / "set", 40)
    memory = load_path(root, "s", stream=False)
    files = load_path(root, "s", stream=True)
    assert isinstance(memory, ImageArray) and isinstance(files, ImageFiles)
    pre = Preprocess(32, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.manual_seed(0)
    model = create_model("resnet8", 3, 3, widths=(4, 8, 8))
    cpu = torch.device("cpu")
    a = forward_features(model, memory, pre, cpu, batch_size=16)
    b = forward_features(model, files, pre, cpu, batch_size=16, workers=2)
    torch.testing.assert_close(a.features, b.features, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-6, rtol=0)
    assert torch.equal(a.labels, b.labels)
    weights = []
    spec = TrainSpec(epochs=2, batch_size=8, lr=0.05, augment="crop-flip")
    for data in (InMemory.of(pre, memory), Streamed(pre, files, 2)):
        torch.manual_seed(0)
        net = create_model("resnet8", 3, 3, widths=(4, 8, 8))
        with make_progress(transient=True) as progress:
            fit(net, create_objective("ce"), data, spec, 0, cpu, progress=progress, desc="t")
        weights.append(net.state_dict())
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-5, rtol=0, msg=key)


def test_folders_stream_by_size_or_by_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    import oodbench.data.sources as sources

    root = _same_size_folder(tmp_path / "places365", 5)
    assert isinstance(load_dataset("places365", data_root=tmp_path), ImageArray)
    assert isinstance(load_dataset("places365", data_root=tmp_path, stream=True), ImageFiles)
    monkeypatch.setattr(sources, "STREAM_ABOVE", 4)
    streamed = load_dataset("places365", data_root=tmp_path)
    assert isinstance(streamed, ImageFiles) and streamed.resize == 32
    assert streamed.source == f"data root: {root}"


def _image_list(root: Path, lines: list[str]) -> Path:
    path = root / "benchmark_imglist" / "b" / "test_x.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_lists_read_and_refuse_by_line(tmp_path: Path) -> None:
    _same_size_folder(tmp_path / "images_classic" / "x", 4)
    files = sorted((tmp_path / "images_classic").rglob("*.png"))
    rel = [f.relative_to(tmp_path / "images_classic").as_posix() for f in files]
    _image_list(tmp_path, [f"{r} {i}" for i, r in enumerate(rel)] + [""])
    arr = load_image_list("x", "benchmark_imglist/b/test_x.txt", "images_classic", tmp_path)
    assert isinstance(arr, ImageFiles) and arr.paths == tuple(rel)
    assert list(arr.labels) == [0, 1, 2, 3] and len(arr) == 4
    for bad, why in ((["a.png"], "expected 'relative/path label'"),
                     (["a.png one"], "integer label"), (["../a.png 0"], "relative/path"),
                     (["/abs/a.png 0"], "relative/path"), ([], "names no images")):
        path = _image_list(tmp_path, bad)
        with pytest.raises(DataError, match=why) as info:
            read_image_list(path)
        assert str(path) in str(info.value)
    _image_list(tmp_path, [f"{rel[0]} 0", "x/class9/gone.png 1"])
    with pytest.raises(DataError, match=r"test_x\.txt:2: .*gone\.png: listed but not found"):
        load_image_list("x", "benchmark_imglist/b/test_x.txt", "images_classic", tmp_path)
    _image_list(tmp_path, [f"{r} 0" for r in rel[:2]])  # a file gone after loading
    arr = load_image_list("x", "benchmark_imglist/b/test_x.txt", "images_classic", tmp_path)
    (tmp_path / "images_classic" / rel[1]).unlink()
    with pytest.raises(DataError, match=r"\.png: listed but not found"):
        list(arr.batches(Preprocess(32, 3, (0.5,) * 3, (0.2,) * 3), 4, torch.device("cpu"),
                         workers=0))


def test_a_changed_or_added_file_invalidates_only_its_set(tmp_path: Path) -> None:
    a = _same_size_folder(tmp_path / "a", 6)
    b = _same_size_folder(tmp_path / "b", 6, seed=1)
    pre = Preprocess(32, 3, (0.5,) * 3, (0.2,) * 3)
    cache = FeatureCache(tmp_path / "cache")

    def keys() -> tuple[Path, Path]:
        return tuple(FeatureCache(tmp_path / "cache").path(  # type: ignore[return-value]
            "c" * 64, load_path(root, root.name, stream=True), pre) for root in (a, b))

    first = keys()
    assert keys() == first
    assert (tmp_path / "cache" / "content").is_dir()
    target = sorted(a.rglob("*.png"))[2]
    pixels = np.asarray(Image.open(target).convert("RGB")).copy()
    pixels[0, 0] ^= 255
    Image.fromarray(pixels).save(target)
    changed = keys()
    assert changed[0] != first[0] and changed[1] == first[1]
    Image.fromarray(pixels).save(b / "class0" / "new.png")
    added = keys()
    assert added[0] == changed[0] and added[1] != first[1]
    del cache
