"""Deploying a scorer: :class:`Detector` fits one on a model's ID-train inputs, scores new
inputs, and saves its fitted state as safetensors + JSON (no pickle)::

    det = Detector(model, "knn", k=10).fit(train_loader)   # (x, y) batches, preprocessed
    scores = det(x)                                        # float64, higher = more ID
    det.save("detector")
    det = Detector.load("detector", model)

Passes run as oodbench's extraction runs them (:func:`oodbench.extract.prepare_model`: an eval
copy of the model in its memory format, channels-last unless a layer hits oneDNN #6035, under
``torch.inference_mode``; a :class:`~oodbench.scoring.ModelScorer` with gradients, batch by
batch), so a detector's scores equal the pipeline's on the same images. The user's model is
never changed.

A saved folder holds ``scorer.safetensors`` (every fitted tensor or array,
:meth:`~oodbench.scoring.Scorer.fitted_state`) and ``detector.json`` (the scorer's name and
parameters, its other fitted values, the library versions, the SHA-256 of the safetensors file
and of the model's weights). :meth:`Detector.load` refuses another model, a changed or broken
file, and an unknown scorer.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from oodbench.adapters import ModelAdapter, adapt
from oodbench.check import check_scorer
from oodbench.device import resolve_device
from oodbench.errors import CheckpointError, ConfigError
from oodbench.extract import batch_scores, forward_pass, prepare_model, weights_fingerprint
from oodbench.fileio import atomic_write_bytes, atomic_write_text
from oodbench.layout import MemoryFormat
from oodbench.provenance import library_versions
from oodbench.registry import qualified
from oodbench.scoring import Features, Head, MapScorer, ModelScorer, as_scores

__all__ = ["META_FILE", "STATE_FILE", "Detector"]

STATE_FILE = "scorer.safetensors"
META_FILE = "detector.json"
FORMAT = 1  # the layout of detector.json

TrainData = Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor]
_META_KEYS: dict[str, type | tuple[type, ...]] = {
    "format": int, "scorer": str, "params": dict, "pixel_std": (list, type(None)),
    "fitted": dict, "numpy": list, "sha256": dict, "model": dict}


class Detector:
    """A scorer fitted on one model: ``det(x)`` scores a batch of preprocessed inputs.

    ``model`` is any ``nn.Module`` :func:`~oodbench.adapters.adapt` takes (or an adapter);
    ``scorer`` a registered scorer's name and ``params`` its parameters, checked here (a
    :class:`ConfigError`). ``pixel_std``, the per-channel std of the preprocessing, sets the
    input step of a model scorer (ODIN) in pixel units; it defaults to the adapter's own.
    """

    _layout: MemoryFormat  # the memory format of the prepared copy's passes, set with it

    def __init__(self, model: nn.Module, scorer: str, *,
                 pixel_std: Sequence[float] | None = None, **params: Any) -> None:
        self.adapter = adapt(model)
        self.scorer = check_scorer(scorer, params)
        if pixel_std is None and self.adapter.preprocess_config is not None:
            pixel_std = self.adapter.preprocess_config.std
        if pixel_std is None and isinstance(self.scorer, ModelScorer):
            raise ConfigError(f"scorer {scorer!r} steps the inputs in pixel units and needs "
                              "<pixel_std>", "pass the per-channel std of the preprocessing "
                              "(Preprocess.std)")
        self.pixel_std = None if pixel_std is None else [float(s) for s in pixel_std]
        self.batch_size = 256
        self.device = torch.device("cpu")
        self.fingerprint = ""
        self._net: ModelAdapter | None = None

    @property
    def name(self) -> str:
        """The scorer's registry name."""
        return self.scorer.name

    def __repr__(self) -> str:
        return f"Detector({type(self.adapter).__name__}, {self.scorer!r})"

    def fit(self, train_data: TrainData, batch_size: int = 256,
            device: str | torch.device | None = None) -> Self:
        """Fit the scorer on one pass over ``train_data`` (a Dataset or DataLoader of
        ``(x, y)``, or an ``(x, y)`` tensor pair), on ``device`` (``None``: CUDA if present)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"<batch_size>: must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self._prepare(device)
        train = self._features(_batches(train_data, batch_size))
        self.scorer.fit(train, Head.from_linear(self._model().fc))
        # hold the state as it is saved and loaded (contiguous, on the CPU): a loaded
        # detector then computes with the same memory layout and scores bit-identically
        self.scorer.load_fitted_state(_stored_form(self.scorer.fitted_state()))
        return self

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """Float64 scores of a batch of preprocessed inputs, higher = more in-distribution."""
        net, x = self._model(), torch.as_tensor(x)
        if not len(x):
            return np.zeros(0)
        if not isinstance(self.scorer, ModelScorer):
            raw = self.scorer.score(self._features(_batches((x, None), self.batch_size)))
            return as_scores(self.scorer, raw, "x")
        std = torch.tensor(self.pixel_std, dtype=torch.float32, device=self.device)
        return batch_scores(net, self._layout, self.scorer,
                            (chunk.to(self.device) for chunk in x.split(self.batch_size)),
                            std.view(1, -1, 1, 1), "x")

    def save(self, folder: Path | str) -> Path:
        """Write ``scorer.safetensors`` and ``detector.json`` into ``folder``; returns it."""
        self._model()
        folder = Path(folder)
        state = _stored_form(self.scorer.fitted_state())
        arrays = {k: v for k, v in state.items() if isinstance(v, torch.Tensor | np.ndarray)}
        data = safetensors.torch.save({k: torch.as_tensor(v) for k, v in arrays.items()})
        meta = {"format": FORMAT, "scorer": self.name, "params": self.scorer.get_params(),
                "pixel_std": self.pixel_std,
                "fitted": {k: v for k, v in state.items() if k not in arrays},
                "numpy": sorted(k for k, v in arrays.items() if isinstance(v, np.ndarray)),
                "sha256": {STATE_FILE: hashlib.sha256(data).hexdigest()},
                "model": {"class": qualified(type(self.adapter)),
                          "weights_sha256": self.fingerprint},
                "versions": library_versions()}
        text = json.dumps(meta, indent=2, sort_keys=True)
        atomic_write_bytes(folder / STATE_FILE, data)  # the .json last: it marks the save done
        atomic_write_text(folder / META_FILE, text)
        return folder

    @classmethod
    def load(cls, folder: Path | str, model: nn.Module,
             device: str | torch.device | None = None) -> Detector:
        """The detector saved in ``folder`` for ``model`` (the same weights), on ``device``."""
        folder = Path(folder)
        meta_path = folder / META_FILE
        meta = _read_meta(meta_path)
        try:
            det = cls(model, meta["scorer"], pixel_std=meta["pixel_std"], **meta["params"])
        except ConfigError as e:
            raise ConfigError(f"{meta_path}: {e.message}", e.hint) from None
        det._prepare(device)
        saved = meta["model"].get("weights_sha256")
        if det.fingerprint != saved:
            raise CheckpointError(
                f"{meta_path} was fitted on a model with other weights (sha256 "
                f"{str(saved)[:12]}..., this model's {det.fingerprint[:12]}...)",
                "pass the model the detector was fitted on, or fit a new detector")
        state_path = folder / STATE_FILE
        state = _read_state(state_path, meta, meta_path)
        try:
            det.scorer.load_fitted_state(state | meta["fitted"])
            det._check_fitted()
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{state_path} does not fit scorer {det.name!r}: {e}",
                                  "save the detector again") from e
        return det

    def _check_fitted(self) -> None:
        """ValueError unless the scorer's fitted state suits this model: its own checks
        (:meth:`~oodbench.scoring.Scorer.check_fitted`), then, for a scorer of pooled features,
        two made-up samples scored without error (so a state that passed them but cannot
        score fails here, not on the user's first batch)."""
        fc = self._model().fc
        n_dims = fc.weight.shape[1]
        self.scorer.check_fitted(n_dims)
        if isinstance(self.scorer, ModelScorer | MapScorer):
            return
        with torch.no_grad():
            probe = torch.ones(2, n_dims, device=fc.weight.device, dtype=fc.weight.dtype)
            logits = fc(probe)
        features = Features(probe.float().cpu(), logits.float().cpu(), torch.full((2,), -1))
        try:
            self.scorer.score(features)
        except Exception as e:
            raise ValueError(f"scoring {n_dims}-dimensional features with it raises "
                             f"{type(e).__name__}: {e}") from e

    def _prepare(self, device: str | torch.device | None) -> None:
        """Copy the model for passes on ``device`` and fingerprint its weights."""
        self.device = resolve_device(None if device is None else str(device))
        self._net, self._layout = prepare_model(self.adapter, self.device)
        self.fingerprint = weights_fingerprint(self._net)

    def _model(self) -> ModelAdapter:
        if self._net is None or not self.fingerprint:
            raise RuntimeError("the detector is not fitted; call fit() or Detector.load()")
        return self._net

    def _features(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> Features:
        """Pooled features (a :class:`MapScorer`'s reduction of the feature map for one),
        logits and labels of one pass over ``batches``, by :func:`~oodbench.extract.
        forward_pass`."""
        first = next(batches, None)
        if first is None:
            raise ConfigError("<train_data> holds no samples")
        labels: list[torch.Tensor] = []

        def inputs() -> Iterator[torch.Tensor]:
            for x, y in itertools.chain([first], batches):
                labels.append(y)
                yield x

        reduce = self.scorer.reduce if isinstance(self.scorer, MapScorer) else None
        feats, logits = forward_pass(self._model(), self._layout, inputs(), self.device,
                                     reduce=reduce)
        return Features(feats, logits, torch.cat(labels))


def _batches(data: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, labels)`` batches of a Dataset, a DataLoader or an ``(x, y)`` pair (``y`` None:
    labels -1)."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        labels = (torch.full((len(x),), -1, dtype=torch.long) if y is None
                  else torch.as_tensor(y, dtype=torch.long).reshape(len(x)))
        yield from zip(x.split(batch_size), labels.split(batch_size), strict=True)
        return
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size)
    if not isinstance(data, DataLoader):
        raise ConfigError(f"<train_data> is a {type(data).__name__}",
                          "give a torch Dataset or DataLoader of (x, y), or an (x, y) pair of "
                          "tensors")
    for item in data:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ConfigError("<train_data> must yield (x, y) pairs, got a "
                              f"{type(item).__name__}")
        x, y = item
        yield x, torch.as_tensor(y, dtype=torch.long).reshape(len(x))


