"""Turning ``uint8`` NHWC image arrays into normalised model input, and their channel statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from oodbench.data.readers import LUMA_WEIGHTS, resize_centre_crop

_STATS_CHUNK = 2048
INTERPOLATIONS = ("bilinear", "bicubic")  # of the resize (torchvision's InterpolationMode)


def _check_images(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"expected uint8 N x H x W x {{1,3}} images, got {images.dtype} {images.shape}"
        )


@dataclass(frozen=True)
class Preprocess:
    """uint8 NHWC -> float32 NCHW: channel conversion, resize, centre crop, normalisation.

    The shorter side is resized to ``floor(size / crop_pct)`` (antialiased ``interpolation``,
    ``"bilinear"`` or ``"bicubic"``) and the central ``size`` square kept (``crop_pct`` 0.875
    at 224 is ImageNet's resize-256, crop-224), as :func:`~oodbench.data.readers.
    resize_centre_crop` with its ``"nearest"`` rounding does it."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

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
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                             f"{self.interpolation!r}")

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
        return self.finish(self.fit(x.permute(0, 3, 1, 2).float().div_(255.0)))

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """Float N x C x H x W images in [0, 1] at the input size: RGB to grey (BT.601 luma)
        when one channel is wanted, then resize and centre crop. Per image, so a data-loader
        worker can run it on one image and :meth:`finish` the batch."""
        if x.shape[1] == 3 and self.channels == 1:
            x = (x * self._luma.to(x.device)).sum(dim=1, keepdim=True)
        return resize_centre_crop(x, self.size, self.resize_size, "nearest", self.interpolation)

    def finish(self, x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """A batch from :meth:`fit` (moved to ``device``) as model input: grey copied to RGB
        when three channels are wanted, normalised, in channels-last memory order."""
        if device is not None:
            x = x.to(device, non_blocking=True)
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

    @property
    def resize_size(self) -> int:
        """The side the shorter side is resized to before the centre crop."""
        return self.size if self.crop_pct == 1 else math.floor(self.size / self.crop_pct)

    def key(self) -> str:
        """Stable short string for cache keys, e.g. ``s28-c1-m0.2860-sd0.3530`` (the crop and a
        non-bilinear interpolation appended only where set)."""
        mean = "_".join(f"{m:.4f}" for m in self.mean)
        std = "_".join(f"{s:.4f}" for s in self.std)
        crop = f"-cp{self.crop_pct:.4f}" if self.crop_pct != 1 else ""
        interpolation = f"-{self.interpolation}" if self.interpolation != "bilinear" else ""
        return f"s{self.size}-c{self.channels}-m{mean}-sd{std}{crop}{interpolation}"


def conversion_note(shape: tuple[int, ...] | None, size: int, channels: int) -> str:
    """What :class:`Preprocess` does to H x W x C images to give ``size`` x ``size`` x
    ``channels`` input ("" when they already match; ``shape`` None: sizes vary, files are
    resized as they are read), for the note printed once per set."""
    if shape is None:
        return (f"image files of any size and mode, each read as RGB and resized (shorter "
                f"side to {size}, bilinear, centre crop){'; RGB to grey' * (channels == 1)}")
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
