"""Tiny data trees in OpenOOD v1.5's on-disk layout, and large image folders, for tests.

OpenOOD's download script writes ``benchmark_imglist/<benchmark>/<list>.txt`` beside the image
folders ``images_classic/`` (the CIFAR family, and Textures for every benchmark) and
``images_largescale/`` (the ImageNet family). Each list line is ``relative/path label`` (one
space), the path relative to the image folder that ``DATA_INFO`` names for that list. The list
names per benchmark are those of ``DATA_INFO`` in OpenOOD v1.5's
``openood/evaluation_api/datasets.py`` (:data:`LISTS` here).

Line patterns. Confirmed from public sources:

- ``cifar10/test/airplane/0298.png 0``: CIFAR images in class-name folders, numbered per class
  from ``0001``; OpenOOD's val split is a held-out part of the CIFAR test set, so ``val_*`` and
  ``test_*`` lines both point into ``<cifar>/test/`` (disjoint numbers here);
- ``imagenet_1k/train/n01443537/n01443537_10007.JPEG 0`` and a flat
  ``imagenet_1k/val/ILSVRC2012_val_00036290.JPEG`` (no class folder) for val and test;
- OOD lists carry label ``-1`` on every line (OpenOOD issue #283);
- Textures are DTD's JPEGs, ``texture/banded/banded_0002.jpg``, at their own sizes.

Plausible, not confirmed (the file names follow the source datasets' own naming): ``tin/``,
``mnist/`` (greyscale), ``svhn/``, ``places365/``, ``ssb_hard/<wnid>/<wnid>_<n>.JPEG``,
``ninco/<class>/<class>_<n>_<id>.jpeg``, ``inaturalist/images/<md5>.jpg``,
``openimage_o/images/<16 hex>.jpg``, ``imagenet_v2/<class>/<sha1>.jpeg``,
``imagenet_r/<wnid>/<style>_<n>.jpg`` and ``imagenet_c/<corruption>/<severity>/<wnid>/
ILSVRC2012_val_<n>.JPEG``; the covariate-shifted ID lists (``*_v2``, ``*_c``, ``*_r``) carry the
ID labels. The CIFAR-100 class names and wnids are real ones, not necessarily OpenOOD's order.

Images are small, deterministic by seed (each file's content depends only on ``seed`` and its
path), and coloured by class so that a tiny net can learn something: PNG for the CIFAR family
(32 px), JPEG for the ImageNet family and Textures (random sizes of 40 to 72 px, so resizing is
exercised, and a ``grey_fraction`` of the ImageNet-family files saved as mode ``"L"`` JPEGs, as
a few ImageNet files are).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

CLASSIC, LARGESCALE = "images_classic", "images_largescale"
BENCHMARKS = ("cifar10", "cifar100", "imagenet200", "imagenet")
_OOD_CLASSIC = ("tin", "mnist", "svhn", "texture", "places365")
_OOD_LARGE = ("ssb_hard", "ninco", "inaturalist", "textures", "openimage_o")
LISTS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train_cifar10", "val_cifar10", "test_cifar10", "val_tin", "test_cifar100",
                *(f"test_{s}" for s in _OOD_CLASSIC)),
    "cifar100": ("train_cifar100", "val_cifar100", "test_cifar100", "val_tin", "test_cifar10",
                 *(f"test_{s}" for s in _OOD_CLASSIC)),
    "imagenet200": ("train_imagenet200", "val_imagenet200", "test_imagenet200",
                    "val_openimage_o", *(f"test_{s}" for s in _OOD_LARGE),
                    "test_imagenet200_v2", "test_imagenet200_c", "test_imagenet200_r"),
    "imagenet": ("train_imagenet", "val_imagenet", "test_imagenet", "val_openimage_o",
                 *(f"test_{s}" for s in _OOD_LARGE),
                 "test_imagenet_v2", "test_imagenet_c", "test_imagenet_r"),
}
"""The image lists of each benchmark (file stems under ``benchmark_imglist/<benchmark>/``)."""

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR100_CLASSES = ("apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
                    "bicycle", "bottle")
IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
                  "n01496331", "n01498041", "n01514668", "n01514859", "n01518878")
IMAGENET200_WNIDS = ("n01443537", "n01484850", "n01494475", "n01498041", "n01514859",
                     "n01518878", "n01531178", "n01534433", "n01614925", "n01616318")
_DTD = ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered")
_SSB_WNIDS = ("n00470682", "n04542943", "n03003091", "n09421951")
_NINCO = ("amphiuma_means", "caracal", "ice", "sloth")
_IMAGENET_C = (("gaussian_noise", 3), ("defocus_blur", 5), ("snow", 1), ("jpeg_compression", 2))
_IMAGENET_R = ("art", "cartoon", "painting", "sketch")
_PALETTE = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 210, 30),
                     (200, 40, 210), (30, 210, 210), (240, 140, 20), (120, 120, 120),
                     (255, 255, 255), (20, 20, 20)])


def data_dir(bench: str, stem: str) -> str:
    """The image folder (``images_classic`` or ``images_largescale``) that list ``stem`` of
    ``bench`` is relative to, as ``DATA_INFO`` gives it."""
    if bench.startswith("cifar") or stem == "test_textures":
        return CLASSIC
    return LARGESCALE


def _names(base: tuple[str, ...], classes: int, make: Callable[[int], str]) -> list[str]:
    """``classes`` names: ``base`` first, then made-up ones."""
    return [base[c] if c < len(base) else make(c) for c in range(classes)]


def _colour(label: int) -> np.ndarray:
    if label < len(_PALETTE):
        return _PALETTE[label]
    return np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])


def _image(rng: np.random.Generator, label: int | None, size: tuple[int, int],
           block: int = 1) -> Image.Image:
    """An RGB image (``size`` is W x H): class colour plus noise, or for ``label=None`` (OOD)
    a random colour with stronger noise and a darker half. ``block``: the noise comes in
    ``block`` x ``block`` squares (PNGs that encode faster and smaller)."""
    w, h = size
    if label is None:
        colour, spread = rng.integers(0, 256, 3), 70
    else:
        colour, spread = _colour(label), 30
    pixels = colour + rng.integers(-spread, spread + 1, (-(-h // block), -(-w // block), 3))
    if block > 1:
        pixels = np.repeat(np.repeat(pixels, block, 0), block, 1)[:h, :w]
    if label is None:
        pixels[:, : w // 2] //= 2
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


class _Writer:
    """Writes the images of one tree; every file's content depends on ``seed`` and its path."""

    def __init__(self, root: Path, seed: int, large_sizes: bool, grey_fraction: float,
                 size: int) -> None:
        self.root, self.seed, self.grey_fraction, self.size = root, seed, grey_fraction, size
        self.large_sizes = large_sizes

    def __call__(self, images: str, rel: str, label: int | None, *, grey: bool | None = None,
                 own_size: bool = False) -> str:
        """Write ``images/rel`` (PNG or JPEG by suffix); ``grey=None``: by ``grey_fraction``
        for the ImageNet family, colour otherwise. Returns ``rel``."""
        rng = np.random.default_rng([self.seed, zlib.crc32(f"{images}/{rel}".encode())])
        varied = self.large_sizes or own_size
        size = (tuple(int(v) for v in rng.integers(40, 73, 2)) if varied
                else (self.size, self.size))
        image = _image(rng, label, size)
        if grey is None:
            grey = self.large_sizes and bool(rng.random() < self.grey_fraction)
        if grey:
            image = image.convert("L")
        path = self.root / images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            image.save(path, compress_level=1)
        else:
            image.save(path, format="JPEG", quality=90)
        return rel


