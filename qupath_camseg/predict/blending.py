"""Tile probabilities → blended probability map: the window, the stripe accumulator and the band writer.

Whole-slide inference works on a *map* at the model's pixel size: map pixel ``(x, y)`` covers
level-0 pixels ``[x*ds, (x+1)*ds) x [y*ds, (y+1)*ds)`` with ``ds = model_mpp / slide_mpp``.
Tiles of ``tile_px`` map pixels sit on a regular grid with stride ``stride_px`` whose origin is
shifted by ``-(tile_px - stride_px) // 2`` so that every map pixel lies in the inner part of some
tile. Each tile's softmax probabilities are multiplied by a smooth window (:func:`blend_window`)
and summed; the map is the weighted sum divided by the summed weights, so seams vanish.

Memory does not depend on slide size: the map is processed in vertical *stripes* (a few chunks
wide) and, inside a stripe, tile row by tile row with a rolling accumulator of ``tile_px`` rows
(:class:`StripeAccumulator`). Finished rows are quantised to ``uint8`` (``round(255 p)``),
zeroed outside the ROI and the tissue, and written as square chunks of ``chunk_px`` map pixels
(:class:`BandWriter` → :class:`~qupath_camseg.predict.chunks.ChunkStore`), one zlib-compressed
file per chunk written atomically, so an interrupted run resumes from the finished chunks and
gives bit-identical results. Tiles that straddle a stripe edge are computed by both stripes
(a few percent of extra work) - the price of bounded memory. The loop that feeds tiles through
the model into the accumulator is :mod:`qupath_camseg.predict.inference`; the geometry and the
store are :mod:`qupath_camseg.predict.chunks`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future

import numpy as np
import numpy.typing as npt
import shapely
import torch
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import rasterize
from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.wsi import TissueMask

__all__ = ["BandWriter", "ChunkFill", "StripeAccumulator", "blend_window"]

#: ``fill(row, col, data) -> data``: replaces pixels of chunk ``(row, col)`` (``uint8 (n, h, w)``).
ChunkFill = Callable[[int, int, npt.NDArray[np.uint8]], npt.NDArray[np.uint8]]


def blend_window(tile_px: int, *, floor: float = 1e-2) -> npt.NDArray[np.float32]:
    """Separable Hann (sin²) window of shape ``(tile_px, tile_px)``, values in ``[floor, 1]``.

    The floor keeps pixels covered by a single tile (slide borders) defined; where tiles overlap
    the window makes each tile's border count little, which is what removes seams.
    """
    i = (np.arange(tile_px, dtype=np.float64) + 0.5) / tile_px
    w1 = np.sin(np.pi * i) ** 2
    return np.maximum(np.outer(w1, w1), floor).astype(np.float32)


class StripeAccumulator:
    """Rolling weighted-sum accumulator for one stripe of map columns ``[x0, x1)``.

    Holds ``tile_px + 2 * stride_px`` rows of ``n_channels + 1`` float32 planes (probabilities and
    weight) on the window's device. Call :meth:`add` for every tile of tile row :attr:`row` (in
    column order), then :meth:`finish_row` to get the ``stride_px`` rows no later tile touches.
    Live rows are moved to the top only when the buffer runs out (every other tile row).
    """

    def __init__(self, plan: TilePlan, x0: int, x1: int, n_channels: int, first_row: int,
                 window: torch.Tensor) -> None:
        self.plan = plan
        cols = plan.tiles_overlapping(x0, x1)
        self.out_x0, self.out_x1 = x0, x1
        self.ax0 = plan.tile_origin(cols.start)  # map x of accumulator column 0
        width = plan.tile_origin(cols.stop - 1) + plan.tile_px - self.ax0
        self.row = first_row
        self.off = 0  # buffer row of the current tile row's first map row
        self.window = window
        self.rows = plan.tile_px + 2 * plan.stride_px
        self.acc = torch.zeros((n_channels + 1, self.rows, width), dtype=torch.float32, device=window.device)
        self.last_added = first_row - 2  # tile row of the last add(); older rows no longer reach the buffer
        self.dirty = False  # whether anything was added since the buffer was last all zero

    def add(self, col: int, probs: torch.Tensor) -> None:
        """Add one tile's probabilities ``(n_channels, tile_px, tile_px)`` at tile column ``col``."""
        a = self.plan.tile_origin(col) - self.ax0
        t, o = self.plan.tile_px, self.off
        self.acc[:-1, o:o + t, a:a + t].addcmul_(probs, self.window)
        self.acc[-1, o:o + t, a:a + t].add_(self.window)
        self.last_added, self.dirty = self.row, True

    def finish_row(self) -> tuple[int, torch.Tensor | None]:
        """Close the current tile row; return ``(map_y, uint8 (n_channels, stride_px, x1 - x0))``,
        or ``(map_y, None)`` when no tile touches those rows (glass between and below tissue:
        nothing to compute).

        ``map_y`` is the map row of the first returned row (negative near the top edge). A tile
        spans less than two strides (overlap < 0.5), so only tiles of this row and the one above
        reach the rows closed here.
        """
        s, t = self.plan.stride_px, self.plan.tile_px
        y = self.plan.tile_origin(self.row)
        if self.last_added < self.row - 1:  # nothing live in the buffer: clear it once, restart at the top
            if self.dirty:
                self.acc.zero_()
                self.dirty = False
            self.row += 1
            self.off = 0
            return y, None
        done = self.acc[:, self.off:self.off + s, self.out_x0 - self.ax0:self.out_x1 - self.ax0]
        weight = done[-1:]
        prob = torch.where(weight > 0, done[:-1] / weight.clamp_min(1e-12), torch.zeros_like(done[:-1]))
        q = (prob.clamp(0, 1) * 255).round().to(torch.uint8)
        self.row += 1
        self.off += s
        if self.off + t > self.rows:  # move the live rows to the top, clear the rest
            keep = self.rows - self.off
            self.acc[:, :keep] = self.acc[:, self.off:].clone()
            self.acc[:, keep:].zero_()
            self.off = 0
        return y, q


