"""Rendering a synthetic slide's pixels from its truth (:mod:`qupath_camseg.synthetic.truth`).

Tumour differs from normal tissue in colour and texture at every scale used in practice
(0.25–4 µm/px): dense small dark lymphocyte nuclei on eosin-pink background with patches of fat
vacuoles, against larger, paler, crowded pleomorphic tumour nuclei; at 2 µm/px normal tissue is
dark blue-purple and tumour clearly paler and pinker with visible nuclei.

Everything is a pure function of ``seed`` and level-0 coordinates: tiles are rendered
independently (vectorised numpy, one hashed jittered grid per nucleus population, no per-nucleus
Python loops), so rendering is seamless, deterministic and parallel-safe.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
import shapely
from PIL import Image, ImageDraw
from shapely.geometry import Polygon, box

from qupath_camseg.synthetic.stain_shift import DEFAULT_E_OD as _E_OD
from qupath_camseg.synthetic.stain_shift import DEFAULT_H_OD as _H_OD
from qupath_camseg.synthetic.stain_shift import StainShift
from qupath_camseg.synthetic.truth import SyntheticTruth

__all__ = ["TileRenderer", "render_region"]

_BACKGROUND_RGB = (242, 241, 244)


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


class TileRenderer:
    """Renders any level-0 square of a slide from its truth; thread-safe, pure in (x0, y0).
    ``stain`` shifts the stain profile (:mod:`qupath_camseg.synthetic.stain_shift`; ``None``: the default)."""

    def __init__(self, truth: SyntheticTruth, stain: StainShift | None = None) -> None:
        self.truth, self.stain = truth, stain
        light = (1.0, 1.0, 1.0) if stain is None else stain.light
        self._h_od = _H_OD if stain is None or stain.h_od is None else np.array(stain.h_od, np.float32)
        self._e_od = _E_OD if stain is None or stain.e_od is None else np.array(stain.e_od, np.float32)
        self._white = [np.float32(255 * f) for f in light]
        self._background = tuple(int(round(b * f)) for b, f in zip(_BACKGROUND_RGB, light))
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
        out[:] = self._background
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
        if self.stain is not None:
            h, e = h * np.float32(self.stain.h_scale), e * np.float32(self.stain.e_scale)
        for c in range(3):
            chan = np.exp(-(h * self._h_od[c] + e * self._e_od[c] + np.float32(0.03))) * self._white[c] + np.float32(0.5)
            out[..., c] = np.where(tissue, chan, self._background[c]) if not tissue.all() else chan
        return out


def render_region(truth: SyntheticTruth, box_px: tuple[int, int, int, int], *,
                  stain: StainShift | None = None) -> npt.NDArray[np.uint8]:
    """Render the level-0 box ``(x, y, width, height)`` of a synthetic slide directly (no file):
    RGB uint8 ``(height, width, 3)``, identical to the file's level 0 before JPEG compression
    (``stain``: the file's stain shift, if any)."""
    x, y, w, h = (int(v) for v in box_px)
    renderer = TileRenderer(truth, stain)
    tile = 512
    out = np.empty((h, w, 3), np.uint8)
    for ty in range(math.floor(y / tile), math.ceil((y + h) / tile)):
        for tx in range(math.floor(x / tile), math.ceil((x + w) / tile)):
            t = renderer.render(tx * tile, ty * tile, tile)
            ox0, oy0 = max(x, tx * tile), max(y, ty * tile)
            ox1, oy1 = min(x + w, (tx + 1) * tile), min(y + h, (ty + 1) * tile)
            out[oy0 - y:oy1 - y, ox0 - x:ox1 - x] = t[oy0 - ty * tile:oy1 - ty * tile, ox0 - tx * tile:ox1 - tx * tile]
    return out
