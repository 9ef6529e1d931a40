"""The dataset registry: the catalogue (names, splits, the ordered sources each is loaded from)
and plugin datasets, all in :data:`DATASETS`.

A plugin registers a factory, called as ``factory(split, data_root)``, with ``split`` one of
the ``splits`` it was registered with and ``data_root`` the resolved data root (an absolute
``Path``, an existing folder unless ``download`` is set) or ``None``; it returns an
:class:`~oodbench.data.imageset.ImageSet` (an :class:`ImageArray` in memory or streamed
:class:`~oodbench.data.imageset.ImageFiles`), whose ``name`` and ``split``
:func:`load_dataset` sets to the requested ones::

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
without it :func:`dataset_status` loads the set to find out. A :class:`DatasetDef` (the class
every catalogue dataset is an instance of: its splits, :meth:`~DatasetDef.status` and
:meth:`~DatasetDef.load`) may be registered in place of a factory.
Installed packages register datasets through the entry-point group ``oodbench.datasets``.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oodbench.data import readers
from oodbench.data.imageset import ImageArray, ImageSet
from oodbench.data.sources import (
    DATA_ENV,
    SPLITS,
    CifarBatches,
    Context,
    DownloadSource,
    Folder,
    Idx,
    ImageList,
    Missing,
    MnistCsv,
    Npz,
    PackageSource,
    RootSource,
    Source,
    SvhnMat,
    SystemSource,
    image_files,
    streamed,
)
from oodbench.errors import ConfigError, DataError, DatasetUnavailable, OodbenchError
from oodbench.registry import Registry, UnknownName, origin

NOISE_COUNT = 10_000
NOISE_SEED = 0
DEFAULT_NOISE_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a split is available here: where it loads from, else every source tried
    (``expected``: the path each needs, ``reasons``: why it failed, ``howto``: how to provide
    it) and notes on the set."""

    available: bool
    where: str = ""
    expected: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    howto: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def message(self, name: str, split: str) -> str:
        """The "not available" message listing each source."""
        lines = [f"dataset {name!r} (split {split!r}) is not available here.",
                 "Sources, in order:"]
        for i, (where, reason, howto) in enumerate(
                zip(self.expected, self.reasons, self.howto, strict=True), 1):
            lines += [f"  {i}. {where}", f"     failed: {reason}", f"     to use it: {howto}"]
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


class DatasetDef(ABC):
    """A dataset: the splits it has, whether each is available here (cheaply: nothing is
    decoded), and how to load it; ``splits`` (an attribute or field of each subclass) are the
    splits it has."""

    splits: tuple[str, ...]

    @abstractmethod
    def status(self, split: str, ctx: Context) -> DatasetStatus:
        """Whether ``split`` is available under ``ctx``."""

    @abstractmethod
    def load(self, name: str, split: str, ctx: Context, image_shape: tuple[int, int, int] | None,
             stream: bool | None) -> ImageSet:
        """Load ``split`` (``image_shape``: for synthetic sets; ``stream``: for file sets)."""


@dataclass(frozen=True)
class Catalogued(DatasetDef):
    """A dataset loaded from the first working source in ``sources``."""

    splits: tuple[str, ...]
    sources: tuple[Source, ...]
    notes: tuple[str, ...] = ()

    def _failed(self, ctx: Context, split: str, reasons: list[str]) -> DatasetStatus:
        return DatasetStatus(
            False, expected=tuple(f"{s.label()}: {s.where(ctx, split)}" for s in self.sources),
            reasons=tuple(reasons), howto=tuple(s.howto(ctx, split) for s in self.sources),
            notes=self.notes)

    def status(self, split: str, ctx: Context) -> DatasetStatus:
        reasons = []
        for source in self.sources:
            try:
                found = source.locate(ctx, split, quick=True)
            except Missing as missing:
                reasons.append(str(missing))
                continue
            return DatasetStatus(True, f"{source.label()}: {found.where}", notes=self.notes)
        return self._failed(ctx, split, reasons)

    def load(self, name: str, split: str, ctx: Context, image_shape: tuple[int, int, int] | None,
             stream: bool | None) -> ImageSet:
        """The split from the first source that is here and reads; an unreadable one is
        skipped with a warning when a later source works. Nothing here at all is
        ``DatasetUnavailable`` (a benchmark may skip such an OOD set); files that are here but
        unreadable (a corrupt file, a malformed image list) and no other source are a plain
        ``DataError`` naming the first of them: a benchmark must not drop the set silently."""
        reasons: list[str] = []
        unreadable: dict[Path, int] = {}  # where -> number of the source that failed to read it
        errors: list[tuple[Source, Path, DataError | OSError]] = []
        for number, source in enumerate(self.sources, 1):
            try:
                found = source.fetch(ctx, split)
            except Missing as missing:
                reasons.append(str(missing))
                continue
            if found.where in unreadable:
                reasons.append(f"same files as source {unreadable[found.where]}, unreadable")
                continue
            try:
                loaded = source.layout.load(found, split, name,
                                            f"{source.label()}: {found.where}", stream)
            except (DataError, OSError) as exc:
                unreadable[found.where] = number
                reasons.append(f"unreadable: {exc}")
                errors.append((source, found.where, exc))
                continue
            for skipped, where, error in errors:
                warnings.warn(f"{name}: skipping {skipped.label()} {where}: {error}",
                              stacklevel=6)
            return loaded
        if errors:
            first = errors[0][2]
            hint = first.hint if isinstance(first, DataError) else ""
            raise DataError(f"dataset {name!r} (split {split!r}): "
                            f"{getattr(first, 'message', first)}"
                            + (f" ({len(errors) - 1} more source(s) unreadable too)"
                               if len(errors) > 1 else ""),
                            hint or "replace or re-download that file")
        raise DatasetUnavailable(self._failed(ctx, split, reasons).message(name, split))