class BandWriter:
    """Collects finished map rows of the stripe of chunk columns ``[c0, c1)`` into a band of chunks
    (one chunk row, ``uint8 (n, chunk_px, stripe width)``) and writes each full band, from band
    ``b0`` on: the ``needed`` chunks, zeroed outside ``roi`` (level-0 geometry) and ``tissue``, go
    to ``store`` on the ``writer`` threads (their futures appended to ``pending``); ``on_chunk(row,
    col)`` is called on the writer thread after each chunk is stored. ``fill(row, col, data)``, when
    given, may replace pixels of a chunk before the masks (the cascade fills what no computed
    tile covers from its screen)."""

    def __init__(self, plan: TilePlan, store: ChunkStore, needed: npt.NDArray[np.bool_], roi: BaseGeometry | None,
                 c0: int, c1: int, b0: int, writer: Executor, pending: list[Future[None]],
                 on_chunk: Callable[[int, int], None] | None = None, tissue: TissueMask | None = None,
                 fill: ChunkFill | None = None) -> None:
        self.plan, self.store, self.needed, self.roi, self.tissue = plan, store, needed, roi, tissue
        self.fill = fill
        self.c0, self.c1, self.x0 = c0, c1, c0 * plan.chunk_px
        self.width = min(c1 * plan.chunk_px, plan.map_size[0]) - self.x0
        self.y_min = b0 * plan.chunk_px
        self.band = b0
        self.buf = np.zeros((store.n_channels, plan.chunk_px, self.width), dtype=np.uint8)
        self.writer, self.pending, self.on_chunk = writer, pending, on_chunk

    def put(self, y: int, rows: torch.Tensor | None) -> None:
        """Rows ``[y, y + len)`` of the stripe (``uint8 (n, len, width)``; ``None``: ``stride_px``
        rows of zeros)."""
        arr = rows.cpu().numpy() if rows is not None else None
        n_rows = arr.shape[1] if arr is not None else self.plan.stride_px
        cp, h = self.plan.chunk_px, self.plan.map_size[1]
        i = max(0, self.y_min - y)
        while i < n_rows and y + i < h:
            yy = y + i
            b = yy // cp
            if b != self.band:
                self._flush()
                self.band = b
            k = min(n_rows - i, (b + 1) * cp - yy, h - yy)
            if arr is not None:  # (the buffer is zeroed after each flush)
                self.buf[:, yy - b * cp:yy - b * cp + k] = arr[:, i:i + k]
            i += k
            if yy + k == min((b + 1) * cp, h):
                self._flush()
                self.band = b + 1

    def flush_last(self) -> None:
        """Write the band in progress at the end of the stripe (when it holds anything)."""
        if self.band < self.plan.chunk_shape[0] and self.buf.any():
            self._flush()

    def _flush(self) -> None:
        b = self.band
        if b >= self.plan.chunk_shape[0]:
            return
        for c in range(self.c0, self.c1):
            if not self.needed[b, c]:
                continue
            cx, cy, w, h = self.plan.chunk_box(b, c)
            data = self.buf[:, :h, cx - self.x0:cx - self.x0 + w].copy()
            if self.fill is not None:
                data = self.fill(b, c, data)
            if self.roi is not None:  # here, not on the writers: a shared prepared geometry is not thread-safe
                data = _mask_roi(data, self.roi, (cx, cy, w, h), self.plan.ds)
            self.pending.append(self.writer.submit(self._write, b, c, data))
        self.buf[:] = 0

    def _write(self, row: int, col: int, data: npt.NDArray[np.uint8]) -> None:
        """Writer thread: zero the chunk off the tissue (≈ 1 ms a chunk, kept off the inference
        thread), store it, report it."""
        if self.tissue is not None:
            data = _mask_tissue(data, self.tissue, self.plan.chunk_box(row, col), self.plan.ds)
        self.store.write(row, col, data)
        if self.on_chunk is not None:
            self.on_chunk(row, col)


