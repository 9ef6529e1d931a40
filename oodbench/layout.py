"""The memory format of a model's training and extraction passes, decided per model.

Channels-last is the faster layout for these convolutions on CPU and GPU, but oneDNN's AVX2
1x1 convolution backward-weights kernel (``jit_avx2_1x1_convolution_bwd_weights_t``) writes
past its workspace when its source is channels-last, the stride is above 1 and the input
channels per group are fewer than its block of 8 (oneDNN issue #6035): heap corruption
(abort, segfault, hang) or silently wrong weight gradients. An x86 CPU with AVX2 but no
AVX-512 runs that kernel, and so does any AVX2 CPU under ``ONEDNN_MAX_CPU_ISA=AVX2``.

The rule is static: a model with a Conv2d of that class runs contiguous, every other one
channels-last. It reads the model's layers, not the machine, so a model has the same layout,
and gives the same numbers, everywhere; and it costs microseconds, where checking one
channels-last batch against a contiguous one would have to run the broken kernel, in a
process of its own, to find out. The decision and its reason go into the checkpoint and the
manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

CHANNELS_LAST, CONTIGUOUS = "channels_last", "contiguous"
ONEDNN_1X1_BLOCK = 8  # the input-channel block of oneDNN's AVX2 1x1 convolution kernels


@dataclass(frozen=True)
class MemoryFormat:
    """A memory format (``CHANNELS_LAST`` or ``CONTIGUOUS``) and why it was chosen."""

    format: str
    reason: str

    @property
    def torch(self) -> torch.memory_format:
        """The format as torch names it."""
        return torch.channels_last if self.format == CHANNELS_LAST else torch.contiguous_format

    def batch(self, x: Tensor) -> Tensor:  # ``torch`` here is the property above
        """``x`` with the strides of this format. A one-channel batch is contiguous in both,
        and ``contiguous()`` keeps the channels-last strides the preprocessing gives it, which
        convolutions read to pick their kernels: a contiguous batch is copied afresh."""
        if self.format == CHANNELS_LAST:
            return x.contiguous(memory_format=torch.channels_last)
        return x.clone(memory_format=torch.contiguous_format)

    def to_dict(self) -> dict[str, str]:
        """Plain data for a checkpoint's metadata or a manifest."""
        return {"format": self.format, "reason": self.reason}


def onednn_6035(conv: nn.Conv2d) -> str | None:
    """Why ``conv``'s weight gradient in channels-last takes the broken oneDNN kernel (None:
    it does not): a 1x1 kernel, a stride above 1, fewer than ``ONEDNN_1X1_BLOCK`` input
    channels per group."""
    per_group = conv.in_channels // conv.groups
    if conv.kernel_size != (1, 1) or max(conv.stride) == 1 or per_group >= ONEDNN_1X1_BLOCK:
        return None
    groups = f" per group ({conv.groups} groups)" if conv.groups > 1 else ""
    stride = "x".join(map(str, conv.stride[:1] if len(set(conv.stride)) == 1 else conv.stride))
    return f"1x1 stride {stride} with {per_group} input channels{groups} hits oneDNN #6035"


def model_format(model: nn.Module) -> MemoryFormat:
    """Channels-last unless a Conv2d of ``model`` is in the class oneDNN #6035 breaks
    (:func:`onednn_6035`); then contiguous, naming the first such layer."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            why = onednn_6035(module)
            if why is not None:
                return MemoryFormat(CONTIGUOUS, f"Conv2d {name}: {why}")
    return MemoryFormat(CHANNELS_LAST, "no Conv2d of the class oneDNN #6035 breaks "
                        f"(1x1, stride > 1, < {ONEDNN_1X1_BLOCK} input channels per group)")