@dataclass(frozen=True)
class GreyView(DatasetDef):
    """A one-channel (BT.601 luma) view of another dataset (held in memory)."""

    base: str
    splits: tuple[str, ...] = ("test",)

    def status(self, split: str, ctx: Context) -> DatasetStatus:
        base = dataset_report(self.base, split, ctx.data_root)
        return replace(base, where=f"grey view of {self.base}: {base.where}" if base.available
                       else "")

    def load(self, name: str, split: str, ctx: Context, image_shape: tuple[int, int, int] | None,
             stream: bool | None) -> ImageSet:
        try:
            base = load_dataset(self.base, split, ctx.data_root, download=ctx.download,
                                stream=False)
        except DatasetUnavailable as exc:
            raise DatasetUnavailable(f"{name} is a grey view of {self.base}: {exc.message}",
                                     exc.hint) from None
        assert isinstance(base, ImageArray)
        return ImageArray(readers.to_gray(base.images), base.labels, name, split,
                          f"grey (BT.601 luma) view of {self.base} from {base.source}",
                          base.files, base.notes)


@dataclass(frozen=True)
class Noise(DatasetDef):
    """A synthetic noise set: ``gaussian`` (clipped N(0.5, 0.25)) or ``uniform`` over 0..255,
    ``NOISE_COUNT`` images with seed ``NOISE_SEED``."""

    kind: str
    splits: tuple[str, ...] = ("test",)

    def status(self, split: str, ctx: Context) -> DatasetStatus:
        return DatasetStatus(True, f"synthetic {self.kind} noise, seed={NOISE_SEED}")

    def load(self, name: str, split: str, ctx: Context, image_shape: tuple[int, int, int] | None,
             stream: bool | None) -> ImageSet:
        shape = image_shape or DEFAULT_NOISE_SHAPE
        if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
            raise ConfigError(f"image_shape must be (H, W, C) with C in {{1, 3}}, got {shape}")
        rng = np.random.default_rng(NOISE_SEED)
        if self.kind == "uniform":
            images = rng.integers(0, 256, size=(NOISE_COUNT, *shape), dtype=np.uint8)
        else:
            images = np.empty((NOISE_COUNT, *shape), dtype=np.uint8)
            for start in range(0, NOISE_COUNT, 1000):
                block = rng.standard_normal((min(1000, NOISE_COUNT - start), *shape),
                                            dtype=np.float32)
                images[start : start + len(block)] = np.rint(np.clip(block * 0.25 + 0.5, 0, 1)
                                                             * 255)
        return ImageArray(images, np.full(NOISE_COUNT, -1, dtype=np.int64), name, split,
                          f"synthetic {self.kind} noise seed={NOISE_SEED} shape={tuple(shape)}")


OPENOOD_SPLITS = ("train", "val", "test")
CLASSIC, LARGESCALE = "images_classic", "images_largescale"  # OpenOOD's image folders
IMGLIST = "benchmark_imglist"


