"""Low-resolution tissue detection: where a slide is analysed.

:func:`detect_tissue` reads the slide at ``mask_mpp`` (8 µm/px by default: a 100,000 px slide at
0.25 µm/px gives a 3,125 px mask) and :func:`tissue_mask_from_rgb` classifies each pixel, in the
spirit of the field's standard detectors (saturation Otsu with morphology and hole filling, as
CLAM, WSInfer, TIAToolbox and HistoQC do it) but keeping pale tissue and leaving ink out:

1. **Marker ink and black marks** are found first (:mod:`qupath_camseg.wsi.tissue_ink`: blue,
   green, black pen, slide edges and scanner borders, by hue and neutrality, as regions at least
   a marker stroke wide, so dark haematoxylin-dense tissue is never taken for ink).
2. **Not glass**: HSV saturation above an Otsu threshold of the image's own saturation (glass and
   dust are grey, stained tissue is not), clamped to 0.04–0.08 so that pale stroma, capsule and fat
   septa stay in and an empty slide stays empty.
3. **Morphology** (sizes in µm, scaled by ``mask_mpp``): closing with a :data:`CLOSING_UM` µm
   square, then **every enclosed hole filled** (lymph-node parenchyma, germinal centres, hilar
   fat and sinuses inside a section are tissue), then the ink removed and pieces under
   :data:`MIN_OBJECT_UM`² dropped (dust, debris).

:data:`DETECTOR_VERSION` names these rules: prediction settings keys include it, so outputs made
with other rules are recomputed. :mod:`qupath_camseg.wsi.tissue_reference` holds the plain
"standard rule" the figures and tests compare against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

from qupath_camseg.annotations import vectorize
from qupath_camseg.wsi.slides import Slide
from qupath_camseg.wsi.tissue_ink import dilate_square, ink_mask_from, saturation_u8

__all__ = ["CLOSING_UM", "DETECTOR_VERSION", "INK_HOLE_UM", "MIN_OBJECT_UM", "TissueMask", "detect_tissue",
           "summed_area_table", "tissue_mask_from_rgb"]

#: Version of the detection rules (bumped when they change what is tissue).
DETECTOR_VERSION = 2
#: Closing size (µm): bridges the pale gaps between cells and fat septa.
CLOSING_UM = 16.0
#: Holes closed partly by marker ink are filled up to this size (µm, side of a square); larger
#: ones may be glass circled by a pen.
INK_HOLE_UM = 1500.0
#: Pieces of tissue smaller than this (µm, side of a square) are dust or debris.
MIN_OBJECT_UM = 80.0


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
        (:func:`~qupath_camseg.annotations.masks.vectorize`, on the mask's bounding box only);
        simplified by half a mask pixel unless ``simplify_px`` (level-0 px) is given."""
        box = _box(self.mask, 0)
        if box is None:
            return MultiPolygon()
        ds = self.downsample
        polys = vectorize(self.mask[box], origin_px=(box[1].start * ds, box[0].start * ds), downsample=ds)
        tol = 0.5 * ds if simplify_px is None else simplify_px
        if tol > 0 and polys:  # all at once (GEOS loops in C): Douglas-Peucker, and where that
            # breaks a polygon (a ring crossing itself or collapsing), the topology-preserving kind
            arr = np.array(polys, dtype=object)
            simple = shapely.simplify(arr, tol, preserve_topology=False)
            bad = shapely.is_empty(simple) | ~shapely.is_valid(simple) | (shapely.get_type_id(simple) != 3)
            simple[bad] = shapely.simplify(arr[bad], tol, preserve_topology=True)
            polys = [p for p in simple if isinstance(p, Polygon) and not p.is_empty and p.area > 0]
        return MultiPolygon(polys)


def _otsu_u8(values: npt.NDArray[np.uint8]) -> int:
    """Otsu's threshold of uint8 ``values`` (from their histogram); 0 when there are none."""
    hist = np.bincount(values, minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    p = hist / total
    w = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w - mu) ** 2 / (w * (1 - w))
    return int(np.argmax(np.nan_to_num(between, nan=0.0, posinf=0.0)))


def _drop_small(mask: npt.NDArray[np.bool_], min_px: int) -> npt.NDArray[np.bool_]:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    fg = labels[mask]
    keep = np.bincount(fg, minlength=n + 1) >= min_px
    out = np.zeros_like(mask)
    out[mask] = keep[fg]
    return out


