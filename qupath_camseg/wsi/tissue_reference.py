"""The field's standard tissue rule, for comparison only (figures, tests, benchmarks).

What CLAM, WSInfer and most patch pipelines do on a slide thumbnail, with their sizes turned into
µm so that any ``mask_mpp`` gives the same physical rule:

1. HSV saturation (0–255), median-filtered over a :data:`MEDIAN_UM` µm square;
2. Otsu's threshold of that image, strictly above it is tissue;
3. closing with a :data:`CLOSING_UM` µm square, objects under (:data:`MIN_OBJECT_UM` µm)² dropped;
4. **every hole filled**.

It knows nothing of ink: a black or coloured mark on the glass is saturated enough to count as
tissue. :func:`reference_retention` is the acceptance measure of issue 15: the share of the
reference's tissue that a mask keeps, not counting the reference's objects that are mostly marker
ink (they are not tissue).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage.filters import rank

from qupath_camseg.wsi.tissue_ink import dilate_square, saturation_u8

__all__ = ["CLOSING_UM", "MEDIAN_UM", "MIN_OBJECT_UM", "reference_marks", "reference_retention", "standard_tissue_mask"]

#: Median filter size (µm): CLAM's and WSInfer's 7 px at ≈ 8 µm/px.
MEDIAN_UM = 56.0
#: Closing size (µm): WSInfer's 6 px kernel at ≈ 8 µm/px.
CLOSING_UM = 48.0
#: Smallest object kept (µm, side of a square): WSInfer's default (200 µm)².
MIN_OBJECT_UM = 200.0


def _odd_px(um: float, mpp: float) -> int:
    """An odd pixel count ≥ 3 closest to ``um`` µm at ``mpp`` µm/px."""
    n = max(3, round(um / mpp))
    return n if n % 2 else n + 1


def standard_tissue_mask(rgb: npt.NDArray[np.uint8], *, mask_mpp: float) -> npt.NDArray[np.bool_]:
    """The standard rule's tissue (bool (H, W)) for an RGB uint8 image ``(H, W, 3)`` at ``mask_mpp`` µm/px."""
    rgb = np.asarray(rgb)[..., :3]
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return np.zeros(rgb.shape[:2], bool)
    mx = rgb.max(axis=2)
    sat = saturation_u8(mx, rgb.min(axis=2))
    sat = rank.median(sat, np.ones((_odd_px(MEDIAN_UM, mask_mpp),) * 2, bool))
    hist = np.bincount(sat.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    w, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num((mu[-1] * w - mu) ** 2 / (w * (1 - w)), nan=0.0, posinf=0.0)
    mask = sat > int(np.argmax(between))
    radius = _odd_px(CLOSING_UM, mask_mpp) // 2
    padded = np.pad(mask, radius)
    mask = ~dilate_square(~dilate_square(padded, radius), radius)[radius:-radius, radius:-radius]
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n:
        keep = np.bincount(labels.ravel(), minlength=n + 1) >= (MIN_OBJECT_UM / mask_mpp) ** 2
        keep[0] = False
        mask = keep[labels]
    return ndimage.binary_fill_holes(mask)


def reference_marks(reference: npt.NDArray[np.bool_], ink: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The connected objects of ``reference`` (bool (H, W)) that lie mostly (> 50 %) on ``ink``:
    marks on the glass that the standard rule takes for tissue."""
    labels, n = ndimage.label(reference, structure=np.ones((3, 3), bool))
    area = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    on_ink = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n + 1)
    mark = on_ink > 0.5 * area
    mark[0] = False
    return mark[labels]


def reference_retention(mask: npt.NDArray[np.bool_], reference: npt.NDArray[np.bool_],
                        ink: npt.NDArray[np.bool_]) -> dict[str, float]:
    """How much of the reference's tissue ``mask`` keeps (bool (H, W) each, same grid).

    ``retention``: kept share of the reference's area, leaving out its connected objects that lie
    mostly (> 50 %) on ``ink`` (marks the standard rule takes for tissue); ``retention_raw``: the same
    over the whole reference; ``marks_share``: the share of the reference's area left out as marks;
    ``extra``: area of ``mask`` outside the reference, as a share of the reference's.
    """
    tissue = reference & ~reference_marks(reference, ink)
    total = float(reference.sum())
    kept = float((mask & tissue).sum())
    return {"retention": kept / max(float(tissue.sum()), 1.0),
            "retention_raw": float((mask & reference).sum()) / max(total, 1.0),
            "marks_share": 1.0 - float(tissue.sum()) / max(total, 1.0),
            "extra": float((mask & ~reference).sum()) / max(total, 1.0)}
