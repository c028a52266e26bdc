"""The map geometry and the chunked probability store of whole-slide inference (no torch).

Whole-slide inference works on a *map* at the model's pixel size: map pixel ``(x, y)`` covers
level-0 pixels ``[x*ds, (x+1)*ds) x [y*ds, (y+1)*ds)`` with ``ds = model_mpp / slide_mpp``.
:class:`TilePlan` places the overlapping model tiles and the square storage chunks on that map;
:class:`ChunkStore` keeps the finished map as one zlib-compressed ``uint8`` file per chunk,
written atomically, so an interrupted run resumes from its finished chunks. Kept free of torch so
that output-stage worker processes (:mod:`qupath_camseg.predict.summaries`) start quickly.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from qupath_camseg._io import atomic_write_bytes, atomic_write_json
from qupath_camseg.errors import InvalidSettingsError

__all__ = ["ChunkStore", "TilePlan"]

_CHUNK_RE = re.compile(r"^r(\d{5})_c(\d{5})\.zlib$")


@dataclass(frozen=True)
class TilePlan:
    """The tile and chunk geometry of one slide's probability map (all sizes in map pixels).

    ``map_size`` is ``(width, height)`` of the map; ``ds`` the level-0 px per map px.
    """

    map_size: tuple[int, int]
    ds: float
    tile_px: int
    stride_px: int
    chunk_px: int
    stripe_chunks: int

    @classmethod
    def create(
        cls, slide_size_px: tuple[int, int], slide_mpp: float, model_mpp: float, *, tile_px: int,
        overlap: float = 0.25, chunk_px: int = 512, stripe_chunks: int = 16,
    ) -> TilePlan:
        """Plan for a slide of ``slide_size_px`` (level 0) at ``slide_mpp`` read at ``model_mpp``."""
        if not 0 <= overlap < 0.5:
            raise InvalidSettingsError(f"overlap must be in [0, 0.5), not {overlap}")
        if chunk_px % 16:
            raise InvalidSettingsError(f"chunk_px must be a multiple of 16 (a TIFF tile), not {chunk_px}")
        ds = model_mpp / slide_mpp
        w = max(1, math.ceil(slide_size_px[0] / ds))
        h = max(1, math.ceil(slide_size_px[1] / ds))
        stride = max(1, round(tile_px * (1 - overlap)))
        return cls((w, h), ds, tile_px, stride, chunk_px, max(1, stripe_chunks))

    @property
    def offset_px(self) -> int:
        """Shift of the tile grid origin (tile ``k`` starts at ``k*stride - offset``)."""
        return (self.tile_px - self.stride_px) // 2

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tile rows and columns ``(ny, nx)``."""
        def n(size: int) -> int:
            return max(1, math.ceil((size + self.offset_px - self.tile_px) / self.stride_px) + 1)
        return n(self.map_size[1]), n(self.map_size[0])

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """Number of chunk rows and columns."""
        return math.ceil(self.map_size[1] / self.chunk_px), math.ceil(self.map_size[0] / self.chunk_px)

    def tile_origin(self, k: int) -> int:
        """Map coordinate of tile row/column ``k``'s first pixel (may be negative)."""
        return k * self.stride_px - self.offset_px

    def tiles_overlapping(self, a: int, b: int) -> range:
        """Tile indices (one axis) whose span intersects map pixels ``[a, b)``."""
        first = max(0, math.floor((a + self.offset_px - self.tile_px) / self.stride_px) + 1)
        last = math.ceil((b + self.offset_px) / self.stride_px)  # exclusive
        return range(first, max(first, last))

    def tile_boxes_level0(self) -> npt.NDArray[np.float64]:
        """``(ny, nx, 4)`` boxes ``(x, y, w, h)`` of every tile in level-0 px (unclipped)."""
        ny, nx = self.grid_shape
        xs = np.array([self.tile_origin(k) for k in range(nx)], dtype=np.float64) * self.ds
        ys = np.array([self.tile_origin(k) for k in range(ny)], dtype=np.float64) * self.ds
        boxes = np.zeros((ny, nx, 4))
        boxes[..., 0] = xs[None, :]
        boxes[..., 1] = ys[:, None]
        boxes[..., 2:] = self.tile_px * self.ds
        return boxes

    def chunk_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Chunk ``(row, col)`` as ``(x, y, w, h)`` in map px, clipped to the map."""
        x, y = col * self.chunk_px, row * self.chunk_px
        return x, y, min(self.chunk_px, self.map_size[0] - x), min(self.chunk_px, self.map_size[1] - y)

    def needed_chunks(self, active: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Chunks that at least one active tile overlaps, ``(chunk_rows, chunk_cols)``."""
        cr, cc = self.chunk_shape
        out = np.zeros((cr, cc), dtype=bool)
        for r in range(cr):
            rows = self.tiles_overlapping(r * self.chunk_px, min((r + 1) * self.chunk_px, self.map_size[1]))
            sub = active[rows.start:rows.stop]
            if not sub.any():
                continue
            cols_any = sub.any(axis=0)
            for c in range(cc):
                cols = self.tiles_overlapping(c * self.chunk_px, min((c + 1) * self.chunk_px, self.map_size[0]))
                out[r, c] = bool(cols_any[cols.start:cols.stop].any())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (part of the resume key)."""
        d = asdict(self)
        d["map_size"] = list(self.map_size)
        return d


class ChunkStore:
    """A folder of ``uint8`` probability chunks ``(n_channels, h, w)``, one file per chunk.

    ``meta.json`` holds ``key`` (everything the probabilities depend on); opening a store whose
    key differs, or with ``overwrite=True``, deletes the old chunks first. Chunks are written
    atomically (temp file + rename), so a chunk file is either complete or absent.
    """

    def __init__(self, folder: str | Path, plan: TilePlan, n_channels: int, key: dict[str, Any], *,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.plan = plan
        self.n_channels = n_channels
        meta = {"format": "qupath-camseg probability chunks v1", "dtype": "uint8 round(255*p)",
                "n_channels": n_channels, "plan": plan.to_dict(), "key": key}
        meta_path = self.folder / "meta.json"
        old = None
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                old = None
        self.resumed = old == meta and not overwrite
        if not self.resumed:
            self.clear()
            atomic_write_json(meta_path, meta)

    def clear(self) -> None:
        """Delete this store's chunk files (only files named like chunks)."""
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                if _CHUNK_RE.match(p.name) or (p.name.startswith(".r") and p.name.endswith(".tmp")):
                    p.unlink(missing_ok=True)

    def path(self, row: int, col: int) -> Path:
        """The file of chunk ``(row, col)`` (whether or not it exists)."""
        return self.folder / f"r{row:05d}_c{col:05d}.zlib"

    def has(self, row: int, col: int) -> bool:
        """Whether chunk ``(row, col)`` is stored."""
        return self.path(row, col).is_file()

    def write(self, row: int, col: int, data: npt.NDArray[np.uint8]) -> None:
        """Store chunk ``(row, col)``; ``data`` is ``uint8 (n_channels, h, w)`` of the clipped chunk box."""
        _, _, w, h = self.plan.chunk_box(row, col)
        if data.shape != (self.n_channels, h, w) or data.dtype != np.uint8:
            raise ValueError(f"chunk {row},{col} must be uint8 {(self.n_channels, h, w)}, not {data.dtype} {data.shape}")
        # a zlib stream (libdeflate, level 1: fast, GIL released); read back with zlib
        atomic_write_bytes(self.path(row, col), imagecodecs.deflate_encode(np.ascontiguousarray(data), level=1))

    def read(self, row: int, col: int) -> npt.NDArray[np.uint8]:
        """Chunk ``(row, col)`` as ``uint8 (n_channels, h, w)``; zeros where nothing was predicted."""
        _, _, w, h = self.plan.chunk_box(row, col)
        p = self.path(row, col)
        if not p.is_file():
            return np.zeros((self.n_channels, h, w), dtype=np.uint8)
        return np.frombuffer(zlib.decompress(p.read_bytes()), dtype=np.uint8).reshape(self.n_channels, h, w)

    def iter_chunks(self) -> Iterator[tuple[int, int, npt.NDArray[np.uint8]]]:
        """Stored chunks in row-major order as ``(row, col, data)`` (missing chunks skipped)."""
        rows, cols = self.plan.chunk_shape
        for r in range(rows):
            for c in range(cols):
                if self.has(r, c):
                    yield r, c, self.read(r, c)

    def read_region(self, box: tuple[int, int, int, int], channel: int = 0) -> npt.NDArray[np.uint8]:
        """Map pixels of ``box`` (map px, clipped to the map) of one channel as ``uint8 (h, w)``."""
        x, y, w, h = box
        x1, y1 = min(x + w, self.plan.map_size[0]), min(y + h, self.plan.map_size[1])
        out = np.zeros((max(0, y1 - y), max(0, x1 - x)), dtype=np.uint8)
        cp = self.plan.chunk_px
        for r in range(y // cp, math.ceil(y1 / cp)):
            for c in range(x // cp, math.ceil(x1 / cp)):
                if not self.has(r, c):
                    continue
                cx, cy, _, _ = self.plan.chunk_box(r, c)
                data = self.read(r, c)[channel]
                sy0, sx0 = max(y, cy), max(x, cx)
                sy1, sx1 = min(y1, cy + data.shape[0]), min(x1, cx + data.shape[1])
                out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = data[sy0 - cy:sy1 - cy, sx0 - cx:sx1 - cx]
        return out
