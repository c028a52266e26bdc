"""Low-resolution tissue detection, used to skip background tiles.

:func:`detect_tissue` reads the slide at ``mask_mpp`` (8 µm/px by default: a 100,000 px slide at
0.25 µm/px gives a 3,125 px mask) and :func:`tissue_mask_from_rgb` classifies each pixel:

1. **Not glass**: saturation above an Otsu threshold (clamped to 0.05–0.20, so an empty slide
   gives an empty mask and an all-tissue image still splits sensibly) and optical density above
   0.05 (white, grey glass and dust are unsaturated or transparent).
2. **Not ink, not black**: H&E absorbs green at least as much as red (OD_green/OD_red ≥ 1.08
   for haematoxylin, ≈ 14 for eosin), whereas blue, green and most marker inks absorb red more
   than green: pixels with OD_green < 0.8 · OD_red are pen marks. Pixels darker than ~50 in every
   channel (mean OD > 1.6) are black borders, scanner edges or black ink. Both masks are dilated by
   one pixel to take the blurred fringe of strokes and borders too.
3. **Morphology** (sizes in µm, scaled by ``mask_mpp``): closing with a 16 µm disc, holes under
   (100 µm)² filled, objects under (40 µm)² removed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from skimage import filters, measure, morphology

from qupath_camseg.wsi.slides import Slide

__all__ = ["TissueMask", "detect_tissue", "summed_area_table", "tissue_mask_from_rgb"]


def summed_area_table(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    """``int32 (H + 1, W + 1)`` table ``t`` with ``t[r, c]`` = tissue pixels in ``mask[:r, :c]``,
    built in place (4 bytes per mask pixel; masks stay far below 2³¹ pixels)."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=table[1:, 1:])
    np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
    return table


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask ``(H, W)``; mask pixel (r, c) covers level-0
    ``[c·downsample, (c+1)·downsample) × [r·downsample, (r+1)·downsample)``."""

    mask: npt.NDArray[np.bool_]
    downsample: float

    def __post_init__(self) -> None:
        m = np.asarray(self.mask, dtype=bool)
        if m.ndim != 2:
            raise ValueError(f"a tissue mask must be 2-D (got shape {m.shape})")
        if not self.downsample > 0:
            raise ValueError(f"downsample must be positive (got {self.downsample})")
        object.__setattr__(self, "mask", m)

    @functools.cached_property
    def _integral(self) -> npt.NDArray[np.int32]:
        """The mask's summed-area table, built on the first :meth:`fraction` call."""
        return summed_area_table(self.mask)

    def fraction(self, box_px: tuple[float, float, float, float]) -> float:
        """Fraction (0–1) of the level-0 box ``(x, y, width, height)`` covered by tissue, from
        the mask pixels the box touches (area outside the slide counts as background)."""
        x, y, w, h = (float(v) for v in box_px)
        if w <= 0 or h <= 0:
            return 0.0
        c0, r0 = int(np.floor(x / self.downsample)), int(np.floor(y / self.downsample))
        c1, r1 = int(np.ceil((x + w) / self.downsample)), int(np.ceil((y + h) / self.downsample))
        total = (c1 - c0) * (r1 - r0)
        H, W = self.mask.shape
        cc0, rr0, cc1, rr1 = min(max(c0, 0), W), min(max(r0, 0), H), min(max(c1, 0), W), min(max(r1, 0), H)
        s = self._integral
        inside = int(s[rr1, cc1]) - int(s[rr0, cc1]) - int(s[rr1, cc0]) + int(s[rr0, cc0])
        return float(inside) / total if total > 0 else 0.0

    @property
    def area_fraction(self) -> float:
        """Fraction of the whole mask that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_polygons(self, *, simplify_px: float | None = None) -> MultiPolygon:
        """The tissue as a MultiPolygon (with holes) in level-0 px, traced along mask pixel edges
        midway between pixel centres; simplified by half a mask pixel unless ``simplify_px``."""
        padded = np.pad(self.mask, 1).astype(np.float32)
        rings = [c for c in measure.find_contours(padded, 0.5) if len(c) >= 4]
        ds = self.downsample
        region = Polygon()
        for ring in rings:
            xy = np.column_stack([(ring[:, 1] - 1 + 0.5) * ds, (ring[:, 0] - 1 + 0.5) * ds])
            poly = shapely.make_valid(Polygon(xy))
            region = region.symmetric_difference(poly)  # even-odd rule: nested rings become holes
        tol = 0.5 * ds if simplify_px is None else simplify_px
        if tol > 0:
            region = region.simplify(tol, preserve_topology=True)
        polys = [g for g in getattr(region, "geoms", [region]) if isinstance(g, Polygon) and not g.is_empty]
        return MultiPolygon(polys)


#: Optical density ``-ln(max(v, 1) / 255)`` of each byte value ``v`` (float32).
_RAW_OD = -np.log(np.clip(np.arange(256, dtype=np.float32), 1, 255) * np.float32(1 / 255))


@functools.lru_cache(maxsize=16)
def _disk(radius: int) -> npt.NDArray[np.bool_]:
    return morphology.disk(max(radius, 0)).astype(bool)


def _drop_small(mask: npt.NDArray[np.bool_], min_px: int) -> npt.NDArray[np.bool_]:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def tissue_mask_from_rgb(rgb: npt.NDArray[np.uint8], *, mask_mpp: float = 8.0) -> npt.NDArray[np.bool_]:
    """Tissue (True) vs glass, pen ink and black borders for an RGB uint8 image ``(H, W, 3)`` of
    a slide at ``mask_mpp`` µm/px (sizes of the morphology steps scale with it). Returns bool (H, W)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3) (got {rgb.shape})")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return np.zeros(rgb.shape[:2], bool)
    # float32 planes, updated in place: the mask may be ~1 Mpx, and its temporaries set the peak
    # memory of a whole-slide prediction
    r, g, b = (
        ndimage.gaussian_filter(rgb[..., c].astype(np.float32) * np.float32(1 / 255), 0.7, output=np.float32)
        for c in range(3)
    )
    od_mean = np.zeros(r.shape, np.float32)
    for c in (r, g, b):
        od_mean -= np.log(np.clip(c, np.float32(1 / 255), np.float32(1)))
    od_mean /= 3
    mx = np.maximum(np.maximum(r, g), b)
    sat = np.minimum(np.minimum(r, g), b)
    np.subtract(mx, sat, out=sat)
    sat /= np.maximum(mx, np.float32(1e-3))
    del r, g, b, mx

    # ink and black are judged on the unblurred pixels (blurring a thin stroke into white glass
    # would bring its colour towards H&E ratios); optical density of a byte value from a table
    od_red, od_green, od_blue = (_RAW_OD[rgb[..., c]] for c in range(3))
    dark = (od_red + od_green + od_blue) / 3 > 1.6
    ink = (od_green < 0.8 * od_red) & (od_red > 0.25)
    del od_red, od_green, od_blue
    um = 1.0 / mask_mpp  # mask px per µm
    excluded = ndimage.binary_dilation(dark | ink, _disk(max(1, round(16 * um))))

    candidates = sat[~excluded & (od_mean > 0.02)]
    if candidates.size > 16 and np.ptp(candidates) > 0.02:
        threshold = float(np.clip(filters.threshold_otsu(candidates), 0.04, 0.08))
    else:
        threshold = 0.04
    mask = (sat > threshold) & (od_mean > 0.05) & ~excluded

    radius = max(1, round(8 * um))
    mask = ndimage.binary_closing(np.pad(mask, radius), _disk(radius))[radius:-radius, radius:-radius]
    mask = ~_drop_small(~mask, max(1, int((100 * um) ** 2)))  # fill small holes
    mask = _drop_small(mask, max(1, int((40 * um) ** 2)))
    return mask & ~excluded


def detect_tissue(slide: Slide, *, mask_mpp: float = 8.0) -> TissueMask:
    """The tissue mask of ``slide`` at ``mask_mpp`` µm/px (needs the slide's mpp: pass
    ``mpp=`` to :func:`~qupath_camseg.wsi.slides.open_slide` for files without one)."""
    rgb, _ = slide.read_thumbnail_mpp(mask_mpp)
    mask = tissue_mask_from_rgb(rgb, mask_mpp=mask_mpp)
    downsample = slide.dimensions[0] / mask.shape[1]  # exact level-0 px per mask column
    return TissueMask(mask, downsample)