def _openood_id(bench: str, stem: str, images: str) -> ImageList:
    """OpenOOD v1.5's ID lists ``benchmark_imglist/<bench>/{train,val,test}_<stem>.txt``."""
    return ImageList((f"{IMGLIST}/{bench}/{{split}}_{stem}.txt",), images, OPENOOD_SPLITS)


_NO_DOWNLOAD = ("there is no automatic download for this set",)
_CIFAR100 = CifarBatches("cifar-100-python", ("train",), ("test",), b"fine_labels")


_CATALOGUE: dict[str, DatasetDef] = {
    "fashion-mnist": Catalogued(
        SPLITS,
        (
            RootSource(Npz("fashion-mnist/{split}.npz")),
            RootSource(Idx("FashionMNIST/raw")),
            RootSource(Idx("fashion-mnist")),
            SystemSource(Idx("fashion-mnist"), hint="apt-get install dataset-fashion-mnist"),
            DownloadSource(Idx("FashionMNIST/raw"), torchvision="FashionMNIST"),
        ),
    ),
    "mnist": Catalogued(
        SPLITS,
        (
            RootSource(Npz("mnist/{split}.npz")),
            RootSource(Idx("mnist/raw")),
            RootSource(Idx("MNIST/raw")),
            PackageSource(MnistCsv()),
            DownloadSource(Idx("MNIST/raw"), torchvision="MNIST"),
        ),
    ),
    "cifar10": Catalogued(
        OPENOOD_SPLITS,
        (
            RootSource(_openood_id("cifar10", "cifar10", CLASSIC)),
            RootSource(Npz("cifar10/{split}.npz")),
            RootSource(CifarBatches()),
            DownloadSource(CifarBatches(), torchvision="CIFAR10"),
        ),
    ),
    "cifar100": Catalogued(
        OPENOOD_SPLITS,
        (
            RootSource(_openood_id("cifar100", "cifar100", CLASSIC)),
            RootSource(Npz("cifar100/{split}.npz")),
            RootSource(_CIFAR100),
            DownloadSource(_CIFAR100, torchvision="CIFAR100"),
        ),
    ),
    "svhn": Catalogued(
        SPLITS,
        (
            RootSource(Npz("svhn/{split}.npz")),
            RootSource(SvhnMat("svhn/{split}_32x32.mat")),
            RootSource(SvhnMat("{split}_32x32.mat")),
            DownloadSource(SvhnMat("{split}_32x32.mat"), torchvision="SVHN"),
        ),
    ),
    "tin": Catalogued(
        ("test",),
        (
            RootSource(Npz("tinyimagenet/val_resize32.npz", ("test",))),
            RootSource(Folder(("tin",))),
        ),
        ("Tiny ImageNet val, resized 64->32", *_NO_DOWNLOAD),
    ),
    "tin-resize": Catalogued(
        ("test",),
        (
            RootSource(Npz("tinyimagenet/test_resize32.npz", ("test",))),
            RootSource(Folder(("tin-resize", "Imagenet_resize"), classes=False)),
        ),
        ("Tiny ImageNet test resized to 32 (ODIN's Imagenet_resize)", *_NO_DOWNLOAD),
    ),
    "tin-crop": Catalogued(
        ("test",),
        (
            RootSource(Npz("tinyimagenet/test_crop32.npz", ("test",))),
            RootSource(Folder(("tin-crop", "Imagenet"), classes=False)),
        ),
        ("Tiny ImageNet test, random 32x32 crops (ODIN's Imagenet)", *_NO_DOWNLOAD),
    ),
    "textures-partial": Catalogued(
        ("test",),
        (
            RootSource(Npz("dtd_partial/test.npz", ("test",))),
            RootSource(Folder(("dtd_partial", "textures-partial"))),
        ),
        ("10 of the 47 DTD texture classes at 32x32", *_NO_DOWNLOAD),
    ),
    "textures": Catalogued(
        ("test",),
        (
            RootSource(Npz("textures/test.npz", ("test",))),
            RootSource(Folder(("textures",), size=32)),
            RootSource(Folder(("dtd/images", "dtd/dtd/images"), size=32)),
            DownloadSource(Folder(("dtd/dtd/images",), size=32), torchvision="DTD"),
        ),
        ("all 5,640 images of the 47 DTD texture classes, shorter side resized to 32, "
         "centre-cropped to 32x32",),
    ),
    "places365": Catalogued(
        ("test",),
        (
            RootSource(Npz("places365/test.npz", ("test",))),
            RootSource(Folder(("places365",), size=32)),
        ),
        ("OpenOOD's Places365 subset; larger images are resized and centre-cropped to 32x32",
         *_NO_DOWNLOAD),
    ),
    "lsun-crop": Catalogued(
        ("test",),
        (
            RootSource(Npz("lsun-crop/test.npz", ("test",))),
            RootSource(Folder(("lsun-crop", "LSUN"), classes=False)),
        ),
        ("LSUN test, random 32x32 crops (ODIN's LSUN)", *_NO_DOWNLOAD),
    ),
    "lsun-resize": Catalogued(
        ("test",),
        (
            RootSource(Npz("lsun-resize/test.npz", ("test",))),
            RootSource(Folder(("lsun-resize", "LSUN_resize"), classes=False)),
        ),
        ("LSUN test resized to 32 (ODIN's LSUN_resize)", *_NO_DOWNLOAD),
    ),
    "isun": Catalogued(
        ("test",),
        (
            RootSource(Npz("isun/test.npz", ("test",))),
            RootSource(Folder(("isun", "iSUN"), classes=False)),
        ),
        ("iSUN resized to 32 (ODIN's iSUN)", *_NO_DOWNLOAD),
    ),
    "imagenet200": Catalogued(
        OPENOOD_SPLITS,
        (RootSource(_openood_id("imagenet200", "imagenet200", LARGESCALE)),),
        ("OpenOOD v1.5's 200-class ImageNet subset (its image lists over ImageNet-1K's images)",),
    ),
    "imagenet1k": Catalogued(
        OPENOOD_SPLITS,
        (RootSource(_openood_id("imagenet", "imagenet", LARGESCALE)),
         RootSource(Folder(("imagenet/{split}",), splits=("train", "val"))),),
        ("ImageNet-1K (ILSVRC-2012) by OpenOOD v1.5's image lists, or class folders "
         "imagenet/{train,val}/<wnid>/ (torchvision's ImageFolder layout)",),
    ),
    "cifar10-gray": GreyView("cifar10"),
    "tin-gray": GreyView("tin"),
    "textures-gray": GreyView("textures-partial"),
    "gaussian-noise": Noise("gaussian"),
    "uniform-noise": Noise("uniform"),
}


