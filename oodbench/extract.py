"""Feature extraction with an on-disk cache: one forward pass per (checkpoint, dataset).

Each entry holds the pooled penultimate features, the logits and the labels of one dataset
under one checkpoint; the scores of a model-level scorer (which needs its own passes, e.g. with
input gradients) are cached beside them, keyed also by the scorer's name and parameters.

The key combines the checkpoint's hash, the dataset's name and split, the
preprocessing and a hash of the image bytes, so a changed checkpoint, preprocessing or data file
gets a fresh pass while an unchanged one is read back without touching the model. An entry is
computed under its claim (:func:`oodbench.lock.claim`), so processes sharing a runs folder
compute each entry once: the others wait for it and read it back.

Passes run under ``torch.inference_mode`` with the model and its input in the model's memory
format (:func:`prepare_model`: channels-last unless a layer hits oneDNN #6035). On CUDA they
use autocast (bfloat16 where supported, else float16; ``amp=False`` turns it off; such entries
get their own key), pinned memory and non-blocking copies. The batch size is a number or
``"auto"``: the largest power of two whose layer outputs fit in a quarter of the free memory
and, on the CPU, whose largest layer fits in half the last-level cache (see
:func:`auto_batch_size`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from oodbench.adapters import ModelAdapter
from oodbench.data import ImageSet, Preprocess
from oodbench.fileio import atomic_write_bytes
from oodbench.layout import MemoryFormat, model_format
from oodbench.lock import claim, unless_done
from oodbench.progress import ProgressCallback, console, no_progress
from oodbench.scoring import Features, MapScorer, ModelScorer, Scorer, as_scores

T = TypeVar("T", Features, np.ndarray)
M = TypeVar("M", bound=ModelAdapter)

def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over a model's state_dict (names, dtypes, shapes and bytes): the cache key of a
    model that has no checkpoint file."""
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# "auto" batch sizes. Everywhere: the layer outputs of a batch fit in MEMORY_FRACTION of the
# free memory. On the CPU also: the largest layer's input + output for a batch fit in
# CACHE_FRACTION of the last-level cache; past that, a pass runs at memory bandwidth (the
# batch-size measurements are in benchmarks/profile.md).
MEMORY_FRACTION = 0.25
CACHE_FRACTION = 0.5
DEFAULT_CACHE = 8 * 2**20  # when the cache size cannot be read
MAX_AUTO_BATCH = {"cpu": 512, "cuda": 4096}
MIN_AUTO_BATCH = 16


def available_memory(device: torch.device) -> int:
    """Free bytes for ``device``: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def last_level_cache() -> int:
    """Bytes of the CPU's largest data cache (Linux sysfs), else ``DEFAULT_CACHE``."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() not in ("Data", "Unified"):
                continue
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=DEFAULT_CACHE)


def prepare_model(model: M, device: torch.device) -> tuple[M, MemoryFormat]:
    """A copy of ``model`` in eval mode on ``device`` in its memory format, and that format,
    which a pass gives its batches (:func:`oodbench.layout.model_format`: channels-last, the
    layout preprocessed batches have and the faster one for convolutions on CPU and GPU,
    unless a layer hits oneDNN #6035). The caller's model is left as it was (mode, device,
    memory format)."""
    layout = model_format(model)
    return copy.deepcopy(model).eval().to(device).to(memory_format=layout.torch), layout


