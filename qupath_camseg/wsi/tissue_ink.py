"""Pen marker ink and black marks on a low-resolution slide image: what tissue detection excludes.

H&E colours lie between haematoxylin (blue-purple) and eosin (pink): hue 250°–360° and 0°–30°,
and every mixture absorbs green at least as much as red (optical density ratio OD_green / OD_red
≥ 1.08 for haematoxylin, ≈ 14 for eosin; Ruifrok & Johnston's stain vectors). Marker ink does not:

* **blue and green ink** (hue 70°–245°): blue absorbs red far more than green (OD_green / OD_red
  ≈ 0.7), green absorbs red and blue. Over tissue the colours mix by multiplying transmissions,
  which keeps the hue of a dense ink (blue over purple node ≈ 238°) while the OD ratio moves
  towards the tissue's, so the hue decides where the ink lies;
* **black ink, slide edges, scanner borders** are dark and *neutral*: all three optical densities
  alike (min / max OD > 0.75), whereas haematoxylin-dense tissue, however dark, keeps its blue
  channel bright (min / max OD ≤ 0.65 on the real slides).

A pixel alone decides nothing. A mark is a connected region of *weak* ink evidence that holds a
*core*: pixels of unmistakable ink (coloured: OD_green < 0.8 · OD_red, which no H&E mixture
reaches; black: mean OD > 1, min / max OD > 0.8) at least :data:`CORE_WIDTH_UM` µm wide. Marker
strokes are 0.3–1 mm wide; isolated dark or odd-coloured pixels (JPEG noise, a stray nucleus) are
not, so they never punch holes into tissue. The mark is then grown by
:data:`FRINGE_UM` µm to take the blurred edge of the stroke too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["CORE_WIDTH_UM", "FRINGE_UM", "dilate_square", "erode_square", "ink_mask", "ink_mask_from", "saturation_u8"]

#: Width (µm) a core of unmistakable ink must have (a marker stroke: 300–1000 µm; 24 µm is
#: three pixels of the default 8 µm/px mask).
CORE_WIDTH_UM = 24.0
#: Width (µm) of the blurred fringe added around each mark.
FRINGE_UM = 12.0

_OD = -np.log(np.clip(np.arange(256, dtype=np.float32), 1, 255) / np.float32(255))
_HUE_INK = (70.0, 245.0)  # degrees: green, cyan, blue
_EIGHT = np.ones((3, 3), bool)


def dilate_square(mask: npt.NDArray[np.bool_], radius: int) -> npt.NDArray[np.bool_]:
    """``mask`` dilated by a ``(2·radius + 1)²`` square (shifted ORs: fast on large masks)."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