def _hexname(*parts: object, length: int) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:length]


def _cifar_lines(write: _Writer, bench: str, classes: int, per_class: int,
                 ) -> dict[str, list[str]]:
    """The ID lists of a CIFAR benchmark: train from ``<bench>/train``, val and test from
    ``<bench>/test`` (numbered per class from 0001)."""
    names = _names(CIFAR10_CLASSES if bench == "cifar10" else CIFAR100_CLASSES, classes,
                   lambda c: f"class_{c}")
    out: dict[str, list[str]] = {}
    numbers = {"train": [0] * classes, "test": [0] * classes}
    for split in ("train", "val", "test"):
        folder = "train" if split == "train" else "test"
        lines = []
        for label, name in enumerate(names):
            for _ in range(per_class):
                numbers[folder][label] += 1
                rel = f"{bench}/{folder}/{name}/{numbers[folder][label]:04d}.png"
                lines.append(f"{write(CLASSIC, rel, label)} {label}")
        out[f"{split}_{bench}"] = lines
    return out


def _cifar_ood(write: _Writer, bench: str, n: int) -> dict[str, list[str]]:
    """The OOD lists of a CIFAR benchmark (label -1)."""
    other = "cifar100" if bench == "cifar10" else "cifar10"
    other_names = CIFAR10_CLASSES if other == "cifar10" else CIFAR100_CLASSES
    paths: dict[str, list[tuple[str, dict[str, bool]]]] = {
        f"test_{other}": [(f"{other}/test/{other_names[k % 3]}/{k // 3 + 1:04d}.png", {})
                          for k in range(n)],
        "val_tin": [(f"tin/val/{IMAGENET_WNIDS[k % 3]}/val_{k}.png", {}) for k in range(n)],
        "test_tin": [(f"tin/test/{IMAGENET_WNIDS[k % 3]}/val_{1000 + k}.png", {})
                     for k in range(n)],
        "test_mnist": [(f"mnist/test/{k % 10}/{k:05d}.png", {"grey": True}) for k in range(n)],
        "test_svhn": [(f"svhn/test/{k:05d}.png", {}) for k in range(n)],
        "test_texture": [(_texture(k), {"own_size": True}) for k in range(n)],
        "test_places365": [(f"places365/test/Places365_val_{k + 1:08d}.png", {})
                           for k in range(n)],
    }
    return {stem: [f"{write(CLASSIC, rel, None, **kw)} -1" for rel, kw in rels]
            for stem, rels in paths.items()}


