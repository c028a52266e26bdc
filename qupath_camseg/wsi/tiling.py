"""Tile grids in level-0 pixels over a box or over tissue (shared by training and inference).

A tile is a box ``(x, y, width, height)`` in level-0 pixels (integers). A model that works at
``target_mpp`` with ``tile_px`` pixels per side needs ``tile_px * target_mpp / slide_mpp`` level-0
pixels per side: :func:`level0_size` computes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from qupath_camseg.wsi.tissue import TissueMask, summed_area_table

__all__ = ["Box", "TissueFractions", "level0_size", "tile_grid", "tissue_fractions", "tissue_tiles"]

Box = tuple[int, int, int, int]
_Size = float | Sequence[float]


def level0_size(tile_px: float, target_mpp: float, slide_mpp: float) -> float:
    """Level-0 pixels spanned by ``tile_px`` pixels at ``target_mpp`` on a slide of ``slide_mpp``."""
    return float(tile_px) * float(target_mpp) / float(slide_mpp)


def _pair(value: _Size, what: str) -> tuple[float, float]:
    if isinstance(value, (int, float, np.integer, np.floating)):
        pair = (float(value), float(value))
    else:
        seq = list(value)
        if len(seq) != 2:
            raise ValueError(f"{what} must be a number or (width, height), not {value!r}")
        pair = (float(seq[0]), float(seq[1]))
    if not (pair[0] > 0 and pair[1] > 0) or not all(math.isfinite(v) for v in pair):
        raise ValueError(f"{what} must be positive, not {value!r}")
    return pair


def _starts(origin: float, extent: float, tile: float, stride: float, edge: str) -> list[float]:
    """Tile start positions along one axis covering ``[origin, origin + extent)``."""
    if extent <= 0:
        return []
    if edge == "drop":
        n = int(math.floor((extent - tile) / stride + 1e-9)) + 1 if extent >= tile else 0
        return [origin + i * stride for i in range(n)]
    n = max(1, int(math.ceil((extent - tile) / stride - 1e-9)) + 1)
    starts = [origin + i * stride for i in range(n)]
    if edge == "shift" and extent >= tile and starts[-1] + tile > origin + extent:
        starts[-1] = origin + extent - tile  # last tile ends exactly at the box edge
    return starts


def tile_grid(
    box_px: Sequence[float],
    tile_px_level0: _Size,
    stride_px_level0: _Size | None = None,
    *,
    edge: Literal["shift", "overhang", "drop"] = "shift",
) -> list[Box]:
    """Tiles of ``tile_px_level0`` (a number or ``(w, h)``) every ``stride_px_level0`` over ``box_px``.

    Row-major order (y, then x). ``stride`` defaults to the tile size (no overlap); a smaller
    stride overlaps tiles. Every pixel of the box is covered. At the right/bottom edge:

    * ``"shift"`` (default): the last tile is moved back to end exactly at the box edge, so no
      tile reaches outside the box (unless the box is smaller than one tile);
    * ``"overhang"``: the regular grid continues and the last tile reaches past the edge;
    * ``"drop"``: only tiles wholly inside the box (the edge may stay uncovered).

    Positions are rounded to integer level-0 pixels; sizes to the nearest integer.
    """
    if edge not in ("shift", "overhang", "drop"):
        raise ValueError(f"edge must be 'shift', 'overhang' or 'drop', not {edge!r}")
    x0, y0, width, height = (float(v) for v in box_px)
    tw, th = _pair(tile_px_level0, "tile size")
    sw, sh = _pair(stride_px_level0, "stride") if stride_px_level0 is not None else (tw, th)
    w_int, h_int = int(round(tw)), int(round(th))
    xs = _starts(x0, width, tw, sw, edge)
    ys = _starts(y0, height, th, sh, edge)
    return [(int(round(x)), int(round(y)), w_int, h_int) for y in ys for x in xs]


class TissueFractions:
    """Tissue fraction (0–1) of level-0 boxes, from one summed-area table of the mask built once.

    ``tissue`` is a :class:`qupath_camseg.wsi.tissue.TissueMask` (``.mask`` bool ``(H, W)`` whose
    pixel ``(i, j)`` covers level-0 ``[j·ds, (j+1)·ds) × [i·ds, (i+1)·ds)``, ``.downsample`` = ds).
    Parts of a box outside the mask count as background. The table is int32 (4 bytes per mask
    pixel; masks stay far below 2³¹ pixels), differences are taken in int64.
    """

    def __init__(self, tissue: TissueMask) -> None:
        mask = np.asarray(tissue.mask, dtype=bool)
        self.ds = float(tissue.downsample)
        self.h, self.w = mask.shape
        self.table = summed_area_table(mask)

    def __call__(self, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """``boxes`` level-0 ``(x, y, w, h)``, shape ``(n, 4)`` → float64 fractions ``(n,)``."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            return np.zeros(0, dtype=np.float64)
        x0, y0 = np.round(b[:, 0] / self.ds), np.round(b[:, 1] / self.ds)
        x1 = np.maximum(np.round((b[:, 0] + b[:, 2]) / self.ds), x0 + 1)
        y1 = np.maximum(np.round((b[:, 1] + b[:, 3]) / self.ds), y0 + 1)
        cx0, cx1 = (np.clip(v, 0, self.w).astype(np.intp) for v in (x0, x1))
        cy0, cy1 = (np.clip(v, 0, self.h).astype(np.intp) for v in (y0, y1))
        t = self.table
        inside = t[cy1, cx1].astype(np.int64) - t[cy0, cx1] - t[cy1, cx0] + t[cy0, cx0]
        return inside / ((x1 - x0) * (y1 - y0))


def tissue_fractions(tissue: TissueMask, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Fraction (0–1) of each level-0 box covered by the tissue mask (one-off
    :class:`TissueFractions`; build that once when asking repeatedly). Returns float64 ``(n,)``."""
    return TissueFractions(tissue)(boxes)


def tissue_tiles(
    slide_dims: Sequence[int],
    tissue: TissueMask | None,
    tile: _Size,
    stride: _Size | None = None,
    min_tissue: float = 0.1,
    *,
    box_px: Sequence[float] | None = None,
    edge: Literal["shift", "overhang", "drop"] = "shift",
) -> list[Box]:
    """Tiles (level-0 px) over the slide (or ``box_px``) holding at least ``min_tissue`` tissue.

    ``slide_dims`` is the level-0 ``(width, height)``; ``tile``/``stride`` are level-0 sizes (see
    :func:`tile_grid`); ``tissue`` a ``TissueMask`` or ``None`` (every tile is kept).
    """
    box = tuple(box_px) if box_px is not None else (0, 0, slide_dims[0], slide_dims[1])
    tiles = tile_grid(box, tile, stride, edge=edge)
    if tissue is None or not tiles:
        return tiles
    keep = tissue_fractions(tissue, tiles) >= min_tissue
    return [t for t, k in zip(tiles, keep) if k]
