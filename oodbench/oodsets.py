"""The OOD sets a command scores: the benchmark's, its ``extra_ood`` entries and a caller's
extra folders, each converted to the ID input (with one note), and the validation OOD sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from oodbench.config import Benchmark, ConfigError, OODSpec, check_name
from oodbench.data import DatasetUnavailable, ImageSet, load_dataset, load_image_list, load_path
from oodbench.data.preprocess import conversion_note
from oodbench.errors import DataError
from oodbench.progress import console


@dataclass
class OODSets:
    """The OOD test sets that loaded here, their groups, and the ones skipped (with why)."""

    sets: dict[str, ImageSet] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_ood_sets(
    bench: Benchmark,
    data_root: Path | str | None = None,
    extra: Mapping[str, Path | str] | None = None,
    download: bool = False,
) -> OODSets:
    """Load the benchmark's OOD sets, its ``extra_ood`` entries, and ``extra`` (name -> image
    folder or ``.npz``, group ``extra``)."""
    out = OODSets()
    shape = (bench.image_size, bench.image_size, bench.channels)
    for spec in bench.ood:
        try:
            out.sets[spec.name] = (
                load_image_list(spec.name, spec.imglist, spec.images, data_root) if spec.imglist
                else load_dataset(spec.name, "test", data_root, download=download,
                                  image_shape=shape))
            out.groups[spec.name] = spec.group
        except DatasetUnavailable as e:
            out.skipped[spec.name] = str(e)
    user = [*bench.extra_ood,
            *(OODSpec(name=check_name(n, "extra OOD set name"), group="extra", path=str(p))
              for n, p in (extra or {}).items())]
    for spec in user:
        if spec.name in out.sets or spec.name in out.skipped or spec.name == bench.id_dataset:
            raise ConfigError(f"extra OOD set name {spec.name!r} clashes with a set of the "
                              f"benchmark {bench.name!r}", "give it another name")
        out.sets[spec.name] = load_path(Path(spec.path), spec.name)
        out.groups[spec.name] = spec.group
    for name, arr in out.sets.items():
        if len(arr) == 0:
            raise DataError(f"OOD set {name!r} ({arr.source}) holds no images",
                            "give it at least one image or leave it out")
        steps = [*arr.notes, conversion_note(arr.shape, bench.image_size, bench.channels)]
        note = "; ".join(step for step in steps if step)
        if note:
            console.print(f"note: OOD set {name!r} is converted to the ID input "
                          f"{shape[0]}x{shape[1]}x{shape[2]}: {note}", markup=False,
                          soft_wrap=True)
    return out


def load_val_ood(bench: Benchmark, data_root: Path | str | None = None,
                 download: bool = False) -> OODSets:
    """The benchmark's validation OOD sets (used to select, never to report)."""
    shape = (bench.image_size, bench.image_size, bench.channels)
    return OODSets({n: load_dataset(n, "test", data_root, download=download, image_shape=shape)
                    for n in bench.val_ood}, dict.fromkeys(bench.val_ood, "val"))