def _texture(k: int) -> str:
    name = _DTD[k % len(_DTD)]
    return f"texture/{name}/{name}_{k // len(_DTD) + 1:04d}.jpg"


def _imagenet_lines(write: _Writer, bench: str, classes: int, per_class: int
                    ) -> dict[str, list[str]]:
    """The ID and covariate-shifted ID lists of an ImageNet benchmark."""
    wnids = _names(IMAGENET_WNIDS if bench == "imagenet" else IMAGENET200_WNIDS, classes,
                   lambda c: f"n{99_000_000 + c:08d}")
    tag = "imagenet" if bench == "imagenet" else "imagenet200"
    val_number = 0
    out: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        lines = []
        for label, wnid in enumerate(wnids):
            for k in range(per_class):
                if split == "train":
                    rel = f"imagenet_1k/train/{wnid}/{wnid}_{10_000 + 37 * k}.JPEG"
                else:
                    val_number += 1
                    rel = f"imagenet_1k/val/ILSVRC2012_val_{val_number:08d}.JPEG"
                lines.append(f"{write(LARGESCALE, rel, label)} {label}")
        out[f"{split}_{bench}"] = lines
    shifted: dict[str, Callable[[int, str, int], str]] = {
        "v2": lambda label, wnid, k: (f"imagenet_v2/{label}/"
                                      f"{_hexname('v2', wnid, k, length=40)}.jpeg"),
        "c": lambda label, wnid, k: ("imagenet_c/{}/{}/{}/ILSVRC2012_val_{:08d}.JPEG".format(
            *_IMAGENET_C[k % len(_IMAGENET_C)], wnid, 40_000 + 97 * label + k)),
        "r": lambda label, wnid, k: (f"imagenet_r/{wnid}/"
                                     f"{_IMAGENET_R[k % len(_IMAGENET_R)]}_{k}.jpg"),
    }
    for suffix, path in shifted.items():
        out[f"test_{tag}_{suffix}"] = [
            f"{write(LARGESCALE, path(label, wnid, k), label)} {label}"
            for label, wnid in enumerate(wnids) for k in range(per_class)]
    return out


