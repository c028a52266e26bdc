"""Pixel scores of a binary segmentation: confusion counts, Dice/IoU/precision/recall, pooled
over slides (micro-average), from masks or from polygon sets rasterised at an evaluation µm/px.

numpy only (+ the rasteriser of :mod:`qupath_camseg.annotations`); coordinates are level-0 pixels,
``mpp`` is the slide's level-0 pixel size in µm/px.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import rasterize

__all__ = ["PixelCounts", "heatmap_pixel_counts", "heatmap_truth", "pixel_counts", "polygon_pixel_counts",
           "pooled_counts"]

_PIXEL_CHUNK = 4096  # output pixels per side when rasterising polygons for pixel scores
_HEATMAP_THRESHOLD = 0.5  # probability at which a heatmap pixel counts as predicted tumour


@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts of a binary segmentation (pixels at the evaluation resolution).

    Scores are NaN where undefined (e.g. Dice when neither truth nor prediction has a pixel).
    Counts add up: ``sum(counts, PixelCounts())`` pools slides (micro-average).
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def dice(self) -> float:
        """``2·TP / (2·TP + FP + FN)``."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """``TP / (TP + FP + FN)`` (Jaccard)."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)`` (pixel sensitivity)."""
        return _ratio(self.tp, self.tp + self.fn)

    def scores(self) -> dict[str, float]:
        """``{"dice", "iou", "precision", "recall"}``."""
        return {"dice": self.dice, "iou": self.iou, "precision": self.precision, "recall": self.recall}


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else math.nan


def pixel_counts(
    truth: npt.ArrayLike, prediction: npt.ArrayLike, *, valid: npt.ArrayLike | None = None
) -> PixelCounts:
    """Count TP/FP/FN/TN between two masks of the same shape ``(H, W)`` (non-zero = positive).

    ``valid`` (bool ``(H, W)``), when given, restricts counting to its True pixels (e.g. to skip
    an "ignore" label).
    """
    t = np.asarray(truth).astype(bool, copy=False)
    p = np.asarray(prediction).astype(bool, copy=False)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} masks differ in shape")
    if valid is not None:
        v = np.asarray(valid).astype(bool, copy=False)
        t, p = t[v], p[v]
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    return PixelCounts(tp, fp, fn, int(t.size) - tp - fp - fn)


def pooled_counts(counts: Iterable[PixelCounts]) -> PixelCounts:
    """Sum per-slide counts (the pooled, micro-averaged scores over all slides)."""
    return sum(counts, PixelCounts())


def polygon_pixel_counts(
    truth: Sequence[BaseGeometry | None],
    prediction: Sequence[BaseGeometry | None],
    *,
    box_px: tuple[float, float, float, float],
    mpp: float,
    eval_mpp: float,
) -> PixelCounts:
    """Pixel counts of two polygon sets rasterised at ``eval_mpp`` over ``box_px`` (level 0).

    ``truth`` / ``prediction``: shapely geometries in level-0 px. Rasterised in chunks with
    :func:`qupath_camseg.annotations.masks.rasterize` (pixel centres), so memory stays bounded for whole
    slides; TN counts the rest of the box.
    """
    x0, y0, w, h = (float(v) for v in box_px)
    ds = float(eval_mpp) / float(mpp)
    out_w, out_h = max(1, math.ceil(w / ds)), max(1, math.ceil(h / ds))
    total = PixelCounts()
    t_shapes = [(g, 1) for g in truth if g is not None and not g.is_empty]
    p_shapes = [(g, 1) for g in prediction if g is not None and not g.is_empty]
    if not t_shapes and not p_shapes:
        return PixelCounts(tn=out_w * out_h)
    for cy in range(0, out_h, _PIXEL_CHUNK):
        for cx in range(0, out_w, _PIXEL_CHUNK):
            cw, ch = min(_PIXEL_CHUNK, out_w - cx), min(_PIXEL_CHUNK, out_h - cy)
            box = (x0 + cx * ds, y0 + cy * ds, cw * ds, ch * ds)
            t = rasterize(t_shapes, box, (cw, ch)) if t_shapes else np.zeros((ch, cw), np.uint8)
            p = rasterize(p_shapes, box, (cw, ch)) if p_shapes else np.zeros((ch, cw), np.uint8)
            total = total + pixel_counts(t, p)
    return total


def heatmap_truth(truth: Sequence[BaseGeometry], shape: tuple[int, int], downsample: float) -> npt.NDArray[np.uint8]:
    """Truth polygons (level-0 px) rasterised on a heatmap's grid: uint8 ``shape`` = ``(H, W)``
    (1 = tumour), pixel ``(r, c)`` covering level-0 ``[c·d, (c+1)·d) × [r·d, (r+1)·d)``, ``d = downsample``."""
    hh, hw = shape
    if not truth:
        return np.zeros((hh, hw), np.uint8)
    return rasterize([(g, 1) for g in truth], (0, 0, hw * downsample, hh * downsample), (hw, hh))


def heatmap_pixel_counts(
    truth: Sequence[BaseGeometry], prob: npt.NDArray[np.float32], downsample: float,
    *, truth_mask: npt.NDArray[np.uint8] | None = None,
) -> PixelCounts:
    """Pixel counts of truth polygons (level-0 px) against a heatmap thresholded at 0.5, on the
    heatmap's own grid: ``prob`` float ``(H, W)`` in [0, 1] whose pixel ``(r, c)`` covers level-0
    ``[c·d, (c+1)·d) × [r·d, (r+1)·d)`` with ``d = downsample``. ``truth_mask``: the truth already
    rasterised there (:func:`heatmap_truth`)."""
    t = truth_mask if truth_mask is not None else heatmap_truth(truth, prob.shape, downsample)
    return pixel_counts(t, prob >= _HEATMAP_THRESHOLD)