def _stored_form(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its tensors and arrays as they are stored: contiguous CPU copies."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
            if isinstance(v, torch.Tensor) else np.array(v, order="C")
            if isinstance(v, np.ndarray) else v for k, v in state.items()}


def _read_meta(path: Path) -> dict[str, Any]:
    """``detector.json``, its keys checked; a missing or broken file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist",
                              "pass the folder that Detector.save wrote")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); save the detector again") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds a {type(meta).__name__}, not a detector's table")
    for key, kind in _META_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: key {key!r} is missing or of the wrong type "
                                  f"({meta.get(key)!r}); save the detector again")
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{path} has format {meta['format']}; this oodbench reads "
                              f"format {FORMAT}")
    return meta


def _read_state(path: Path, meta: dict[str, Any], meta_path: Path) -> dict[str, Any]:
    """The fitted arrays of ``scorer.safetensors``, checked against the hash ``meta`` records."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, but {meta_path} records it",
                              "copy the whole folder that Detector.save wrote")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["sha256"].get(STATE_FILE):
        raise CheckpointError(f"{path} differs from the file {meta_path} records (sha256): it "
                              "is corrupt or from another save", "save the detector again")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own SafetensorError on a broken header
        raise CheckpointError(f"{path} is not a safetensors file ({e})") from e
    return {k: v.numpy() if k in meta["numpy"] else v for k, v in tensors.items()}
