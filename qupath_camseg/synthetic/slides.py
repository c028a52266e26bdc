"""Synthetic Camelyon-style whole-slide images with exact ground truth.

A slide is a lymph-node-like section on white glass: irregular tissue outline, dense small dark
lymphocyte nuclei, eosin-pink background, patches of fat vacuoles, and (unless ``tumor=False``)
metastases of varied size (one macro-metastasis, micro-metastases and isolated-tumour-cell
clusters < 200 µm) made of larger, paler, crowded pleomorphic nuclei, with islands of normal tissue
inside tumour (exclusion holes in the truth). Tumour differs from normal tissue in colour and
texture at every scale used in practice (0.25–4 µm/px): at 2 µm/px normal tissue is dark
blue-purple and tumour clearly paler and pinker with visible nuclei.

Everything is a pure function of ``seed`` and level-0 coordinates: tiles are rendered
independently (vectorised numpy, one hashed jittered grid per nucleus population, no per-nucleus
Python loops), so rendering is seamless, deterministic and parallel-safe.

The file is written like Camelyon16's own TIFFs: a pyramid of successive IFDs (level 0 first, each
level half the previous one, down to one tile), 512 px JPEG tiles (YCbCr 4:4:4, quality 95), XResolution /
YResolution in pixels per centimetre, so tiffslide and OpenSlide's generic-TIFF reader both report
the pyramid and the mpp. Writing streams tile by tile: lower levels are 2×2 means of the rendered
(not JPEG-decoded) level above, kept as one strip of tiles per level and spilled losslessly
(zstd) to a temporary file until their IFD is written. Memory stays near
``9 · tile_px · width`` bytes (≈ 0.45 GB for a 100,000 px wide slide).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import numpy.typing as npt
import shapely
import tifffile
from PIL import Image, ImageDraw
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.ops import unary_union

from qupath_camseg import __version__
from qupath_camseg._io import atomic_write

__all__ = ["SyntheticTruth", "make_truth", "write_synthetic_slide", "render_region", "pyramid_dimensions"]

_BACKGROUND_RGB = (242, 241, 244)
# Ruifrok & Johnston optical-density vectors (unit length) for haematoxylin and eosin.
_H_OD = np.array([0.650, 0.704, 0.286], np.float32) / np.float32(np.linalg.norm([0.650, 0.704, 0.286]))
_E_OD = np.array([0.072, 0.990, 0.105], np.float32) / np.float32(np.linalg.norm([0.072, 0.990, 0.105]))


@dataclass(frozen=True)
class SyntheticTruth:
    """Ground truth of a synthetic slide. Geometries in level-0 pixels (x right, y down).

    ``tumor``: metastases (empty MultiPolygon for tumour-free slides), holes are normal-tissue
    islands; ``tissue``: the tissue section(s); ``width``/``height`` in px; ``mpp`` in µm/px.
    """

    tumor: MultiPolygon
    tissue: MultiPolygon
    width: int
    height: int
    mpp: float
    seed: int


def _as_multi(geom: object) -> MultiPolygon:
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(polys)


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, *, rough: float) -> Polygon:
    """An irregular closed outline: an ellipse whose radius carries random low harmonics."""
    theta = np.linspace(0.0, 2.0 * np.pi, 192, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 9):
        r += rng.uniform(0.0, rough) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.55, None)
    rot = rng.uniform(0, np.pi)
    x, y = rx * r * np.cos(theta), ry * r * np.sin(theta)
    xs = cx + x * np.cos(rot) - y * np.sin(rot)
    ys = cy + x * np.sin(rot) + y * np.cos(rot)
    return shapely.make_valid(Polygon(np.column_stack([xs, ys]))).buffer(0)


def _place(rng: np.random.Generator, region: object, radius: float, taken: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """A random centre inside ``region`` shrunk by ``radius`` that keeps clear of ``taken``."""
    inner = region.buffer(-radius)  # type: ignore[attr-defined]
    if inner.is_empty:
        return None
    x0, y0, x1, y1 = inner.bounds
    prepared = shapely.prepared.prep(inner)
    for _ in range(300):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if prepared.contains(Point(x, y)) and all(math.hypot(x - a, y - b) > radius + r + 0.5 * min(radius, r) for a, b, r in taken):
            return x, y
    return None


def make_truth(width: int, height: int, *, seed: int, mpp: float = 0.25, tumor: bool = True) -> SyntheticTruth:
    """Draw the tissue and tumour geometry of a synthetic slide (level-0 px), deterministic by ``seed``.

    Tumours: one macro-metastasis (≈ 25–40 % of the node's diameter), one or two
    micro-metastases, and two isolated-tumour-cell clusters of 60–160 µm; the larger ones carry
    one or two islands of normal tissue (holes). ``tumor=False`` gives a tumour-free slide.
    """
    if width < 256 or height < 256:
        raise ValueError(f"synthetic slides need width and height >= 256 px (got {width}x{height})")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive (got {mpp})")
    rng = np.random.default_rng([int(seed), 0x51DE])
    frame = box(0.02 * width, 0.02 * height, 0.98 * width, 0.98 * height)
    main = _blob(rng, width * rng.uniform(0.47, 0.53), height * rng.uniform(0.47, 0.53),
                 0.40 * width * rng.uniform(0.85, 1.0), 0.40 * height * rng.uniform(0.85, 1.0), rough=0.16)
    parts = [main]
    if rng.uniform() < 0.7:  # a small detached fragment in a corner
        fx, fy = rng.choice([0.12, 0.88]), rng.choice([0.12, 0.88])
        rad = 0.09 * min(width, height)
        parts.append(_blob(rng, fx * width, fy * height, rad * rng.uniform(0.8, 1.2), rad, rough=0.25))
    tissue = unary_union(parts).intersection(frame)
    tumors: list[Polygon] = []
    if tumor:
        node_um = 0.8 * min(width, height) * mpp
        min_um, itc_um = 40.0, (60.0, 160.0)
        diam_um = [max(min_um, node_um * rng.uniform(0.25, 0.40))]
        diam_um += [max(min_um, node_um * rng.uniform(0.07, 0.15)) for _ in range(int(rng.integers(1, 3)))]
        diam_um += [rng.uniform(*itc_um) for _ in range(2)]
        taken: list[tuple[float, float, float]] = []
        for k, d_um in enumerate(diam_um):
            r = 0.5 * d_um / mpp
            centre = _place(rng, main.intersection(frame), r, taken)
            if centre is None:
                continue
            taken.append((centre[0], centre[1], r))
            shape = _blob(rng, centre[0], centre[1], r, r * rng.uniform(0.7, 1.0), rough=0.22 if k < 2 else 0.12)
            if d_um > 150.0:  # exclusion islands of normal tissue inside the tumour
                for _ in range(1 if k else 2):
                    a, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.4) * r
                    hole = _blob(rng, centre[0] + dist * np.cos(a), centre[1] + dist * np.sin(a),
                                 0.15 * r, 0.12 * r, rough=0.1)
                    shape = shape.difference(hole)
            tumors.append(shape)
    tumour_geom = unary_union(tumors).intersection(tissue) if tumors else MultiPolygon()
    return SyntheticTruth(_as_multi(tumour_geom), _as_multi(tissue), int(width), int(height), float(mpp), int(seed))


# ----------------------------------------------------------------------------------- rendering
def _hash(iy: npt.NDArray[np.int64], ix: npt.NDArray[np.int64], key: int) -> npt.NDArray[np.uint64]:
    """splitmix64 of (cell row, cell column, key): a reproducible random word per cell."""
    with np.errstate(over="ignore"):
        z = (iy.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (ix.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F))
        z = z ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniforms(h: npt.NDArray[np.uint64]) -> list[npt.NDArray[np.float32]]:
    return [((h >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.float32) / np.float32(65536) for s in (0, 16, 32, 48)]


def _blobs(x0: int, y0: int, n: int, *, spacing: float, r_min: float, r_max: float, aspect: float,
           p: float, key: int, soft: float = 0.8, offset: float = 0.0) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Coverage (0–1) and per-blob shade (0–1) of randomly sized, oriented ellipses, one per cell
    of a hashed jittered grid of ``spacing`` px, over the ``n``×``n`` px square at (x0, y0)."""
    cols = np.floor((x0 - offset + np.arange(n) + 0.5) / spacing).astype(np.int64)
    rows = np.floor((y0 - offset + np.arange(n) + 0.5) / spacing).astype(np.int64)
    iy, ix = np.meshgrid(np.arange(rows[0], rows[-1] + 1), np.arange(cols[0], cols[-1] + 1), indexing="ij")
    u0, u1, u2, u3 = _uniforms(_hash(iy, ix, key))
    u4, u5, u6, _ = _uniforms(_hash(iy, ix, key ^ 0x5A5A5A5A))
    a = r_min + (r_max - r_min) * u0
    b = a / (1.0 + (aspect - 1.0) * u1)
    th = np.float32(np.pi) * u2
    slack = np.maximum(0.5 * spacing - a, 0.0)
    cx = (ix + 0.5) * spacing + offset - x0 + (2 * u3 - 1) * slack
    cy = (iy + 0.5) * spacing + offset - y0 + (2 * u4 - 1) * slack
    c, s = np.cos(th), np.sin(th)
    qa, qc = c * c / a**2 + s * s / b**2, s * s / a**2 + c * c / b**2
    qb = 2 * c * s * (1 / a**2 - 1 / b**2)
    absent = u5 >= p
    qa[absent], qb[absent], qc[absent] = 1e3, 0.0, 1e3
    idx = (rows - rows[0])[:, None] * ix.shape[1] + (cols - cols[0])[None, :]
    xs = np.arange(n, dtype=np.float32) + np.float32(0.5)
    dx = xs[None, :] - cx.ravel().astype(np.float32)[idx]
    dy = xs[:, None] - cy.ravel().astype(np.float32)[idx]
    q = qa.ravel()[idx] * dx * dx + qb.ravel()[idx] * dx * dy + qc.ravel()[idx] * dy * dy
    gain = np.float32(0.25 * (r_min + r_max) / soft)
    cov = np.clip((1.0 - q) * gain + 0.5, 0.0, 1.0).astype(np.float32)
    return cov, u6.ravel()[idx]


def _smooth_noise(x0: int, y0: int, n: int, *, scale: float, key: int) -> npt.NDArray[np.float32]:
    """Value noise in [0, 1] varying over ``scale`` px: lattice values every ``scale`` px,
    smoothstep-interpolated on an 8 px grid, then bilinearly interpolated to pixels."""
    step = 8
    m = -(-n // step) + 1
    gx = (x0 + step * np.arange(m)) / scale
    gy = (y0 + step * np.arange(m)) / scale
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    lat = lambda dy, dx: _uniforms(_hash(iy[:, None] + dy, ix[None, :] + dx, key))[0]  # noqa: E731
    top = lat(0, 0) * (1 - fx)[None, :] + lat(0, 1) * fx[None, :]
    bot = lat(1, 0) * (1 - fx)[None, :] + lat(1, 1) * fx[None, :]
    v = (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(np.float32)
    return (_interp_matrix(n, step) @ v @ _interp_matrix(n, step).T).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _interp_matrix(n: int, step: int) -> npt.NDArray[np.float32]:
    """(n, n // step + 1) linear-interpolation weights from grid points k·step to pixels 0..n-1."""
    m = -(-n // step) + 1
    pos = (np.arange(n) + 0.5) / step
    k = np.clip(np.floor(pos).astype(int), 0, m - 2)
    f = (pos - k).astype(np.float32)
    w = np.zeros((n, m), np.float32)
    w[np.arange(n), k] = 1 - f
    w[np.arange(n), k + 1] = f
    return w


def _rasterize(geom: object, x0: int, y0: int, n: int) -> npt.NDArray[np.bool_]:
    """Pixels of the ``n``×``n`` square at (x0, y0) whose centres lie in ``geom`` (PIL scan fill)."""
    img = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(img)
    clipped = geom.intersection(box(x0 - 2, y0 - 2, x0 + n + 2, y0 + n + 2))  # type: ignore[attr-defined]
    for poly in getattr(clipped, "geoms", [clipped]):
        if not isinstance(poly, Polygon) or poly.is_empty:
            continue
        draw.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in poly.exterior.coords], fill=1)
        for ring in poly.interiors:
            draw.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in ring.coords], fill=0)
    return np.asarray(img, dtype=bool)


