"""Smoke test of the OpenOOD-layout fixture trees (tests/openood_fixture.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from tests.openood_fixture import LISTS, build_image_folder, build_openood_tree, data_dir

LINE = re.compile(r"^(\S+) (-1|\d+)$")


@pytest.mark.parametrize("bench", sorted(LISTS))
def test_every_listed_path_exists(tmp_path: Path, bench: str) -> None:
    root = tmp_path / "data"
    written = build_openood_tree(root, bench, classes=2, per_class=2, ood_per_set=3,
                                 grey_fraction=0.5)
    assert set(written) == set(LISTS[bench])
    modes, sizes = set(), set()
    for stem, path in written.items():
        assert path == root / "benchmark_imglist" / bench / f"{stem}.txt"
        lines = path.read_text().splitlines()
        assert lines and path.read_text().endswith("\n")
        labels = set()
        for line in lines:
            match = LINE.match(line)
            assert match, f"{path}: {line!r}"
            rel, label = match[1], int(match[2])
            labels.add(label)
            image_path = root / data_dir(bench, stem) / rel
            assert image_path.is_file(), image_path
            with Image.open(image_path) as image:
                modes.add(image.mode)
                sizes.add(image.size)
                expected = "PNG" if rel.endswith(".png") else "JPEG"
                assert image.format == expected, image_path
        id_list = not stem.startswith("val_") or stem == f"val_{bench}"
        id_list = id_list and not any(stem == f"test_{s}" for s in _ood_sets(bench))
        assert labels == ({0, 1} if id_list else {-1}), stem
    assert "RGB" in modes
    if bench.startswith("imagenet"):
        assert "L" in modes and len(sizes) > 3  # greyscale JPEGs, sizes that need resizing
    rels = [line.split(" ")[0] for p in written.values() for line in p.read_text().split("\n")
            if line]
    if bench == "imagenet":
        assert any(re.fullmatch(r"imagenet_1k/val/ILSVRC2012_val_\d{8}\.JPEG", r) for r in rels)
        assert any(re.fullmatch(r"imagenet_1k/train/(n\d{8})/\1_\d+\.JPEG", r) for r in rels)
    if bench == "cifar10":
        assert "cifar10/test/airplane/0001.png" in rels


def _ood_sets(bench: str) -> set[str]:
    """The OOD sets of ``bench`` (every ``test_`` list that is not ID or covariate-shifted)."""
    stems = {s.removeprefix("test_") for s in LISTS[bench] if s.startswith("test_")}
    return {s for s in stems if s != bench and not s.startswith(("imagenet_", "imagenet200_"))}


def test_trees_are_deterministic(tmp_path: Path) -> None:
    a = build_openood_tree(tmp_path / "a", "imagenet200", classes=2, per_class=1,
                           ood_per_set=2, seed=3)
    b = build_openood_tree(tmp_path / "b", "imagenet200", classes=2, per_class=1,
                           ood_per_set=2, seed=3)
    for stem in a:
        assert a[stem].read_text() == b[stem].read_text()
        rel = a[stem].read_text().split(" ")[0]
        folder = data_dir("imagenet200", stem)
        assert ((tmp_path / "a" / folder / rel).read_bytes()
                == (tmp_path / "b" / folder / rel).read_bytes())


def test_image_folder(tmp_path: Path) -> None:
    root = build_image_folder(tmp_path / "folder", 10, size=16, classes=3)
    files = sorted(root.rglob("*.png"))
    assert len(files) == 10 and {f.parent.name for f in files} == {"class0", "class1", "class2"}
    with Image.open(files[0]) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
