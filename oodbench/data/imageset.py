"""Image sets: what every dataset loads to, behind one interface.

An :class:`ImageSet` has a name, a split, a ``source`` (where it came from), labels (``int64``,
-1 where there are none) and ``notes`` (what decoding did to the files), and gives batches of
model input for a :class:`~oodbench.data.Preprocess`. Two kinds:

- :class:`ImageArray`: the whole set decoded into one ``uint8`` NHWC array (``.npz``, idx,
  CIFAR batches, small image folders): the fastest path for small sets;
- :class:`ImageFiles`: image files on disk (large image folders, image lists), decoded per
  batch by the worker processes of a torch ``DataLoader`` and never held in memory as a whole.
  Each worker decodes a file with the one colour-mode policy of :mod:`oodbench.data.readers`,
  resizes and centre-crops it to the input size (:meth:`Preprocess.fit`, torchvision's ``v2``
  resize), and the batch is normalised on the device (:meth:`Preprocess.finish`), so a file
  gives the same input on either path.

The cache key of a set is its :meth:`~ImageSet.fingerprint`: a hash of the array bytes, or, for
files, of a content manifest (path, size, SHA-256 per file) computed once and re-checked by size
and mtime (:mod:`oodbench.data.content`).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import Field, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from oodbench.data import readers
from oodbench.data.content import content_fingerprint
from oodbench.data.preprocess import LUMA_WEIGHTS, Preprocess, channel_stats
from oodbench.errors import DataError

MAX_WORKERS = 8  # data-loader worker processes at most ("auto": one per CPU core up to this)


def loader_workers(setting: int | str = "auto") -> int:
    """Worker processes for a file-backed set: ``setting``, or one per usable CPU core (at
    most ``MAX_WORKERS``) for ``"auto"``."""
    if setting != "auto":
        return int(setting)
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


class ImageSet(ABC):
    """A loaded split of a dataset (see the module docstring). Every kind is a frozen
    dataclass: a set is renamed or cut with ``dataclasses.replace``."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # so, of each subclass
    name: str
    split: str
    source: str
    labels: np.ndarray
    notes: tuple[str, ...]
    _memo: dict[str, str]  # what is computed once per set object (a field of each subclass)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int] | None:
        """H x W x C shared by every image, or ``None`` where sizes vary or are not known
        without decoding."""

    @abstractmethod
    def subset(self, index: np.ndarray, split: str) -> ImageSet:
        """The images at ``index``, as split ``split``."""

    @abstractmethod
    def _fingerprint(self, store: Path | None) -> str:
        """The content hash (``store``: where a file set keeps its content manifest)."""

    def fingerprint(self, store: Path | None = None) -> str:
        """SHA-256 of the set's content and labels, computed once per set object (sets are
        read-only once loaded) and kept in its own ``_memo``."""
        if "sha256" not in self._memo:
            self._memo["sha256"] = self._fingerprint(store)
        return self._memo["sha256"]

    @abstractmethod
    def batches(self, preprocess: Preprocess, batch_size: int, device: torch.device,
                order: np.ndarray | None = None, workers: int | str = "auto",
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Model input and labels on ``device``, ``batch_size`` images at a time, in ``order``
        (indices; default: the stored order)."""

    @abstractmethod
    def channel_stats(self, channels: int, workers: int | str = "auto"
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] over every pixel, converted to ``channels``."""


@dataclass(frozen=True, eq=False)
class ImageArray(ImageSet):
    """A split held in memory: ``uint8`` NHWC images, ``int64`` labels (-1 if none),
    provenance, and ``notes``: what decoding did to the files (e.g. ``"palette expanded (3 of
    40 images)"``), to be said once per set."""

    images: np.ndarray
    labels: np.ndarray
    name: str
    split: str
    source: str
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = self.images.shape
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or shape[-1] not in (1, 3):
            raise DataError(
                f"{self.name}: images must be uint8 N x H x W x {{1,3}}, "
                f"got {self.images.dtype} {shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (shape[0],):
            raise DataError(
                f"{self.name}: labels must be int64 of shape ({shape[0]},), "
                f"got {self.labels.dtype} {self.labels.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        _, height, width, channels = self.images.shape
        return height, width, channels

    def subset(self, index: np.ndarray, split: str) -> ImageArray:
        return replace(self, images=self.images[index], labels=self.labels[index], split=split)

    def _fingerprint(self, store: Path | None) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).data)
        h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()

    def batches(self, preprocess: Preprocess, batch_size: int, device: torch.device,
                order: np.ndarray | None = None, workers: int | str = "auto",
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self), batch_size):
            index = slice(i, i + batch_size) if order is None else order[i : i + batch_size]
            yield (preprocess(self.images[index], device),
                   torch.as_tensor(self.labels[index], dtype=torch.long))

    def channel_stats(self, channels: int, workers: int | str = "auto"
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return channel_stats(self.images, channels)


class _Decoding(Dataset):
    """Worker-side decoding of an :class:`ImageFiles`: item ``i`` is (input C x H x W float at
    the input size, label, notes); with no preprocessing, the per-channel moments of image ``i``
    at its own size."""

    def __init__(self, files: ImageFiles, preprocess: Preprocess | None,
                 channels: int = 3) -> None:
        self.files, self.preprocess, self.channels = files, preprocess, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, tuple[str, ...]] | DataError:
        path = self.files.path(i)
        try:
            image, notes = readers.decode_image(path, str(path), self.files.resize)
        except DataError as e:  # returned whole: a DataLoader re-raises a worker's error as
            return e  # a new one holding its traceback text (:func:`_collate` raises it)
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        if self.preprocess is not None:
            return self.preprocess.fit(x[None])[0], int(self.files.labels[i]), notes
        if self.channels == 1:
            x = (x * torch.tensor(LUMA_WEIGHTS).view(3, 1, 1)).sum(0, keepdim=True)
        x = x.double().flatten(1)
        return torch.stack([x.sum(1), x.square().sum(1)]), x.shape[1], notes


