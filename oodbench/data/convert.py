"""Datasets a Python caller brings, as oodbench's :class:`ImageArray` (uint8 N x H x W x C).

Accepted: an ``ImageArray``; a ``(images, labels)`` pair of arrays or tensors; a torch
``Dataset`` yielding ``(image, label)`` or ``image``; a ``DataLoader`` yielding such batches.
An image is a PIL image (every mode decoded as folders are: :func:`~oodbench.data.readers.
to_rgb`), a uint8 array or tensor (H x W x C as arrays, C x H x W as tensors), or a float
tensor in [0, 1] (``ToTensor``'s output, scaled back to 0..255 exactly). Normalised floats
(outside [0, 1]) are refused: oodbench applies the model's own normalisation itself; so are
NaN and infinite pixels (counted per set), which no cast could turn into a pixel value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

from oodbench.data.imageset import ImageArray, ImageSet
from oodbench.data.readers import to_rgb
from oodbench.errors import DataError

# PIL modes of grey images: to_rgb copies them to R = G = B, and one channel is kept
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"})


def _image(x: Any, where: str, notes: Counter[str], batched: bool,
           nonfinite: Counter[str]) -> np.ndarray:
    """One image (or a batch, with ``batched``) as uint8 H x W x C (N x H x W x C); float
    pixels that are NaN or infinite are counted into ``nonfinite`` ("pixels", "images")."""
    if isinstance(x, Image.Image):
        rgb, done = to_rgb(x, where)
        notes.update(done)
        array = np.asarray(rgb)
        return array[..., :1] if x.mode in _GREY_MODES else array
    channel_first = isinstance(x, torch.Tensor)
    arr = x.detach().cpu().numpy() if channel_first else np.asarray(x)
    rank = 4 if batched else 3
    if arr.ndim == rank - 1:  # no channel axis: grey
        arr = arr[..., None] if not channel_first else np.expand_dims(arr, -3)
    if arr.ndim != rank:
        raise DataError(f"{where}: an image of shape {arr.shape}; expected "
                        f"{'C x H x W (tensor)' if channel_first else 'H x W x C (array)'}")
    if channel_first:
        arr = np.moveaxis(arr, -3, -1)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(f"{where}: images of dtype {arr.dtype}", "give uint8 images, PIL "
                            "images or float tensors in [0, 1] (ToTensor)")
        bad = ~np.isfinite(arr)
        if bad.any():  # counted here, refused once the whole set is read (as_image_array)
            nonfinite["pixels"] += int(bad.sum())
            nonfinite["images"] += int(bad.reshape(len(arr), -1).any(1).sum()) if batched else 1
            arr = np.where(bad, 0.0, arr)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise DataError(f"{where}: float images outside [0, 1] (range {arr.min():.3g} .. "
                            f"{arr.max():.3g}): they look normalised",
                            "drop the Normalize transform: oodbench normalises for the model")
        arr = np.rint(arr * 255.0).astype(np.uint8)
        notes["float images in [0, 1] scaled to 0..255"] += 1
    if arr.shape[-1] not in (1, 3):
        raise DataError(f"{where}: {arr.shape[-1]} channels; need 1 (grey) or 3 (RGB)")
    return arr


def _split(item: Any) -> tuple[Any, Any]:
    if isinstance(item, tuple | list) and len(item) >= 2:
        return item[0], item[1]
    return item, None


def as_image_array(data: Any, name: str, split: str = "test") -> ImageSet:
    """``data`` (see the module docstring) as an :class:`ImageArray` named ``name``/``split``
    (an :class:`ImageSet` already, such as streamed files, as it is); labels are -1 where none
    are given."""
    if isinstance(data, ImageSet):
        return data
    notes: Counter[str] = Counter()
    nonfinite: Counter[str] = Counter()
    where = f"dataset {name!r} ({split})"
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data[0], Image.Image):
        images = _image(data[0], where, notes, True, nonfinite)
        labels = np.asarray(torch.as_tensor(data[1]), dtype=np.int64)
    elif isinstance(data, DataLoader | Dataset):
        batched = isinstance(data, DataLoader)
        parts, label_parts = [], []
        items: Iterator[Any]
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset) \
                and isinstance(data, Sized):
            # a map-style Dataset by its length: iterating it stops only at an IndexError
            items = (data[j] for j in range(len(data)))
        else:
            items = iter(data)
        for i, item in enumerate(items):
            x, y = _split(item)
            image = _image(x, f"{where}, item {i}", notes, batched, nonfinite)
            parts.append(image if batched else image[None])
            n = len(parts[-1])
            label_parts.append(np.full(n, -1) if y is None else
                               np.asarray(torch.as_tensor(y), dtype=np.int64).reshape(n))
        if not parts:
            raise DataError(f"{where} is empty")
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) > 1:
            raise DataError(f"{where}: images of several shapes {sorted(shapes)}",
                            "resize them to one size in the dataset's transform")
        images, labels = np.concatenate(parts), np.concatenate(label_parts)
    else:
        raise DataError(f"{where} is a {type(data).__name__}", "give a torch Dataset or "
                        "DataLoader, an ImageArray, or an (images, labels) pair")
    if nonfinite:
        raise DataError(f"{where}: {nonfinite['pixels']:,} NaN or infinite pixel values in "
                        f"{nonfinite['images']:,} of its {len(images):,} images",
                        "fix or drop those images: no pixel value stands for them")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if not len(images):
        raise DataError(f"{where} is empty")
    told = tuple(f"{note} ({n} of {len(images)})" for note, n in notes.items())
    return ImageArray(np.ascontiguousarray(images), labels, name, split,
                      f"python {type(data).__name__}", notes=told)