def activation_bytes(model: ModelAdapter, preprocess: Preprocess,
                     device: torch.device) -> tuple[int, int]:
    """Per image: (bytes of every layer's output and the input, about what a pass with input
    gradients keeps; bytes of the largest single layer's input + output)."""
    total, largest = 0, 0

    def count(_: torch.nn.Module, args: Any, out: Any) -> None:
        nonlocal total, largest
        if isinstance(out, torch.Tensor):
            size = out.numel() * out.element_size()
            total += size
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            largest = max(largest, size + sum(a.numel() * a.element_size() for a in inputs))

    probe = np.zeros((2, preprocess.size, preprocess.size, preprocess.channels), np.uint8)
    # outside inference_mode: weights converted inside it would become inference tensors,
    # which a later pass with gradients (a ModelScorer) cannot use
    model, _ = prepare_model(model, device)
    leaves = [m for m in model.modules() if not any(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.inference_mode():
            model.forward_all(preprocess(probe, device))
    finally:
        for h in handles:
            h.remove()
    return total // 2 + probe[0].size * 4, largest // 2


def auto_batch_size(model: ModelAdapter, preprocess: Preprocess, device: torch.device) -> int:
    """The largest power of two of images whose layer outputs fit in ``MEMORY_FRACTION`` of
    the free memory and, on the CPU, whose largest layer fits in ``CACHE_FRACTION`` of the
    last-level cache; between ``MIN_AUTO_BATCH`` and the device's ``MAX_AUTO_BATCH``."""
    total, largest = activation_bytes(model, preprocess, device)
    fits = MEMORY_FRACTION * available_memory(device) / total
    if device.type == "cpu":
        fits = min(fits, CACHE_FRACTION * last_level_cache() / largest)
    cap = MAX_AUTO_BATCH.get(device.type, MAX_AUTO_BATCH["cpu"])
    return max(MIN_AUTO_BATCH, min(cap, 2 ** max(0, int(fits).bit_length() - 1)))


def resolve_batch_size(setting: int | str, model: ModelAdapter, preprocess: Preprocess,
                       device: torch.device) -> int:
    """``setting`` itself, or :func:`auto_batch_size` for ``"auto"``."""
    return auto_batch_size(model, preprocess, device) if setting == "auto" else int(setting)


def extraction_autocast(device: torch.device, amp: bool) -> AbstractContextManager[Any]:
    """Autocast for extraction passes: on CUDA when ``amp`` (bfloat16 where supported)."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def batches(
    arr: ImageSet,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int,
    progress: ProgressCallback | None,
    desc: str,
    workers: int | str = "auto",
) -> Iterator[torch.Tensor]:
    """Preprocessed batches of ``arr`` on ``device`` (file sets decoded by ``workers``
    data-loader processes), each reported to ``progress`` as done once the caller has it."""
    report, done = progress or no_progress, 0
    report(desc, done, len(arr))
    for x, _ in arr.batches(preprocess, batch_size, device, workers=workers):
        yield x
        done += len(x)
        report(desc, done, len(arr))


def forward_pass(
    model: ModelAdapter,
    layout: MemoryFormat,
    inputs: Iterable[torch.Tensor],
    device: torch.device,
    amp: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 CPU pooled features (or ``reduce(fmap)``, a :class:`~oodbench.scoring.
    MapScorer`'s reduction of the feature map) and logits of one pass of a prepared model
    (:func:`prepare_model`) over preprocessed batches ``inputs``."""
    feats, logits = [], []
    with torch.inference_mode(), extraction_autocast(device, amp):
        for x in inputs:
            fmap, f, z = model.forward_all(layout.batch(x.to(device, non_blocking=True)))
            if reduce is not None:
                f = reduce(fmap.float())
            feats.append(f.float().to("cpu", non_blocking=True))
            logits.append(z.float().to("cpu", non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return torch.cat(feats), torch.cat(logits)


def batch_scores(model: ModelAdapter, layout: MemoryFormat, scorer: ModelScorer,
                 inputs: Iterable[torch.Tensor], std: torch.Tensor, what: str) -> np.ndarray:
    """A fitted :class:`ModelScorer`'s scores of preprocessed batches ``inputs`` (already on
    the prepared model's device), gradients enabled; ``what`` names them in errors."""
    out = []
    for x in inputs:
        with torch.enable_grad():
            scores = scorer.score_batch(model, layout.batch(x), std)
        out.append(as_scores(scorer, scores, what))
    return np.concatenate(out) if out else np.zeros(0)


def forward_features(
    model: ModelAdapter,
    arr: ImageSet,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 512,
    progress: ProgressCallback | None = None,
    amp: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    workers: int | str = "auto",
) -> Features:
    """One streamed forward pass over ``arr``: pooled features (or ``reduce(fmap)``, a
    :class:`~oodbench.scoring.MapScorer`'s reduction of the feature map), logits, labels."""
    model, layout = prepare_model(model, device)
    feats, logits = forward_pass(model, layout, batches(
        arr, preprocess, device, batch_size, progress, f"extract {arr.name}/{arr.split}",
        workers), device, amp, reduce)
    return Features(feats, logits, torch.as_tensor(arr.labels, dtype=torch.long))


def model_scores(
    model: ModelAdapter,
    scorer: ModelScorer,
    arr: ImageSet,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 512,
    progress: ProgressCallback | None = None,
    workers: int | str = "auto",
) -> np.ndarray:
    """Run a fitted :class:`ModelScorer` over ``arr`` in batches (gradients enabled)."""
    model, layout = prepare_model(model, device)
    std = torch.tensor(preprocess.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    what = f"{arr.name}/{arr.split}"
    return batch_scores(model, layout, scorer, batches(
        arr, preprocess, device, batch_size, progress, f"{scorer.name} {what}", workers),
        std, what)


class FeatureCache:
    """Cache of :class:`Features` under ``root/<checkpoint hash>/<dataset>-<split>-<key>.npz``
    (no ``root``: nothing stored, every pass computed; :func:`oodbench.evaluate`'s default).

    ``amp`` allows autocast for passes on CUDA; ``workers`` data-loader processes decode
    file-backed sets (whose content manifests are kept under ``root/content``). ``extraction``
    records, per device, the batch size used (and how "auto" chose it) and the memory format
    (and why), for the manifest.
    """

    def __init__(self, root: Path | str | None, amp: bool = True,
                 workers: int | str = "auto") -> None:
        self.root = Path(root) if root is not None else None
        self.amp = amp
        self.workers = workers
        self.hits = 0
        self.misses = 0
        self.extraction: dict[str, dict[str, Any]] = {}

    def batch_size(self, setting: int | str, model: ModelAdapter, preprocess: Preprocess,
                   device: torch.device) -> int:
        """The batch size for a pass of ``model`` on ``device`` ("auto" resolved by a cheap
        probe each time: a cached object id could outlive its model), recorded with the
        pass's memory format."""
        batch = resolve_batch_size(setting, model, preprocess, device)
        self.extraction[str(device)] = {"batch_size": batch, "setting": setting,
                                        "amp": self._amp(device), "inference_mode": True,
                                        "memory_format": model_format(model).to_dict()}
        return batch

    def fingerprint(self, arr: ImageSet) -> str:
        """The content hash of ``arr`` (a file set's manifest kept under ``root/content``)."""
        return arr.fingerprint(self.root / "content" if self.root is not None else None)

    def _amp(self, device: torch.device) -> bool:
        return self.amp and device.type == "cuda"

    def path(
        self, ckpt_hash: str, arr: ImageSet, preprocess: Preprocess, scorer: str = "",
        amp: bool = False, suffix: str = ".npy",
    ) -> Path:
        """Where the entry for this checkpoint, dataset and preprocessing (and scorer, given
        as ``name(params json)``: a model scorer's scores, ``.npy``, or a map scorer's
        features, ``.npz``; and autocast) lives."""
        key = hashlib.sha256(f"{preprocess.key()}|{self.fingerprint(arr)}".encode()).hexdigest()
        stem = f"{arr.name}-{arr.split}-{key[:16]}"
        root = self.root if self.root is not None else Path()  # unused without a root
        amp_tag = "-amp" if amp else ""
        if scorer:
            tag = hashlib.sha256(scorer.encode()).hexdigest()[:12]
            return root / ckpt_hash[:16] / f"{stem}-{scorer.split('(')[0]}-{tag}{amp_tag}{suffix}"
        return root / ckpt_hash[:16] / f"{stem}{amp_tag}.npz"

    def scores(
        self,
        model: ModelAdapter,
        ckpt_hash: str,
        scorer: ModelScorer,
        arr: ImageSet,
        preprocess: Preprocess,
        device: torch.device,
        batch_size: int | str = "auto",
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Read the cached scores of a model-level scorer, or compute and store them."""
        path = self.path(ckpt_hash, arr, preprocess, _scorer_tag(scorer))
        # "auto" sizes for every layer output held at once, as a pass with gradients does
        return self._once(path, lambda: model_scores(
            model, scorer, arr, preprocess, device,
            self.batch_size(batch_size, model, preprocess, device), progress, self.workers),
            partial(_load_scores, n=len(arr)))

    def get(
        self,
        model: ModelAdapter,
        ckpt_hash: str,
        arr: ImageSet,
        preprocess: Preprocess,
        device: torch.device,
        batch_size: int | str = "auto",
        progress: ProgressCallback | None = None,
        map_scorer: MapScorer | None = None,
    ) -> Features:
        """Read the cached features, or run the forward pass once and store them; with a
        ``map_scorer``, its reduction of the feature map in place of the pooled features
        (an entry of its own, keyed also by the scorer and its parameters)."""
        amp = self._amp(device)
        tag = _scorer_tag(map_scorer) if map_scorer is not None else ""
        path = self.path(ckpt_hash, arr, preprocess, tag, amp=amp, suffix=".npz")
        return self._once(path, lambda: forward_features(
            model, arr, preprocess, device, self.batch_size(batch_size, model, preprocess, device),
            progress, amp, map_scorer.reduce if map_scorer is not None else None, self.workers),
            partial(_load_features, n=len(arr)))

    def _once(self, path: Path, compute: Callable[[], T], load: Callable[[Path], T]) -> T:
        """``load(path)`` if the entry exists (or its claim's holder made it), else
        ``compute()``, stored at ``path`` under the entry's claim (a hit or a miss); without a
        ``root``, always computed and never stored. An entry that does not load whole
        (:data:`_UNREADABLE`: truncated, damaged, another set's size) is computed again
        under its claim, with a note."""
        if self.root is None:
            self.misses += 1
            return compute()
        with unless_done(path) as missing:
            if missing:
                return self._store(path, compute)
        try:
            out = load(path)
        except _UNREADABLE as e:
            with claim(path):
                try:  # another process may have replaced it meanwhile
                    out = load(path)
                except _UNREADABLE:
                    console.print(f"note: the feature cache entry {path} is computed again: "
                                  f"{type(e).__name__}: {e}", markup=False, soft_wrap=True,
                                  highlight=False)
                    return self._store(path, compute)
        self.hits += 1
        return out

    def _store(self, path: Path, compute: Callable[[], T]) -> T:
        """``compute()`` (a miss), written to ``path``."""
        self.misses += 1
        out = compute()
        atomic_write_bytes(path, _dump(out))
        return out


def _scorer_tag(scorer: Scorer) -> str:
    """A scorer's part of a cache key: ``name(params json)``."""
    return f"{scorer.name}({json.dumps(scorer.get_params(), sort_keys=True, default=str)})"


def _dump(out: Features | np.ndarray) -> bytes:
    """A cache entry's bytes: ``.npz`` of a pass's arrays, or ``.npy`` of model scores."""
    buf = io.BytesIO()
    if isinstance(out, Features):
        np.savez(buf, features=out.features.numpy(), logits=out.logits.numpy(),
                 labels=out.labels.numpy())
    else:
        np.save(buf, out)
    return buf.getvalue()


# what reading a damaged cache entry raises (np.load: zip errors, a short array, a bad header)
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def _load_features(path: Path, n: int) -> Features:
    """A cached pass of ``n`` images; ValueError when the entry is not one."""
    with np.load(path) as z:
        out = Features(torch.from_numpy(z["features"]), torch.from_numpy(z["logits"]),
                       torch.from_numpy(z["labels"]))
    rows = {len(out.features), len(out.logits), len(out.labels)}
    if rows != {n} or out.features.ndim != 2 or out.logits.ndim != 2:
        raise ValueError(f"holds arrays of {sorted(rows)} rows, not {n} images")
    dtypes = (out.features.dtype, out.logits.dtype, out.labels.dtype)
    if dtypes != (torch.float32, torch.float32, torch.int64):  # what a pass writes
        raise ValueError(f"holds features, logits and labels of {', '.join(map(str, dtypes))}, "
                         "not float32, float32 and int64")
    return out


def _load_scores(path: Path, n: int) -> np.ndarray:
    """Cached model scores of ``n`` images; ValueError when the entry is not one."""
    out = np.load(path)
    if out.shape != (n,) or out.dtype != np.float64:  # model_scores gives float64
        raise ValueError(f"holds an array of shape {out.shape} and {out.dtype}, not {n} float64 "
                         "scores")
    return out
