"""Synthetic Camelyon-style whole-slide image files with exact ground truth.

The geometry comes from :mod:`qupath_camseg.synthetic.truth`, the pixels from
:mod:`qupath_camseg.synthetic.render`. The file is written like Camelyon16's own TIFFs: a pyramid
of successive IFDs (level 0 first, each level half the previous one, down to one tile), 512 px
JPEG tiles (YCbCr 4:4:4, quality 95), XResolution / YResolution in pixels per centimetre, so
tiffslide and OpenSlide's generic-TIFF reader both report the pyramid and the mpp. Writing
streams tile by tile: lower levels are 2×2 means of the rendered (not JPEG-decoded) level above,
kept as one strip of tiles per level and spilled losslessly (zstd) to a temporary file until
their IFD is written. Memory stays near ``9 · tile_px · width`` bytes (≈ 0.45 GB for a 100,000
px wide slide).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import numpy.typing as npt
import tifffile

from qupath_camseg import __version__
from qupath_camseg._io import atomic_write
from qupath_camseg.synthetic.render import TileRenderer
from qupath_camseg.synthetic.stain_shift import StainShift
from qupath_camseg.synthetic.truth import SyntheticTruth, make_truth

__all__ = ["write_synthetic_slide", "pyramid_dimensions"]


def pyramid_dimensions(width: int, height: int, tile_px: int = 512) -> list[tuple[int, int]]:
    """Level sizes ``(width, height)``: halve (floor) until the level fits in one tile."""
    dims = [(int(width), int(height))]
    while max(dims[-1]) > tile_px and min(dims[-1]) >= 2:
        dims.append((dims[-1][0] // 2, dims[-1][1] // 2))
    return dims


def _down2(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2×2 mean (rounded) of an (H, W, 3) uint8 array with even H and W."""
    h, w = a.shape[0] // 2, a.shape[1] // 2
    s = a.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3), dtype=np.uint16)
    return ((s + 2) // 4).astype(np.uint8)


class _PyramidSpill:
    """Builds levels >= 1 strip by strip from level-0 tiles; spills finished tiles (zstd)."""

    def __init__(self, dims: list[tuple[int, int]], tile: int, spill: object) -> None:
        self.dims, self.tile, self.spill = dims, tile, spill
        self.ntx = [-(-w // tile) for w, _ in dims]
        self.nty = [-(-h // tile) for _, h in dims]
        self.bufs = {lv: np.empty((tile, self.ntx[lv] * tile, 3), np.uint8) for lv in range(1, len(dims))}
        for buf in self.bufs.values():
            buf[:] = 255
        self.index: dict[int, list[tuple[int, int]]] = {lv: [] for lv in range(1, len(dims))}

    def _put(self, level: int, src_row: int, x: int, block: npt.NDArray[np.uint8]) -> None:
        if level >= len(self.dims):
            return
        buf = self.bufs[level]
        r0, w = (src_row % 2) * (self.tile // 2), min(block.shape[1], buf.shape[1] - x)
        if w > 0:
            buf[r0:r0 + block.shape[0], x:x + w] = block[:, :w]

    def add_tile(self, ty: int, tx: int, tile: npt.NDArray[np.uint8]) -> None:
        self._put(1, ty, tx * self.tile // 2, _down2(tile))

    def end_row(self, level: int, row: int) -> None:
        """Level ``level`` finished tile row ``row``: flush the level below when its strip is full."""
        lv, last = level + 1, row == self.nty[level] - 1
        if lv >= len(self.dims) or not (row % 2 == 1 or last):
            return
        strip = row // 2
        if strip >= self.nty[lv]:
            return
        buf = self.bufs[lv]
        if row % 2 == 0:
            buf[self.tile // 2:] = 255
        for tx in range(self.ntx[lv]):
            data = imagecodecs.zstd_encode(np.ascontiguousarray(buf[:, tx * self.tile:(tx + 1) * self.tile]).tobytes(), level=1)
            self.index[lv].append((self.spill.tell(), len(data)))  # type: ignore[attr-defined]
            self.spill.write(data)  # type: ignore[attr-defined]
        self._put(lv + 1, strip, 0, _down2(buf))
        self.end_row(lv, strip)

    def tiles(self, level: int) -> Iterator[npt.NDArray[np.uint8]]:
        for offset, nbytes in self.index[level]:
            self.spill.seek(offset)  # type: ignore[attr-defined]
            raw = imagecodecs.zstd_decode(self.spill.read(nbytes))  # type: ignore[attr-defined]
            yield np.frombuffer(raw, np.uint8).reshape(self.tile, self.tile, 3)
        self.spill.seek(0, 2)  # type: ignore[attr-defined]


def _render_at(renderer: TileRenderer, y0: int, n: int, x0: int) -> npt.NDArray[np.uint8]:
    return renderer.render(x0, y0, n)


def write_synthetic_slide(path: str | Path, *, width: int, height: int, seed: int = 0, mpp: float = 0.25,
                          tile_px: int = 512, tumor: bool = True, jpeg_quality: int = 95,
                          workers: int | None = None, stain_shift: StainShift | None = None) -> SyntheticTruth:
    """Write a synthetic pyramidal tiled JPEG TIFF (Camelyon16 layout) and return its truth.

    ``width``/``height`` in level-0 px; ``mpp`` level-0 µm/px (stored as XResolution /
    YResolution in px/cm on every level); ``tile_px`` a multiple of 16. Atomic: the file appears
    only when complete. Deterministic: same arguments, same pixels and truth (for any
    ``workers``: threads that render one row of tiles and JPEG-encode in parallel; default
    ``min(os.cpu_count(), 8)``; one row of tiles, ``3 · tile_px² · width / tile_px`` bytes, is
    held at a time). ``stain_shift`` renders another stain profile
    (:mod:`qupath_camseg.synthetic.stain_shift`; same truth, other colours); ``None`` keeps the
    default profile, bit for bit.
    """
    if tile_px % 16:
        raise ValueError(f"tile_px must be a multiple of 16 (got {tile_px})")
    path = Path(path)
    truth = make_truth(width, height, seed=seed, mpp=mpp, tumor=tumor)
    renderer = TileRenderer(truth, stain_shift)
    dims = pyramid_dimensions(width, height, tile_px)
    bigtiff = width * height * 3 > 2**31
    with tempfile.TemporaryFile(dir=path.parent, prefix=".qcamseg-spill-") as spill:
        pyramid = _PyramidSpill(dims, tile_px, spill)

        n_workers = max(1, min(os.cpu_count() or 1, 8) if workers is None else int(workers))
        pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None

        def level0() -> Iterator[npt.NDArray[np.uint8]]:
            nty, ntx = pyramid.nty[0], pyramid.ntx[0]
            for ty in range(nty):
                xs = [tx * tile_px for tx in range(ntx)]
                render = functools.partial(_render_at, renderer, ty * tile_px, tile_px)
                row = list(pool.map(render, xs)) if pool is not None else map(render, xs)
                for tx, tile in enumerate(row):
                    pyramid.add_tile(ty, tx, tile)
                    if tx == ntx - 1:
                        pyramid.end_row(0, ty)
                    yield tile

        with contextlib.ExitStack() as stack:
            if pool is not None:
                stack.callback(pool.shutdown, cancel_futures=True)
            fh = stack.enter_context(atomic_write(path, "wb"))
            handle = tifffile.FileHandle(fh, mode="wb", name=path.name)
            tif = stack.enter_context(tifffile.TiffWriter(handle, bigtiff=bigtiff))
            for level, (w, h) in enumerate(dims):
                ds = width / w
                tif.write(
                    level0() if level == 0 else pyramid.tiles(level),
                    shape=(h, w, 3), dtype=np.uint8, tile=(tile_px, tile_px),
                    photometric="rgb", subsampling=(1, 1),  # stored as JPEG YCbCr 4:4:4
                    compression="jpeg", compressionargs={"level": int(jpeg_quality)},
                    resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER",
                    subfiletype=0 if level == 0 else 1, metadata=None,
                    description=_description(seed, mpp, stain_shift) if level == 0 else None,
                    software=f"qupath-camseg {__version__}", maxworkers=n_workers,
                )
    return truth


def _description(seed: int, mpp: float, stain_shift: StainShift | None) -> str:
    """The level-0 ImageDescription (the stain shift named only when there is one)."""
    shift = "" if stain_shift is None else f" stain={stain_shift.name}"
    return f"qupath-camseg synthetic slide seed={seed} mpp={mpp}{shift}"
