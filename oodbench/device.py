"""The torch device a run uses: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked."""

from __future__ import annotations

import torch

from oodbench.errors import DeviceError


def resolve_device(name: str | None) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"<device={name}> was requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__})", "use <device=cpu>")
    return torch.device(name)