def _imagenet_ood(write: _Writer, n: int) -> dict[str, list[str]]:
    """The OOD lists of an ImageNet benchmark (label -1); Textures are under images_classic."""
    def ssb(k: int) -> str:
        wnid = _SSB_WNIDS[k % len(_SSB_WNIDS)]
        return f"ssb_hard/{wnid}/{wnid}_{1000 + k}.JPEG"

    def ninco(k: int) -> str:
        name = _NINCO[k % len(_NINCO)]
        return f"ninco/{name}/{name}_{k:03d}_{10_000_000 + 7919 * k}.jpeg"

    def openimage(k: int) -> str:
        return f"openimage_o/images/{_hexname('oi', k, length=16)}.jpg"

    lists = {
        "val_openimage_o": [openimage(k) for k in range(n)],
        "test_ssb_hard": [ssb(k) for k in range(n)],
        "test_ninco": [ninco(k) for k in range(n)],
        "test_inaturalist": [f"inaturalist/images/{_hexname('inat', k, length=32)}.jpg"
                             for k in range(n)],
        "test_openimage_o": [openimage(n + k) for k in range(n)],
    }
    out = {stem: [f"{write(LARGESCALE, rel, None)} -1" for rel in rels]
           for stem, rels in lists.items()}
    out["test_textures"] = [f"{write(CLASSIC, _texture(k), None, grey=False)} -1"
                            for k in range(n)]
    return out


def build_openood_tree(root: Path, bench: str, *, classes: int = 3, per_class: int = 4,
                       ood_per_set: int = 6, size: int = 32, seed: int = 0,
                       grey_fraction: float = 0.25) -> dict[str, Path]:
    """Write every image list of OpenOOD v1.5's ``bench`` (``cifar10``, ``cifar100``,
    ``imagenet200`` or ``imagenet``) and the images they name under ``root``; returns list
    stem (``"test_ssb_hard"``) -> list file. ID lists hold ``per_class`` images of each of
    ``classes`` classes (labels ``0..classes-1``), OOD lists ``ood_per_set`` images (label
    -1). ``size``: the side of the CIFAR-family PNGs (ImageNet-family JPEGs and Textures get
    random sizes of 40 to 72 px); ``grey_fraction``: the share of ImageNet-family JPEGs saved
    greyscale."""
    if bench not in LISTS:
        raise ValueError(f"unknown OpenOOD benchmark {bench!r}; one of {sorted(LISTS)}")
    large = bench.startswith("imagenet")
    write = _Writer(root, seed, large, grey_fraction, size)
    if large:
        lists = {**_imagenet_lines(write, bench, classes, per_class),
                 **_imagenet_ood(write, ood_per_set)}
    else:
        lists = {**_cifar_lines(write, bench, classes, per_class),
                 **_cifar_ood(write, bench, ood_per_set)}
    assert sorted(lists) == sorted(LISTS[bench]), sorted(set(lists) ^ set(LISTS[bench]))
    out = {}
    for stem in LISTS[bench]:
        path = root / "benchmark_imglist" / bench / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in lists[stem]))
        out[stem] = path
    return out


def _folder_part(args: tuple[Path, int, int, int, int, int]) -> None:
    root, start, stop, size, seed, classes = args
    for i in range(start, stop):
        rng = np.random.default_rng((seed, i))
        label = i % classes
        _image(rng, label, (size, size), block=4).save(
            root / f"class{label}" / f"{i:05d}.png", compress_level=1)


def build_image_folder(root: Path, n: int, size: int = 32, seed: int = 0, classes: int = 4
                       ) -> Path:
    """An image folder of ``n`` PNG images (``size`` x ``size``, ``class<k>/<i>.png``, class
    colour plus 4 x 4-pixel noise) in ``classes`` class sub-folders, written by two processes
    when ``n`` is large (20,000 at 72 px: about 10 s on two cores); returns ``root``."""
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    step = 2000
    parts = [(root, i, min(n, i + step), size, seed, classes) for i in range(0, n, step)]
    if len(parts) <= 1:
        for part in parts:
            _folder_part(part)
        return root
    with Pool(2) as pool:
        pool.map(_folder_part, parts)
    return root
