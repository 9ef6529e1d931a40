"""Turning ``uint8`` NHWC image arrays into normalised model input, and their channel statistics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from oodbench.data.readers import LUMA_WEIGHTS

_STATS_CHUNK = 2048


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"expected uint8 N x H x W x {{1,3}} images, got {images.dtype} {images.shape}"
        )


@dataclass(frozen=True)
class Preprocess:
    """uint8 NHWC -> float32 NCHW: channel conversion, resize, centre crop, normalisation."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean {self.mean} and std {self.std} need {self.channels} values each"
            )
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(
        self, images: np.ndarray, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Preprocess a batch (or a slice of one) of ``uint8`` N x H x W x C images.

        The uint8 pixels move to ``device`` first (pinned and non-blocking for CUDA: a quarter
        of the bytes of float input) and are converted there. The result is in channels-last
        memory order (the NHWC layout of the array), which convolutions read directly.
        """
        _check_images(images)
        x = torch.from_numpy(images)
        if device is not None and torch.device(device).type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        elif device is not None:
            x = x.to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] == 3 and self.channels == 1:
            x = (x * self._luma.to(x.device)).sum(dim=1, keepdim=True)
        x = self._resize(x)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        mean, std = (t.to(x.device) for t in self._stats)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    @cached_property
    def _luma(self) -> torch.Tensor:
        return torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)

    @cached_property
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std as 1 x C x 1 x 1 float32 tensors, built once."""
        return (torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1),
                torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize the shorter side to ``size`` (bilinear, antialiased), then centre-crop."""
        height, width = x.shape[-2:]
        if height == width == self.size:
            return x
        scale = self.size / min(height, width)
        target = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
        top, left = (target[0] - self.size) // 2, (target[1] - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]

    def key(self) -> str:
        """Stable short string for cache keys, e.g. ``s28-c1-m0.2860-sd0.3530``."""
        mean = "_".join(f"{m:.4f}" for m in self.mean)
        std = "_".join(f"{s:.4f}" for s in self.std)
        return f"s{self.size}-c{self.channels}-m{mean}-sd{std}"


def conversion_note(shape: tuple[int, ...], size: int, channels: int) -> str:
    """What :class:`Preprocess` does to H x W x C images to give ``size`` x ``size`` x
    ``channels`` input ("" when they already match), for the note printed once per set."""
    height, width, have = shape
    steps = []
    if have != channels:
        steps.append("RGB to grey (BT.601 luma)" if channels == 1 else "grey copied to RGB")
    if (height, width) != (size, size):
        steps.append(f"resized from {height}x{width} (shorter side to {size}, bilinear, "
                     "centre crop)")
    return "; ".join(steps)


def channel_stats(images: np.ndarray, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of ``images`` converted to ``channels``, in chunks."""
    _check_images(images)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if len(images) == 0:
        raise ValueError("channel_stats needs at least one image")
    weights = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    reduced = 1 if channels == 1 else images.shape[-1]
    total = np.zeros(reduced, dtype=np.float64)
    total_sq = np.zeros(reduced, dtype=np.float64)
    for start in range(0, len(images), _STATS_CHUNK):
        x = images[start : start + _STATS_CHUNK].astype(np.float32) / 255.0
        if x.shape[-1] == 3 and channels == 1:
            x = (x @ weights)[..., None]
        x = x.reshape(-1, x.shape[-1])
        total += x.sum(axis=0, dtype=np.float64)
        total_sq += np.square(x).sum(axis=0, dtype=np.float64)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if reduced < channels:
        mean, std = np.repeat(mean, 3), np.repeat(std, 3)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