DatasetFactory = Callable[..., ImageSet]
StatusHook = Callable[[str, Path | None], tuple[bool, str]]
F = TypeVar("F", bound=DatasetFactory)
PLUGIN_SPLITS = ("test",)  # what a registered factory provides unless it says otherwise


DATASETS: Registry[DatasetFactory] = Registry("dataset", fixed=("split", "data_root"))


class _Registered:
    """A :class:`DatasetDef` as the registry's factory ``(split, data_root, ...)``."""

    def __init__(self, name: str, definition: DatasetDef) -> None:
        self.name, self.definition = name, definition
        self.__doc__ = type(definition).__doc__
        self.__module__ = type(definition).__module__
        self.__qualname__ = f"{type(definition).__qualname__}[{name}]"

    @property
    def splits(self) -> tuple[str, ...]:
        return self.definition.splits

    def __call__(self, split: str, data_root: Path | None, download: bool = False,
                 image_shape: tuple[int, int, int] | None = None,
                 stream: bool | None = None) -> ImageSet:
        return self.definition.load(self.name, split, Context(data_root, download), image_shape,
                                    stream)

    def status(self, split: str, data_root: Path | None) -> DatasetStatus:
        return self.definition.status(split, Context(data_root, False))


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
        # what the catalogue reads off a user's factory, set on it (unknown to its type)
        factory.splits = tuple(splits)  # type: ignore[attr-defined]
        factory.status = status  # type: ignore[attr-defined]
        return factory

    return deco


def register_definition(name: str, definition: DatasetDef) -> None:
    """Register a :class:`DatasetDef` under ``name`` (its splits and status are its own)."""
    factory = _Registered(name, definition)
    DATASETS.check(name, factory)
    DATASETS.register(name)(factory)


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


def _context(data_root: Path | str | None, download: bool) -> Context:
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
    return Context(root, download)


