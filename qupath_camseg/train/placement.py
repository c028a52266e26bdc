"""Where a training run computes and at what precision: device, mixed precision, memory format.

One :class:`Placement` per run moves every batch the same way (training and validation alike):
uint8 tiles become float RGB 0–255 on the device (photometric augmentation applied there), in
channels-last order on GPUs, under autocast when mixed precision is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from qupath_camseg.train.augment import photometric

__all__ = ["Placement", "amp_dtype", "autocast"]


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` ``setting`` on ``device`` (``None``: float32; always on CPU)."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (``None``: disabled, float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass(frozen=True)
class Placement:
    """``device``, the autocast ``amp_dtype`` (``None``: float32) and whether tensors are
    channels-last (on GPUs)."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def for_device(cls, device: torch.device, amp: str) -> Placement:
        """The placement on ``device`` with ``--amp`` setting ``amp``."""
        return cls(device, amp_dtype(amp, device), device.type == "cuda")

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, in its memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, images: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` tiles → float RGB 0–255 on the device; ``params`` ``(N, N_PARAMS)``:
        photometric augmentation applied there."""
        x = images.to(self.device, non_blocking=True).float()
        if params is not None:
            x = photometric(x, params.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W)`` labels → long on the device."""
        return labels.to(self.device, non_blocking=True).long()

    def autocast(self) -> torch.autocast:
        """Autocast for the forward pass."""
        return autocast(self.device, self.amp_dtype)