class _Renderer:
    """Renders any level-0 square of a slide from its truth; thread-safe, pure in (x0, y0)."""

    def __init__(self, truth: SyntheticTruth) -> None:
        self.truth = truth
        self.um = 1.0 / truth.mpp  # px per µm
        self.tissue = shapely.prepared.prep(truth.tissue)
        self.tumor = shapely.prepared.prep(truth.tumor) if not truth.tumor.is_empty else None
        self.key = (truth.seed * 0x2545F4914F6CDD1D + 0x1234567) & 0xFFFFFFFFFFFF

    def _mask(self, prepared: object, geom: object, x0: int, y0: int, n: int) -> npt.NDArray[np.bool_] | None:
        square = box(x0, y0, x0 + n, y0 + n)
        if prepared is None or not prepared.intersects(square):  # type: ignore[attr-defined]
            return None
        if prepared.contains(square):  # type: ignore[attr-defined]
            return np.ones((n, n), bool)
        return _rasterize(geom, x0, y0, n)

    def render(self, x0: int, y0: int, n: int) -> npt.NDArray[np.uint8]:
        """RGB uint8 (n, n, 3) of the level-0 square with top-left corner (x0, y0)."""
        tissue = self._mask(self.tissue, self.truth.tissue, x0, y0, n)
        out = np.empty((n, n, 3), np.uint8)
        out[:] = _BACKGROUND_RGB
        if tissue is None:
            return out
        tumour = self._mask(self.tumor, self.truth.tumor, x0, y0, n)
        um, k = self.um, self.key
        rng = np.random.default_rng([self.truth.seed, x0, y0, n])
        grain = rng.standard_normal((n, n), dtype=np.float32)
        mod_h = 0.85 + 0.3 * _smooth_noise(x0, y0, n, scale=180 * um, key=k + 1)
        mod_e = 0.8 + 0.4 * _smooth_noise(x0, y0, n, scale=120 * um, key=k + 2)
        normal = tissue if tumour is None else tissue & ~tumour
        h = e = None
        if normal.any():
            lym, shade = _blobs(x0, y0, n, spacing=8.5 * um, r_min=2.6 * um, r_max=3.4 * um, aspect=1.25, p=0.93, key=k + 3)
            lym2, _ = _blobs(x0, y0, n, spacing=11.0 * um, r_min=2.6 * um, r_max=3.2 * um, aspect=1.2, p=0.45, key=k + 4)
            lym = np.maximum(lym, lym2)
            h = 0.16 + lym * (1.05 + 0.3 * shade) + 0.02 * grain
            e = 0.24 - 0.144 * lym + 0.01 * grain
            fat = np.clip((_smooth_noise(x0, y0, n, scale=350 * um, key=k + 5) - 0.64) * 20.0, 0, 1)
            if fat.any():
                vac, _ = _blobs(x0, y0, n, spacing=60 * um, r_min=25 * um, r_max=29 * um, aspect=1.3, p=1.0, key=k + 6, soft=2.0)
                wall = fat * (1 - vac)
                h = h * (1 - fat) + 0.03 * wall
                e = e * (1 - fat) + 0.38 * wall
        if tumour is not None:
            nuc, shade = _blobs(x0, y0, n, spacing=13.0 * um, r_min=4.2 * um, r_max=7.0 * um, aspect=1.8, p=0.96, key=k + 7)
            nuc2, shade2 = _blobs(x0, y0, n, offset=6.5 * um, spacing=13.0 * um, r_min=3.8 * um, r_max=6.0 * um, aspect=1.6, p=0.3, key=k + 8)
            big = nuc2 > nuc
            nuc, shade = np.where(big, nuc2, nuc), np.where(big, shade2, shade)
            rim = np.clip(1 - np.abs(nuc - 0.35) * 4, 0, 1)
            ht = 0.10 + nuc * (0.34 + 0.22 * shade + 0.08 * grain) + 0.22 * rim
            et = 0.20 - 0.10 * nuc + 0.01 * grain
            if h is None:
                h, e = ht, et
            else:
                h, e = np.where(tumour, ht, h), np.where(tumour, et, e)
        h = np.maximum(h * mod_h, 0)
        e = np.maximum(e * mod_e, 0)
        for c in range(3):
            chan = np.exp(-(h * _H_OD[c] + e * _E_OD[c] + np.float32(0.03))) * np.float32(255) + np.float32(0.5)
            out[..., c] = np.where(tissue, chan, _BACKGROUND_RGB[c]) if not tissue.all() else chan
        return out


