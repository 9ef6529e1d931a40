"""Tiny data trees in OpenOOD v1.5's layout, and large image folders, for tests.

OpenOOD's download script writes ``benchmark_imglist/<benchmark>/<list>.txt`` (one
``relative/path label`` line per image, the path relative to ``images_classic/`` or
``images_largescale/``) beside those two image folders; the list names per benchmark are
``DATA_INFO`` of ``openood/evaluation_api/datasets.py`` (OpenOOD v1.5). The image paths below
follow OpenOOD's patterns (``cifar10/test/airplane/0001.png``,
``imagenet_1k/val/n01440764/ILSVRC2012_val_00000293.JPEG``, ``ssb_hard/<wnid>/<file>.JPEG``),
with made-up file numbers; OOD lines carry label -1. Images are small, deterministic by seed,
and coloured by class so a tiny net can learn something.
"""

from __future__ import annotations

from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

CLASSIC, LARGESCALE = "images_classic", "images_largescale"
_CIFAR_OOD = {"tin": "tin/test", "mnist": "mnist/test", "svhn": "svhn/test",
              "texture": "texture/banded", "places365": "places365/abbey"}
_IMAGENET_OOD = {"ssb_hard": (LARGESCALE, "ssb_hard/n00000001"),
                 "ninco": (LARGESCALE, "ninco/NINCO_OOD_classes/Ice"),
                 "inaturalist": (LARGESCALE, "inaturalist/images"),
                 "textures": (CLASSIC, "texture/banded"),
                 "openimage_o": (LARGESCALE, "openimage_o/images")}
_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475")


def _image(rng: np.random.Generator, label: int, size: tuple[int, int], grey: bool
           ) -> Image.Image:
    colour = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256])
    noise = rng.integers(-40, 41, (*size, 3))
    image = Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))
    return image.convert("L") if grey else image


def _write(root: Path, images: str, rel: str, image: Image.Image) -> str:
    path = root / images / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return rel


def build_openood_tree(root: Path, bench: str, *, classes: int = 3, per_class: int = 4,
                       ood_per_set: int = 6, seed: int = 0, grey_fraction: float = 0.25
                       ) -> dict[str, Path]:
    """Write the image lists and images of OpenOOD's ``bench`` (``cifar10``, ``cifar100``,
    ``imagenet200`` or ``imagenet``) under ``root``; returns list name -> list file."""
    rng = np.random.default_rng(seed)
    lists: dict[str, list[str]] = {}
    large = bench.startswith("imagenet")

    def size() -> tuple[int, int]:
        return (int(rng.integers(40, 73)), int(rng.integers(40, 73))) if large else (32, 32)

    def grey() -> bool:
        return bool(rng.random() < grey_fraction) and large

    suffix = "JPEG" if large else "png"
    if large:
        id_sets = {"train": "imagenet_1k/train", "val": "imagenet_1k/val",
                   "test": "imagenet_1k/val"}
    else:
        id_sets = {s: f"{bench}/{'train' if s == 'train' else 'test'}" for s in
                   ("train", "val", "test")}
    counter = 0
    for split, folder in id_sets.items():
        lines = []
        for label in range(classes):
            for _ in range(per_class):
                counter += 1
                if large:
                    wnid = _WNIDS[label % len(_WNIDS)]
                    name = (f"{wnid}_{counter}.{suffix}" if split == "train"
                            else f"ILSVRC2012_val_{counter:08d}.{suffix}")
                    rel = f"{folder}/{wnid}/{name}"
                else:
                    rel = f"{folder}/class{label}/{counter:04d}.{suffix}"
                image = _image(rng, label, size(), grey())
                lines.append(f"{_write(root, LARGESCALE if large else CLASSIC, rel, image)} "
                             f"{label}")
        lists[f"{split}_{bench}"] = lines
    if large:
        oods = dict(_IMAGENET_OOD)
        csid = ("v2", "c", "r") if bench == "imagenet" else ("200_v2", "200_c", "200_r")
        for tag in csid:
            key = f"test_imagenet{'_' + tag if bench == 'imagenet' else tag}"
            lines = []
            for label in range(classes):
                counter += 1
                rel = f"imagenet_{tag.split('_')[-1]}/{_WNIDS[label]}/{counter}.{suffix}"
                image = _image(rng, label, size(), False)
                lines.append(f"{_write(root, LARGESCALE, rel, image)} {label}")
            lists[key] = lines
        val_ood = {"val_openimage_o": (LARGESCALE, "openimage_o/val")}
    else:
        other = "cifar100" if bench == "cifar10" else "cifar10"
        oods = {other: (CLASSIC, f"{other}/test"),
                **{k: (CLASSIC, v) for k, v in _CIFAR_OOD.items()}}
        val_ood = {"val_tin": (CLASSIC, "tin/val")}
    for name, (images, folder) in {**{f"test_{k}": v for k, v in oods.items()},
                                   **val_ood}.items():
        lines = []
        for _ in range(ood_per_set):
            counter += 1
            image = _image(rng, 1000 + counter, size(), grey())
            lines.append(f"{_write(root, images, f'{folder}/{counter}.{suffix}', image)} -1")
        lists[name] = lines
    out = {}
    for name, lines in lists.items():
        path = root / "benchmark_imglist" / bench / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        out[name] = path
    return out


def _folder_part(args: tuple[Path, int, int, int, int, int]) -> None:
    root, start, stop, size, seed, classes = args
    for i in range(start, stop):
        rng = np.random.default_rng((seed, i))
        label = i % classes
        image = _image(rng, label, (size, size), False)
        folder = root / f"class{label}"
        image.save(folder / f"{i:05d}.png", compress_level=1)


def build_image_folder(root: Path, n: int, size: int = 32, seed: int = 0, classes: int = 4
                       ) -> Path:
    """An image folder of ``n`` PNG images (``size`` x ``size``) in ``classes`` class
    sub-folders, written by two processes."""
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    parts = [(root, i, min(n, i + 2000), size, seed, classes) for i in range(0, n, 2000)]
    with Pool(2) as pool:
        pool.map(_folder_part, parts)
    return root