def _mask_roi(data: npt.NDArray[np.uint8], roi: BaseGeometry, box: tuple[int, int, int, int],
              ds: float) -> npt.NDArray[np.uint8]:
    """Zero ``data`` (``(n, h, w)``, map px box ``box``; ``ds`` level-0 px per map px) outside the
    level-0 ``roi``."""
    x, y, w, h = box
    l0 = (x * ds, y * ds, w * ds, h * ds)
    cell = shapely.box(l0[0], l0[1], l0[0] + l0[2], l0[1] + l0[3])
    if roi.contains(cell):
        return data
    if not roi.intersects(cell):
        return np.zeros_like(data)
    inside = rasterize([(roi, 1)], l0, (w, h)) > 0
    return data * inside[None]


def _mask_tissue(data: npt.NDArray[np.uint8], tissue: TissueMask, box: tuple[int, int, int, int],
                 ds: float) -> npt.NDArray[np.uint8]:
    """Zero ``data`` (``(n, h, w)``, map px box ``box``) where the tissue mask (nearest mask pixel
    of each map pixel's centre) is False: glass, ink and the slide's edges get probability 0."""
    x, y, w, h = box
    mask, md = tissue.mask, float(tissue.downsample)
    cols = np.minimum(((x + np.arange(w) + 0.5) * ds / md).astype(np.int64), mask.shape[1] - 1)
    rows = np.minimum(((y + np.arange(h) + 0.5) * ds / md).astype(np.int64), mask.shape[0] - 1)
    inside = mask[rows[:, None], cols[None, :]]
    return data if inside.all() else data * inside[None]