def erode_square(mask: npt.NDArray[np.bool_], radius: int) -> npt.NDArray[np.bool_]:
    """``mask`` eroded by a ``(2·radius + 1)²`` square; outside the image counts as background."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                out[k:] &= src[:-k]
                out[:-k] &= src[k:]
                out[:k] = False
                out[-k:] = False
            else:
                out[:, k:] &= src[:, :-k]
                out[:, :-k] &= src[:, k:]
                out[:, :k] = False
                out[:, -k:] = False
    return out


def _hue_deg(r: npt.NDArray[np.float32], g: npt.NDArray[np.float32], b: npt.NDArray[np.float32]
             ) -> npt.NDArray[np.float32]:
    """HSV hue in degrees (0–360) of pixels given as three float32 channel columns (n,)."""
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    d = np.maximum(mx - mn, np.float32(1e-3))
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (h * 60).astype(np.float32)


def _black(flat: npt.NDArray[np.uint8], mx: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.intp], ...]:
    """Flat indices of ``(weak, core)`` black evidence: dark and neutral (only dark pixels are judged;
    neutral with mean OD > 0.5 needs every channel below ≈ 166)."""
    idx = np.flatnonzero(mx < 170)
    od = [_OD[flat[idx, c]] for c in range(3)]
    od_max, od_min = np.maximum(np.maximum(*od[:2]), od[2]), np.minimum(np.minimum(*od[:2]), od[2])
    od_mean = (od[0] + od[1] + od[2]) / 3
    weak = (od_min > 0.75 * od_max) & (od_mean > 0.5)
    core = weak & (od_mean > 1.0) & (od_min > 0.8 * od_max)
    return idx[weak], idx[core]


def _coloured(flat: npt.NDArray[np.uint8], candidates: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], ...]:
    """Flat indices of ``(weak, core)`` blue/green ink evidence among ``candidates`` (saturated,
    red not the brightest channel)."""
    idx = np.flatnonzero(candidates)
    r, g, b = (flat[idx, c].astype(np.int16) for c in range(3))
    lo = np.minimum(np.minimum(r, g), b)
    maybe = (g >= b) | (12 * (r - g) <= b - lo)  # green the brightest, or blue with hue ≤ 245° (integers)
    idx, r, g, b = idx[maybe], r[maybe], g[maybe], b[maybe]
    hue = _hue_deg(r.astype(np.float32), g.astype(np.float32), b.astype(np.float32))
    weak = (hue >= _HUE_INK[0]) & (hue <= _HUE_INK[1])
    od_r, od_g = _OD[r], _OD[g]
    core = weak & (od_g < 0.8 * od_r) & (od_r > 0.25)
    return idx[weak], idx[core]


def _evidence(rgb: npt.NDArray[np.uint8], mx: npt.NDArray[np.uint8], mn: npt.NDArray[np.uint8],
              sat: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """``(weak, core)`` ink evidence, bool (H, W) each, judged on the pixels that could be ink only."""
    weak = np.zeros(mx.shape, bool)
    core = np.zeros(mx.shape, bool)
    flat = rgb.reshape(-1, 3)
    colour = (sat > 38) & (rgb[..., 0] < mx) & (mn < 230)  # saturation > 0.15, red not the brightest
    for w, c in (_black(flat, mx), _coloured(flat, colour)):
        weak.ravel()[w] = True
        core.ravel()[c] = True
    return weak, core


def saturation_u8(mx: npt.NDArray[np.uint8], mn: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """HSV saturation ``(max - min) / max`` scaled to 0–255 (uint8) from the per-pixel channel
    maximum ``mx`` and minimum ``mn`` (uint8, same shape)."""
    sat = (mx - mn).astype(np.float32)
    sat *= np.float32(255)
    sat /= np.maximum(mx, 1)
    return sat.astype(np.uint8)


def ink_mask(rgb: npt.NDArray[np.uint8], *, mask_mpp: float) -> npt.NDArray[np.bool_]:
    """Marker ink and black marks (bool (H, W)) in an RGB uint8 image ``(H, W, 3)`` of a slide at
    ``mask_mpp`` µm/px."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    return ink_mask_from(rgb, mx, mn, saturation_u8(mx, mn), mask_mpp=mask_mpp)


def ink_mask_from(rgb: npt.NDArray[np.uint8], mx: npt.NDArray[np.uint8], mn: npt.NDArray[np.uint8],
                  sat: npt.NDArray[np.uint8], *, mask_mpp: float) -> npt.NDArray[np.bool_]:
    """:func:`ink_mask` given the per-pixel channel maximum ``mx``, minimum ``mn`` and
    :func:`saturation_u8` ``sat`` (uint8 (H, W) each)."""
    weak, core = _evidence(rgb, mx, mn, sat)
    out = np.zeros(weak.shape, bool)
    if not core.any():
        return out
    rows, cols = np.flatnonzero(weak.any(1)), np.flatnonzero(weak.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # work where the evidence is
    weak, core = weak[box], core[box]
    radius = int(CORE_WIDTH_UM / 2 / mask_mpp + 1e-9)
    core = dilate_square(erode_square(core, radius), radius) & core  # the cores that wide
    labels, n = ndimage.label(weak, structure=_EIGHT)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[core])] = True
    keep[0] = False
    out[box] = keep[labels]
    fringe = max(1, round(FRINGE_UM / mask_mpp))
    return dilate_square(out, fringe)
