"""Checkpoints: a state_dict plus JSON metadata, written atomically.

File layout: ``NAME.safetensors`` holds the weights, with the metadata as JSON in its header
(:data:`oodbench.weights.META_KEY`); ``NAME.json`` is a human-readable copy of the metadata.
Checkpoints of older versions, ``NAME.pt`` holding ``{"state_dict": ..., "meta": "<json>"}``,
load too (with ``weights_only``), and so does a plain state_dict (a user's own model), given
the architecture and the number of classes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from oodbench.adapters import ModelAdapter
from oodbench.errors import CheckpointError
from oodbench.fileio import atomic_write_bytes
from oodbench.models import create_model
from oodbench.weights import META_KEY, load_into, read_checkpoint

__all__ = ["SUMMARY_KEYS", "load_checkpoint", "save_checkpoint"]

# the metadata an oodbench checkpoint carries (written by oodbench.train): the model
# ("arch", "widths", "num_classes", "in_channels", "image_size"), its data ("benchmark",
# "id_dataset", "id_source", "normalisation", "preprocess"), its training ("training",
# "objective", "objective_params", "train", "seed", "epochs", "init", "device",
# "world_size" (its processes; absent before DDP), "memory_format" (channels-last or
# contiguous and why, oodbench.layout; absent before it), "train_stats"), results on the ID set
# ("test_acc", "val_acc", and "diagnostics": every objective diagnostic measured on the ID
# test set, as "<name>_test"), and provenance ("config_hash", "versions", "code"). These are
# the keys a manifest records per checkpoint:
SUMMARY_KEYS = ("config_hash", "test_acc", "val_acc", "diagnostics", "objective",
                "objective_params", "init", "memory_format", "train_stats")


def save_checkpoint(path: Path, model: ModelAdapter, meta: dict[str, Any]) -> Path:
    """Save weights and metadata atomically, as ``.safetensors`` (or, for a ``.pt`` path, the
    older torch.save layout); also writes ``path.with_suffix('.json')``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    if path.suffix.lower() == ".safetensors":
        data = safetensors_save(state, metadata={META_KEY: text})
    else:
        buf = io.BytesIO()
        torch.save({"state_dict": state, "meta": text}, buf)
        data = buf.getvalue()
    # the .json first: the weights file is what marks the checkpoint done, so a kill between
    # the two never leaves a reused checkpoint without its readable metadata
    atomic_write_bytes(path.with_suffix(".json"), text.encode())
    atomic_write_bytes(path, data)
    return path


def load_checkpoint(
    path: Path | str,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    widths: tuple[int, ...] | None = None,
) -> tuple[ModelAdapter, dict[str, Any]]:
    """Build the model a checkpoint describes (or the one given) and load its weights."""
    state, meta = read_checkpoint(path)
    arch = arch or meta.get("arch")
    num_classes = num_classes or meta.get("num_classes")
    in_channels = in_channels or meta.get("in_channels")
    if arch is None or num_classes is None or in_channels is None:
        raise CheckpointError(
            f"{path} is a plain state_dict",
            "pass the architecture, number of classes and input channels (<arch>, "
            "<num_classes>, <in_channels>)"
        )
    widths = widths or tuple(meta.get("widths", ())) or None
    kwargs: dict[str, Any] = {"widths": tuple(widths)} if widths else {}
    model = create_model(arch, num_classes, in_channels, **kwargs)
    load_into(model, state, path)
    model.eval()
    return model, meta