def _collate(items: list[tuple[torch.Tensor, int, tuple[str, ...]] | DataError]
             ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, ...]]] | DataError:
    """A batch, or the first item's error (raised by :func:`_batches_of` in the caller)."""
    failed = [item for item in items if isinstance(item, DataError)]
    if failed:
        return failed[0]
    done = [item for item in items if not isinstance(item, DataError)]
    return (torch.stack([x for x, _, _ in done]), torch.tensor([y for _, y, _ in done]),
            [n for _, _, n in done])


def _batches_of(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                      list[tuple[str, ...]]]]:
    """The batches of ``loader``; a file that would not decode raises its own DataError."""
    for batch in loader:
        if isinstance(batch, DataError):
            raise batch
        yield batch


class _Batches(torch.utils.data.Sampler[list[int]]):
    """``order`` in consecutive runs of ``batch_size``."""

    def __init__(self, order: np.ndarray, batch_size: int) -> None:
        self.order, self.batch_size = order, batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.order), self.batch_size):
            yield self.order[i : i + self.batch_size].tolist()


@dataclass(frozen=True, eq=False)
class ImageFiles(ImageSet):
    """A split read from image files below ``base`` (``paths``: relative POSIX paths), decoded
    per batch by data-loader workers. ``resize``: every image is first resized and centre
    cropped to ``resize`` x ``resize`` (sets that mix sizes, e.g. Textures at 32)."""

    base: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    name: str
    split: str
    source: str
    resize: int | None = None
    notes: tuple[str, ...] = ()
    seen: Counter[str] = field(default_factory=Counter, compare=False)
    _memo: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.paths),):
            raise DataError(f"{self.name}: labels must be int64 of shape ({len(self.paths)},), "
                            f"got {self.labels.dtype} {self.labels.shape}")

    def path(self, i: int) -> Path:
        """The file of image ``i``."""
        return self.base / self.paths[i]

    @property
    def shape(self) -> tuple[int, int, int] | None:
        return (self.resize, self.resize, 3) if self.resize else None

    def subset(self, index: np.ndarray, split: str) -> ImageFiles:
        return replace(self, paths=tuple(self.paths[i] for i in index),
                       labels=self.labels[index], split=split, seen=Counter())

    def _fingerprint(self, store: Path | None) -> str:
        h = hashlib.sha256(content_fingerprint([self.path(i) for i in range(len(self))],
                                               self.base, self.labels, store).encode())
        h.update(f"|resize={self.resize}".encode())
        return h.hexdigest()

    def _loader(self, dataset: Dataset, order: np.ndarray, batch_size: int,
                workers: int | str, pin: bool) -> DataLoader:
        count = min(loader_workers(workers), max(1, len(order) // max(batch_size, 1)))
        return DataLoader(dataset, batch_sampler=_Batches(order, batch_size),
                          num_workers=count if len(order) > batch_size else 0,
                          collate_fn=_collate, pin_memory=pin,
                          persistent_workers=False)

    def batches(self, preprocess: Preprocess, batch_size: int, device: torch.device,
                order: np.ndarray | None = None, workers: int | str = "auto",
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = np.arange(len(self)) if order is None else np.asarray(order)
        loader = self._loader(_Decoding(self, preprocess), order, batch_size, workers,
                              pin=device.type == "cuda")
        for x, y, notes in _batches_of(loader):
            self._tally(notes)
            yield preprocess.finish(x, device), y

    def _tally(self, notes: Sequence[tuple[str, ...]]) -> None:
        for item in notes:
            self.seen.update(item)

    def conversions(self) -> tuple[str, ...]:
        """What decoding did so far (by passes over this set), with counts, for a note."""
        return tuple(f"{note} ({n} decodes of {len(self)} images)" for note, n in self.seen.items())

    def channel_stats(self, channels: int, workers: int | str = "auto"
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if not len(self):
            raise ValueError("channel_stats needs at least one image")
        total = torch.zeros(2, 1 if channels == 1 else 3, dtype=torch.float64)
        count = 0
        loader = self._loader(_Decoding(self, None, channels), np.arange(len(self)), 256,
                              workers, pin=False)
        for moments, pixels, _ in _batches_of(loader):
            total += moments.sum(0)
            count += int(pixels.sum())
        mean = total[0] / count
        std = (total[1] / count - mean**2).clamp_min(0).sqrt()
        if channels == 3 and len(mean) == 1:
            mean, std = mean.repeat(3), std.repeat(3)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def describe(arr: ImageSet) -> dict[str, Any]:
    """Size, shape (``None``: sizes vary) and source of a set (and, for files, what decoding
    did to them so far), for manifests."""
    info: dict[str, Any] = {"n": len(arr), "shape": list(arr.shape) if arr.shape else None,
                            "source": arr.source}
    if isinstance(arr, ImageFiles):
        info["decoded"] = list(arr.conversions())
    return info