def _fill_holes(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``mask`` with every background region that does not touch the image border filled
    (background 4-connected, tissue 8-connected)."""
    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    inside = np.ones(n + 1, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        inside[edge] = False
    inside[0] = True  # label 0: the tissue itself
    return inside[labels]


def _fill_ink_holes(mask: npt.NDArray[np.bool_], ink: npt.NDArray[np.bool_], max_px: float) -> npt.NDArray[np.bool_]:
    """``mask`` with the holes that tissue and ink enclose together filled: background regions
    of ``mask | ink`` not touching the border, of at most ``max_px`` pixels, more of whose rim
    touches tissue than ink (a stroke across a tissue hole, not glass circled by a pen). Called on a
    crop around where ink meets tissue, so a hole reaching beyond the crop stays open."""
    labels, n = ndimage.label(~(mask | ink))
    if n == 0:
        return mask
    rim_tissue = np.bincount(labels[dilate_square(mask, 1)], minlength=n + 1)
    rim_ink = np.bincount(labels[dilate_square(ink, 1)], minlength=n + 1)
    fill = (np.bincount(labels.ravel(), minlength=n + 1) <= max_px) & (rim_tissue > rim_ink)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        fill[edge] = False
    fill[0] = False
    return mask | fill[labels]


def _box(mask: npt.NDArray[np.bool_], margin: int) -> tuple[slice, slice] | None:
    """The bounding box of ``mask``'s True pixels grown by ``margin`` px (clipped); None if empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def _threshold(sat: npt.NDArray[np.uint8], mn: npt.NDArray[np.uint8], ink: npt.NDArray[np.bool_]) -> int:
    """The saturation threshold (0–255): Otsu's over what is neither empty white (unscanned
    areas) nor ink, clamped to 10–20 (0.04–0.08)."""
    judged = sat[(mn < 250) & ~ink]
    return min(max(_otsu_u8(judged), 10), 20) if judged.size > 16 else 10


def tissue_mask_from_rgb(rgb: npt.NDArray[np.uint8], *, mask_mpp: float = 8.0) -> npt.NDArray[np.bool_]:
    """Tissue (True) vs glass, pen ink and black marks for an RGB uint8 image ``(H, W, 3)`` of
    a slide at ``mask_mpp`` µm/px (sizes of the morphology steps scale with it). Returns bool (H, W)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3) (got {rgb.shape})")
    out = np.zeros(rgb.shape[:2], bool)
    if out.size == 0:
        return out
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    sat = saturation_u8(mx, mn)
    ink = ink_mask_from(rgb, mx, mn, sat, mask_mpp=mask_mpp)
    mask = (sat > _threshold(sat, mn, ink)) & ~ink
    del sat, mx, mn
    radius = max(1, round(CLOSING_UM / mask_mpp))
    box = _box(mask, radius + 1)  # the morphology runs where the candidates are
    if box is None:
        return out
    sub = ~dilate_square(~dilate_square(mask[box], radius), radius)  # closing
    ink = ink[box]
    sub = _fill_holes(sub)
    touching = _box(dilate_square(ink, 1) & sub, math.ceil(INK_HOLE_UM / mask_mpp)) if ink.any() else None
    if touching is not None:  # a stroke across the tissue must not open its holes (looked for near the stroke)
        sub[touching] = _fill_ink_holes(sub[touching], ink[touching], (INK_HOLE_UM / mask_mpp) ** 2)
    sub &= ~ink
    out[box] = _drop_small(sub, max(1, round((MIN_OBJECT_UM / mask_mpp) ** 2)))
    return out


def detect_tissue(slide: Slide, *, mask_mpp: float = 8.0) -> TissueMask:
    """The tissue mask of ``slide`` at ``mask_mpp`` µm/px (needs the slide's mpp: pass
    ``mpp=`` to :func:`~qupath_camseg.wsi.slides.open_slide` for files without one)."""
    rgb, _ = slide.read_thumbnail_mpp(mask_mpp)
    mask = tissue_mask_from_rgb(rgb, mask_mpp=mask_mpp)
    downsample = slide.dimensions[0] / mask.shape[1]  # exact level-0 px per mask column
    return TissueMask(mask, downsample)