def dataset_report(
    name: str, split: str = "test", data_root: Path | str | None = None
) -> DatasetStatus:
    """Whether ``name``/``split`` is available here, as a :class:`DatasetStatus`: where it
    would load from, or every source with the path it needs and how to provide it.

    Catalogue datasets only look for their files; a plugin dataset without a ``status`` hook
    is loaded to find out.
    """
    factory = _factory(name, split)
    root = _context(data_root, download=False).data_root
    status = getattr(factory, "status", None)
    if isinstance(factory, _Registered):
        return factory.status(split, root)
    if status is not None:
        ok, detail = status(split, root)
        return DatasetStatus(True, detail) if ok else DatasetStatus(
            False, expected=(origin(factory),), reasons=(detail,), howto=(detail,))
    try:
        return DatasetStatus(True, load_dataset(name, split, root).source)
    except OodbenchError as e:
        return DatasetStatus(False, expected=(origin(factory),), reasons=(str(e),),
                             howto=(str(e),))


def dataset_status(
    name: str, split: str = "test", data_root: Path | str | None = None
) -> tuple[bool, str]:
    """Whether ``name``/``split`` is available here: ``(True, where it would load from)`` or
    ``(False, why not and how to get it)``, the message :func:`load_dataset` would raise."""
    report = dataset_report(name, split, data_root)
    if report.available:
        return True, report.where
    factory = DATASETS.get(name)
    if isinstance(factory, _Registered):
        return False, str(DatasetUnavailable(report.message(name, split)))
    return False, report.reasons[0]


for _name, _spec in _CATALOGUE.items():
    register_definition(_name, _spec)


def load_dataset(
    name: str,
    split: str = "test",
    data_root: Path | str | None = None,
    *,
    download: bool = False,
    image_shape: tuple[int, int, int] | None = None,
    stream: bool | None = None,
) -> ImageSet:
    """Load a registered dataset: a catalogue one from its first working source, or a plugin's.

    ``data_root`` defaults to ``$OODBENCH_DATA`` (:func:`resolve_data_root`); ``download``,
    ``image_shape`` (H, W, C) and ``stream`` reach the factories that take them (the
    catalogue's ``image_shape`` sizes the synthetic noise sets only; ``stream`` streams image
    files from disk, or decodes them into memory; by default folders of more than
    ``STREAM_ABOVE`` files and image lists stream). Raises ``DatasetUnavailable`` listing
    every way to get it.
    """
    factory = _factory(name, split)
    ctx = _context(data_root, download)
    offered: dict[str, Any] = {"download": download, "image_shape": image_shape,
                               "stream": stream}
    accepted = DATASETS.params(name)
    arr = factory(split, ctx.data_root, **{k: v for k, v in offered.items() if k in accepted})
    if not isinstance(arr, ImageSet):
        raise TypeError(f"dataset {name!r} ({origin(factory)}) returned "
                        f"{type(arr).__name__}, not an ImageSet")
    return arr if (arr.name, arr.split) == (name, split) else replace(arr, name=name, split=split)


def load_path(path: Path | str, name: str, stream: bool | None = None) -> ImageSet:
    """Load a user's own set (``extra_ood``: name -> path): an image folder (streamed when it
    holds more than ``STREAM_ABOVE`` files, or as ``stream`` says) or an ``.npz``."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = readers.image_files(path)
        source = f"image folder {path}"
        if files and streamed(stream, len(files)):
            return image_files(path, files, readers.folder_labels(path, files), name, "test",
                               source)
        decoded = readers.read_image_files(path, files)
    elif path.is_file() and path.suffix.lower() == ".npz":
        files, decoded, source = (path,), readers.read_npz(path), f"npz {path}"
    else:
        what = "does not exist" if not path.exists() else "is neither a folder nor a .npz file"
        raise DataError(f"OOD set {name!r}: {path} {what}",
                        "give an image folder or an .npz file")
    return ImageArray(decoded.images, decoded.labels, name, "test", source, files, decoded.notes)


def image_list_def(imglist: str, images: str, note: str = "") -> Catalogued:
    """An image list below the data root (``imglist``: the list file, ``images``: the folder
    its paths are relative to) as a dataset of one ``test`` split."""
    return Catalogued(("test",), (RootSource(ImageList((imglist,), images)),),
                      (note,) if note else ())


def load_image_list(name: str, imglist: str, images: str,
                    data_root: Path | str | None = None) -> ImageSet:
    """Load an image list below the data root as the set ``name`` (streamed; raises
    ``DatasetUnavailable`` naming the paths it needs)."""
    return image_list_def(imglist, images).load(
        name, "test", _context(data_root, False), None, None)


def image_list_status(imglist: str, images: str,
                      data_root: Path | str | None = None) -> DatasetStatus:
    """Whether the image list is available under the data root (nothing is read)."""
    return image_list_def(imglist, images).status(
        "test", _context(data_root, False))
