"""Weights from files: oodbench checkpoints and plain state_dicts (``.pt``, read with
``weights_only``) or ``.safetensors``, refused when they hold NaN or inf, and loaded into a model
with mismatches named. The bottom of the model layers: :mod:`oodbench.modelref`,
:mod:`oodbench.models` and :mod:`oodbench.checkpoint` build on it.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from oodbench.compat import upgrade_meta
from oodbench.errors import CheckpointError

__all__ = ["META_KEY", "first_non_finite", "load_into", "read_checkpoint", "read_weights"]

M = TypeVar("M", bound=nn.Module)

_MATCHING = ("matching <arch>, <num_classes> and <in_channels>, or the <benchmark> (widths) "
             "it was trained with")

META_KEY = "oodbench"  # the safetensors metadata entry that holds a checkpoint's JSON metadata


def read_checkpoint(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (state_dict, meta): a ``.safetensors`` file (oodbench's checkpoints keep their
    metadata in its header under :data:`META_KEY`), else a ``.pt`` with ``weights_only=True``;
    meta is empty for a plain state_dict. Weights with a NaN or inf are refused."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file",
                              "pass the checkpoint file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        state, text = _read_safetensors(path)
        meta = upgrade_meta(_read_meta(text, path)) if text is not None else {}
        _check_meta(meta, path)
        return state, meta
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        raise CheckpointError(
            f"{path} could not be loaded safely (weights_only=True): it holds Python objects "
            f"besides tensors ({found[0] if found else 'unsupported pickle content'}), which "
            "could run code when unpickled; none of it was run. Re-save the weights alone with "
            "torch.save(model.state_dict(), PATH) from code you trust"
        ) from e
    except OSError:
        raise  # cannot be read at all: the OS message names the file
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... on broken files
        detail = str(e).splitlines()[0] if str(e) else "unexpected end of file"
        raise CheckpointError(
            f"{path} could not be loaded: the file is truncated or not a PyTorch checkpoint "
            f"({type(e).__name__}: {detail}); save or copy it again"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj:
        state, meta = obj["state_dict"], upgrade_meta(_read_meta(obj.get("meta"), path))
        if not _is_state_dict(state):
            raise CheckpointError(
                f"{path}: its 'state_dict' is {_kind(state)}, not a mapping of parameter names "
                "to tensors", "save it again with torch.save({'state_dict': model.state_dict()"
                ", ...}, PATH), or the weights alone with torch.save(model.state_dict(), PATH)")
        _check_meta(meta, path)
    elif _is_state_dict(obj):
        state, meta = obj, {}
    else:
        raise CheckpointError(f"{path} holds neither an oodbench checkpoint nor a state_dict "
                              f"(it holds {_kind(obj)})")
    _check_finite(state, path)
    return state, meta


def _is_state_dict(obj: object) -> bool:
    """Whether ``obj`` maps names to tensors (an empty mapping does not: it loads nothing)."""
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _kind(obj: object) -> str:
    """What ``obj`` is, for messages: ``a Tensor of shape (3, 4)``, ``a list``, ``an empty
    dict``, ``a dict with a int value under 'x'``."""
    if isinstance(obj, torch.Tensor):
        return f"a Tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        key, value = next((k, v) for k, v in obj.items()
                          if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
        return f"a dict with a {type(value).__name__} under {key!r}"
    return f"a {type(obj).__name__}"


def _count(value: object) -> bool:
    """Whether ``value`` is a positive int (not a bool)."""
    return type(value) is int and value >= 1


def _numbers(value: object) -> bool:
    """Whether ``value`` is a non-empty list of finite numbers (not bools)."""
    return (isinstance(value, list) and bool(value)
            and all(type(v) in (int, float) and math.isfinite(v) for v in value))


# what each metadata key that a model or its input is built from must be, checked on reading
_META_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str) and bool(v), "a model name"),
    "num_classes": (_count, "a positive whole number"),
    "in_channels": (lambda v: v in (1, 3) and type(v) is int, "1 or 3"),
    "image_size": (_count, "a positive whole number of pixels"),
    "widths": (lambda v: isinstance(v, list) and all(map(_count, v)),
               "a list of positive whole numbers (empty: the model's own)"),
    "normalisation": (lambda v: isinstance(v, dict) and _numbers(v.get("mean"))
                      and _numbers(v.get("std")) and len(v["mean"]) == len(v["std"])
                      and min(v["std"]) > 0,
                      "{\"mean\": [...], \"std\": [...]}, one finite number per channel "
                      "each, every std above 0"),
}


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """Refuse metadata a model or its input would be built from wrongly (``num_classes`` as
    the string "10", a std of 0), naming the file and the key."""
    for key, (ok, expected) in _META_CHECKS.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(
                f"{path}: its metadata {key!r} is {meta[key]!r}; it must be {expected}",
                "the file was edited or written by another tool: restore it, or save the "
                "weights alone with torch.save(model.state_dict(), PATH) and pass <arch>, "
                "<num_classes> and <in_channels>")
    channels, norm = meta.get("in_channels"), meta.get("normalisation")
    if channels is not None and norm is not None and len(norm["mean"]) != channels:
        raise CheckpointError(
            f"{path}: its metadata 'normalisation' has {len(norm['mean'])} values per "
            f"statistic for in_channels = {channels}", "restore the file")


def _read_meta(text: object, path: Path) -> dict[str, Any]:
    """The checkpoint's metadata, a JSON object."""
    try:
        # any stored object: json refuses a non-string with the TypeError caught below
        meta = json.loads(text or "{}")  # type: ignore[arg-type]
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: its metadata is not JSON ({e})",
                              "the file was not written by oodbench: save the weights alone "
                              "with torch.save(model.state_dict(), PATH)") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON "
                              "object", "save the weights alone with torch.save(model."
                              "state_dict(), PATH)")
    return meta


def first_non_finite(state: dict[str, torch.Tensor]) -> str | None:
    """The key of the first floating-point tensor of ``state`` holding a NaN or inf."""
    return next((key for key, t in state.items() if isinstance(t, torch.Tensor)
                 and t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with a NaN or inf, naming the first such tensor."""
    key = first_non_finite(state)
    if key is not None:
        raise CheckpointError(
            f"{path} holds non-finite (NaN/inf) weights, first at {key!r}",
            "the training that wrote it diverged: delete the file and train again (a lower "
            "lr in the benchmark's train table)")


def load_into(model: M, state: dict[str, torch.Tensor], path: Path | str) -> M:
    """Load ``state`` into ``model``; mismatches name the key and both shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not match the model: missing keys {missing[:5]}, "
            f"unexpected keys {extra[:5]}; it was saved from another architecture: pass the "
            f"{_MATCHING}"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path} does not match the model at {key!r}: the checkpoint has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}; pass the "
                f"{_MATCHING}"
            )
    model.load_state_dict(state)
    return model


def read_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or from a ``.pt`` (``weights_only``); non-finite
    weights are refused."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return read_checkpoint(path)[0]
    if not path.is_file():
        raise CheckpointError(f"weights {path} do not exist")
    return _read_safetensors(path)[0]


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state_dict, the :data:`META_KEY` metadata text or None) of a ``.safetensors`` file;
    non-finite weights are refused."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            text = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})",
                              "save or copy it again") from e
    if not state:
        raise CheckpointError(f"{path} holds no tensors", "save or copy it again")
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"{path} holds non-finite (NaN/inf) weights, first at {bad!r}")
    return state, text