def render_region(truth: SyntheticTruth, box_px: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    """Render the level-0 box ``(x, y, width, height)`` of a synthetic slide directly (no file):
    RGB uint8 ``(height, width, 3)``, identical to the file's level 0 before JPEG compression."""
    x, y, w, h = (int(v) for v in box_px)
    renderer = _Renderer(truth)
    tile = 512
    out = np.empty((h, w, 3), np.uint8)
    for ty in range(math.floor(y / tile), math.ceil((y + h) / tile)):
        for tx in range(math.floor(x / tile), math.ceil((x + w) / tile)):
            t = renderer.render(tx * tile, ty * tile, tile)
            ox0, oy0 = max(x, tx * tile), max(y, ty * tile)
            ox1, oy1 = min(x + w, (tx + 1) * tile), min(y + h, (ty + 1) * tile)
            out[oy0 - y:oy1 - y, ox0 - x:ox1 - x] = t[oy0 - ty * tile:oy1 - ty * tile, ox0 - tx * tile:ox1 - tx * tile]
    return out


# ------------------------------------------------------------------------------------ writing
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


def _render_at(renderer: _Renderer, y0: int, n: int, x0: int) -> npt.NDArray[np.uint8]:
    return renderer.render(x0, y0, n)


def write_synthetic_slide(path: str | Path, *, width: int, height: int, seed: int = 0, mpp: float = 0.25,
                          tile_px: int = 512, tumor: bool = True, jpeg_quality: int = 95,
                          workers: int | None = None) -> SyntheticTruth:
    """Write a synthetic pyramidal tiled JPEG TIFF (Camelyon16 layout) and return its truth.

    ``width``/``height`` in level-0 px; ``mpp`` level-0 µm/px (stored as XResolution /
    YResolution in px/cm on every level); ``tile_px`` a multiple of 16. Atomic: the file appears
    only when complete. Deterministic: same arguments, same pixels and truth (for any
    ``workers``: threads that render one row of tiles and JPEG-encode in parallel; default
    ``min(os.cpu_count(), 8)``; one row of tiles, ``3 · tile_px² · width / tile_px`` bytes, is
    held at a time).
    """
    if tile_px % 16:
        raise ValueError(f"tile_px must be a multiple of 16 (got {tile_px})")
    path = Path(path)
    truth = make_truth(width, height, seed=seed, mpp=mpp, tumor=tumor)
    renderer = _Renderer(truth)
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
                    description=f"qupath-camseg synthetic slide seed={seed} mpp={mpp}" if level == 0 else None,
                    software=f"qupath-camseg {__version__}", maxworkers=n_workers,
                )
    return truth
