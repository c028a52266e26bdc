"""How much memory a forward pass needs, to refuse sizes the machine cannot hold before allocating.

A lower bound, not a forecast: the input (float32, 3 channels), the first feature map (``width``
channels at full resolution, float32) and the output (``1 + classes`` channels), for ``batch``
tiles of ``input_px²``. A real pass needs several times this; a size whose lower bound already
exceeds the memory available is certainly impossible (a ``model.json`` with ``tile_px``
1000000000, ``--tile-px 100000``) and is refused with a message instead of being OOM-killed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qupath_camseg.model.bundle import ModelConfig

__all__ = ["forward_bytes"]

#: Channels of the first feature map when the architecture does not say (smp encoders' stems: 64).
_DEFAULT_WIDTH = 64


def forward_bytes(config: ModelConfig, input_px: int, batch: int = 1) -> int:
    """A lower bound of the bytes one forward pass of ``batch`` tiles of ``input_px²`` needs."""
    width = config.arch.get("width", _DEFAULT_WIDTH)
    width = width if isinstance(width, int) and width > 0 else _DEFAULT_WIDTH
    return int(batch) * int(input_px) ** 2 * 4 * (3 + width + config.n_channels)
