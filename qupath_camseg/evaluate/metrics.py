"""Evaluation metrics: pixel Dice/IoU, the Camelyon16 lesion-level FROC, and slide-level ROC AUC.

numpy + scipy.ndimage + scikit-image only (no torch). Coordinates are level-0 pixels; ``mpp`` is
the slide's level-0 pixel size in µm/px.

**FROC** follows the Camelyon16 evaluation code (Bejnordi, ``Evaluation_FROC.py``, 2016, and the
organisers' later Python 3 test-set script), generalised from its hard-wired 0.243 µm/px and
level 5 to any ``mpp`` and evaluation downsample:

* evaluation mask at downsample ``d`` (default: the power of two giving ≈ 7.8 µm/px, i.e. 32 for
  0.243 µm/px): tumour pixels are grown to every pixel whose Euclidean distance to tumour is
  ``< 75 / (mpp·d·2)`` px (75 µm in total between two regions), holes are filled, and regions are
  labelled 8-connected — so two tumour regions less than ~75 µm apart are one lesion;
* isolated tumour cells (ITC): regions whose ``major_axis_length`` < ``275 / (mpp·d)`` px
  (200 µm + the 75 µm dilation) are ignored: a detection in an ITC is neither TP nor FP;
* a detection ``(prob, x, y)`` hits the label at ``[floor(y/d), floor(x/d)]``; per lesion only the
  highest-probability hit is a TP, further hits on the same lesion are neither TP nor FP; a
  detection on label 0 (or on a slide without tumour) is a FP;
* the curve is swept over every distinct non-zero probability (``p >= threshold``) plus the end
  point (0 FP, 0 sensitivity); FPs are averaged over all slides, sensitivity is over all non-ITC
  lesions;
* the score is the mean sensitivity at 1/4, 1/2, 1, 2, 4, 8 FP/slide, each read as the official
  ``compute_score`` does: the first curve point (in increasing FP order) whose FP rate is
  ``>=`` the target (``bisect_left``), or the last point when the curve never gets there — no
  interpolation.

Differences from the Python 2 script, fixed on purpose: it indexed with ``Y/pow(2, level)``
(integer division in Python 2; we floor explicitly) and crashed or wrapped around on coordinates
outside the mask (we count them as FP on label 0); it kept TP probabilities as float32 and FP
ones as float64, so a TP could miss its own threshold (we use float64 throughout); it skipped the
lowest probability (``all_probs[1:]``, meant to drop the 0.0 of missed lesions, but dropping a
real threshold when nothing was missed; we drop 0.0 only, as the later script does); it divided
by zero when no lesion exists (we return NaN sensitivities).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import measure

__all__ = [
    "CAMELYON16_MPP",
    "CAMELYON16_LEVEL",
    "FP_RATES",
    "DILATION_UM",
    "ITC_MAJOR_AXIS_UM",
    "PixelCounts",
    "pixel_counts",
    "pooled_counts",
    "polygon_pixel_counts",
    "default_eval_downsample",
    "EvaluationMask",
    "evaluation_mask",
    "evaluation_mask_from_polygons",
    "SlideFROC",
    "match_detections",
    "FROCResult",
    "froc_curve",
    "froc_score",
    "froc",
    "roc_auc",
]

CAMELYON16_MPP = 0.243
"""Level-0 pixel size (µm/px) the official Camelyon16 evaluation assumes."""
CAMELYON16_LEVEL = 5
"""Pyramid level (downsample 2**5 = 32) of the official evaluation mask."""
FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per slide at which the Camelyon16 score averages the sensitivity."""
DILATION_UM = 75.0
"""Total dilation (µm) that merges nearby tumour regions into one lesion (≈ 5 tumour cells)."""
ITC_MAJOR_AXIS_UM = 275.0
"""Regions with a major axis below this (µm, = 200 µm + the dilation) are ITCs, ignored."""

_PIXEL_CHUNK = 4096  # output pixels per side when rasterising polygons for pixel scores


# ---------------------------------------------------------------------------------------------
# Pixel scores


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
    truth: Sequence[object],
    prediction: Sequence[object],
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
    from qupath_camseg.annotations import rasterize

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


# ---------------------------------------------------------------------------------------------
# Evaluation mask (lesions)


def default_eval_downsample(mpp: float) -> float:
    """The power-of-two downsample whose pixel size is nearest (in log scale) to Camelyon16's
    level 5 (0.243 µm/px · 32 = 7.776 µm/px); 32 for 0.243–0.25 µm/px, 16 for 0.5 µm/px."""
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number, not {mpp!r}")
    target = CAMELYON16_MPP * 2**CAMELYON16_LEVEL
    return float(2 ** max(0, round(math.log2(target / mpp))))


@dataclass(frozen=True)
class EvaluationMask:
    """Labelled lesions of one slide at an evaluation downsample.

    ``labels``: int32 ``(H, W)``, 0 = no lesion, 1..n = lesions (8-connected after dilation and
    hole filling); pixel ``(r, c)`` covers level-0 ``[c·d, (c+1)·d) × [r·d, (r+1)·d)``.
    ``itc_labels``: labels that are isolated tumour cells (ignored). ``mpp``: level-0 µm/px.
    """

    labels: npt.NDArray[np.int32]
    downsample: float
    mpp: float
    itc_labels: frozenset[int] = field(default_factory=frozenset)

    @property
    def n_regions(self) -> int:
        """All labelled regions, ITCs included."""
        return int(self.labels.max()) if self.labels.size else 0

    @property
    def n_lesions(self) -> int:
        """Lesions that count for sensitivity (regions minus ITCs)."""
        return self.n_regions - len(self.itc_labels)

    def label_at(self, x_px: float, y_px: float) -> int:
        """The label under level-0 point ``(x_px, y_px)``; 0 outside the mask."""
        c, r = math.floor(x_px / self.downsample), math.floor(y_px / self.downsample)
        h, w = self.labels.shape
        return int(self.labels[r, c]) if 0 <= r < h and 0 <= c < w else 0


def evaluation_mask(
    tumor: npt.ArrayLike, *, mpp: float, downsample: float, include_itcs: bool = False
) -> EvaluationMask:
    """Build the Camelyon16 evaluation mask from a tumour raster at ``downsample``.

    ``tumor``: bool/0-1 ``(H, W)`` at ``downsample`` (level-0 px per mask px); ``mpp``: level-0
    µm/px. ``include_itcs=True`` keeps ITCs as lesions (the later script's ``--itc`` flag).
    """
    t = np.asarray(tumor).astype(bool, copy=False)
    level_mpp = float(mpp) * float(downsample)
    if not t.any():
        return EvaluationMask(np.zeros(t.shape, np.int32), float(downsample), float(mpp))
    threshold = DILATION_UM / (level_mpp * 2.0)
    labels = _grown_labels(t, threshold)
    itc: set[int] = set()
    if not include_itcs:
        threshold_px = ITC_MAJOR_AXIS_UM / level_mpp
        for region in measure.regionprops(labels):
            if region.axis_major_length < threshold_px:
                itc.add(int(region.label))
    return EvaluationMask(labels, float(downsample), float(mpp), frozenset(itc))


def _merge_boxes(boxes: list[list[int]]) -> list[list[int]]:
    """Merge overlapping ``[r0, r1, c0, c1]`` boxes until none overlap."""
    changed = True
    while changed:
        changed = False
        out: list[list[int]] = []
        for b in boxes:
            for o in out:
                if b[0] < o[1] and o[0] < b[1] and b[2] < o[3] and o[2] < b[3]:
                    o[:] = [min(o[0], b[0]), max(o[1], b[1]), min(o[2], b[2]), max(o[3], b[3])]
                    changed = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def _grown_labels(t: npt.NDArray[np.bool_], threshold: float) -> npt.NDArray[np.int32]:
    """``label(fill_holes(edt(~t) < threshold), connectivity=2)``, computed per group of nearby
    tumour regions: each group's box is padded by the dilation plus a 1-px background ring, and
    overlapping boxes are merged, so no dilation, hole or 8-connection crosses between boxes and
    the result (labels numbered in raster order of their first pixel, as skimage does) equals
    the whole-image computation at a fraction of its time and memory on a sparse slide."""
    h, w = t.shape
    pad = math.ceil(threshold) + 1
    components, _ = ndimage.label(t, structure=np.ones((3, 3), bool))
    boxes = [[max(0, sl[0].start - pad), min(h, sl[0].stop + pad), max(0, sl[1].start - pad), min(w, sl[1].stop + pad)]
             for sl in ndimage.find_objects(components) if sl is not None]
    pieces = []
    for r0, r1, c0, c1 in _merge_boxes(boxes):
        grown = ndimage.distance_transform_edt(~t[r0:r1, c0:c1]) < threshold
        local = measure.label(ndimage.binary_fill_holes(grown), connectivity=2)
        flat = np.flatnonzero(local)
        ids, first = np.unique(local.ravel()[flat], return_index=True)
        rr, cc = np.divmod(flat[first], c1 - c0)
        pieces.append(((r0, r1, c0, c1), local, ids, (rr + r0) * w + (cc + c0)))
    labels = np.zeros((h, w), np.int32)
    if not pieces:
        return labels
    keys = np.concatenate([p[3] for p in pieces])
    rank = np.empty(keys.size, np.int32)
    rank[np.argsort(keys, kind="stable")] = np.arange(1, keys.size + 1, dtype=np.int32)
    offset = 0
    for (r0, r1, c0, c1), local, ids, _ in pieces:
        lut = np.zeros(int(local.max()) + 1, np.int32)
        lut[ids] = rank[offset : offset + ids.size]
        offset += ids.size
        view = labels[r0:r1, c0:c1]
        np.copyto(view, lut[local], where=local > 0)
    return labels


def evaluation_mask_from_polygons(
    tumor: Sequence[object],
    slide_size_px: tuple[int, int],
    *,
    mpp: float,
    downsample: float | None = None,
    include_itcs: bool = False,
) -> EvaluationMask:
    """Rasterise ground-truth tumour polygons (level-0 px) and build the evaluation mask.

    The mask is ``ceil(width/d) × ceil(height/d)`` with ``d = downsample`` (default
    :func:`default_eval_downsample`). Pixels whose centre lies in a polygon are tumour; a polygon
    too small to cover any pixel centre still marks the pixel holding its representative point,
    so a tiny lesion becomes an (ignored) ITC rather than vanishing and turning hits into FPs.
    """
    from qupath_camseg.annotations import rasterize

    d = default_eval_downsample(mpp) if downsample is None else float(downsample)
    w, h = (int(v) for v in slide_size_px)
    out_w, out_h = max(1, math.ceil(w / d)), max(1, math.ceil(h / d))
    geoms = [g for g in tumor if g is not None and not g.is_empty]
    raster = np.zeros((out_h, out_w), bool)
    if geoms:
        raster = rasterize([(g, 1) for g in geoms], (0, 0, out_w * d, out_h * d), (out_w, out_h)) > 0
        for g in geoms:
            pt = g.representative_point()
            c, r = math.floor(pt.x / d), math.floor(pt.y / d)
            if 0 <= r < out_h and 0 <= c < out_w:
                raster[r, c] = True
    return evaluation_mask(raster, mpp=mpp, downsample=d, include_itcs=include_itcs)


# ---------------------------------------------------------------------------------------------
# FROC


@dataclass(frozen=True)
class SlideFROC:
    """Per-slide FROC bookkeeping.

    ``fp_probs``: probabilities of FP detections; ``tp_probs``: per non-ITC lesion (label order)
    the highest hit probability, 0.0 when missed; ``outcomes``: per input detection one of
    ``"tp"`` (the best hit of its lesion), ``"duplicate"`` (a lower hit on a hit lesion),
    ``"itc"`` (inside an ITC), ``"fp"``, ``"ignored"`` (probability <= 0, never counted).
    """

    name: str
    fp_probs: tuple[float, ...]
    tp_probs: tuple[float, ...]
    n_lesions: int
    n_itc: int
    outcomes: tuple[str, ...]

    @property
    def n_hit(self) -> int:
        """Lesions hit by at least one detection (any threshold)."""
        return sum(p > 0 for p in self.tp_probs)


def match_detections(
    detections: Iterable[Sequence[float]], mask: EvaluationMask | None, *, name: str = ""
) -> SlideFROC:
    """Classify ``(prob, x_px, y_px)`` detections (level 0) against one slide's lesions.

    ``mask=None`` (a slide without tumour) makes every detection a FP.
    """
    dets = [(float(d[0]), float(d[1]), float(d[2])) for d in detections]
    n_regions = mask.n_regions if mask is not None else 0
    itc = mask.itc_labels if mask is not None else frozenset()
    best = np.zeros(n_regions + 1, np.float64)
    best_idx = np.full(n_regions + 1, -1, np.int64)
    outcomes = ["fp"] * len(dets)
    fp_probs: list[float] = []
    for i, (prob, x, y) in enumerate(dets):
        label = mask.label_at(x, y) if mask is not None else 0
        if label == 0:
            fp_probs.append(prob)
        elif label in itc:
            outcomes[i] = "itc"
        else:
            outcomes[i] = "duplicate"
            if prob > best[label]:  # strictly greater: the first of equal hits wins
                best[label] = prob
                best_idx[label] = i
    for label in range(1, n_regions + 1):
        if best_idx[label] >= 0:
            outcomes[best_idx[label]] = "tp"
    for i, (prob, _, _) in enumerate(dets):
        if prob <= 0:  # below every threshold of the curve
            outcomes[i] = "ignored"
    tp_probs = tuple(float(best[lab]) for lab in range(1, n_regions + 1) if lab not in itc)
    return SlideFROC(name, tuple(fp_probs), tp_probs, n_regions - len(itc), len(itc), tuple(outcomes))


@dataclass(frozen=True)
class FROCResult:
    """The FROC curve over a set of slides and its Camelyon16 score.

    ``thresholds`` ascending (float64, ``len = n_points - 1``: the last curve point is the
    (0, 0) end point); ``fps_per_slide`` / ``sensitivity`` aligned with them plus the end point;
    ``sensitivity_at``: the sensitivity read at each of ``fp_rates``.
    """

    thresholds: npt.NDArray[np.float64]
    fps_per_slide: npt.NDArray[np.float64]
    sensitivity: npt.NDArray[np.float64]
    fp_rates: tuple[float, ...]
    sensitivity_at: tuple[float, ...]
    score: float
    n_slides: int
    n_lesions: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (NaN → None)."""
        return {
            "score": _json_float(self.score),
            "fp_rates": list(self.fp_rates),
            "sensitivity_at": [_json_float(v) for v in self.sensitivity_at],
            "n_slides": self.n_slides,
            "n_lesions": self.n_lesions,
            "thresholds": [float(v) for v in self.thresholds],
            "fps_per_slide": [float(v) for v in self.fps_per_slide],
            "sensitivity": [_json_float(v) for v in self.sensitivity],
        }


def _json_float(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def froc_curve(
    slides: Sequence[SlideFROC],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(fps_per_slide, sensitivity, thresholds)`` as the official ``compute_froc`` builds them.

    Thresholds: every distinct non-zero probability, ascending; at each, FPs are the FP
    detections with ``p >= threshold`` divided by the number of slides and sensitivity the hit
    lesions with ``p >= threshold`` divided by all non-ITC lesions; then the end point (0, 0).
    """
    if not slides:
        raise ValueError("FROC needs at least one slide")
    fps = np.asarray([p for s in slides for p in s.fp_probs], np.float64)
    tps = np.asarray([p for s in slides for p in s.tp_probs], np.float64)
    thresholds = np.unique(np.concatenate([fps, tps]))
    thresholds = thresholds[thresholds != 0.0]
    n_lesions = sum(s.n_lesions for s in slides)
    fp_counts = np.sort(fps)
    tp_counts = np.sort(tps)
    # counts of values >= t for each threshold t (sorted arrays + searchsorted)
    n_fp = fp_counts.size - np.searchsorted(fp_counts, thresholds, side="left")
    n_tp = tp_counts.size - np.searchsorted(tp_counts, thresholds, side="left")
    n_fp = np.append(n_fp, 0).astype(np.float64)
    n_tp = np.append(n_tp, 0).astype(np.float64)
    fps_per_slide = n_fp / len(slides)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = n_tp / n_lesions if n_lesions else np.full_like(n_tp, math.nan)
    return fps_per_slide, sensitivity, thresholds


def froc_score(
    fps_per_slide: npt.ArrayLike,
    sensitivity: npt.ArrayLike,
    *,
    fp_rates: Sequence[float] = FP_RATES,
) -> tuple[float, tuple[float, ...]]:
    """Mean sensitivity at ``fp_rates`` as the official ``compute_score`` reads it.

    The curve (as from :func:`froc_curve`, FPs decreasing) is reversed to increasing FPs; for each
    rate the sensitivity at ``min(bisect_left(fps, rate), n - 1)`` is taken. Returns
    ``(score, per-rate sensitivities)``.
    """
    fps_r = np.asarray(fps_per_slide, np.float64)[::-1]
    sens_r = np.asarray(sensitivity, np.float64)[::-1]
    if fps_r.size == 0 or fps_r.size != sens_r.size:
        raise ValueError("the FROC curve needs matching, non-empty FP and sensitivity arrays")
    idx = np.minimum(np.searchsorted(fps_r, np.asarray(fp_rates, np.float64), side="left"), fps_r.size - 1)
    at = tuple(float(v) for v in sens_r[idx])
    return float(np.mean(at)), at


def froc(slides: Sequence[SlideFROC], *, fp_rates: Sequence[float] = FP_RATES) -> FROCResult:
    """The FROC curve and score over ``slides`` (tumour and normal slides together)."""
    fps, sens, thresholds = froc_curve(slides)
    score, at = froc_score(fps, sens, fp_rates=fp_rates)
    return FROCResult(
        thresholds, fps, sens, tuple(float(r) for r in fp_rates), at, score,
        len(slides), sum(s.n_lesions for s in slides),
    )


# ---------------------------------------------------------------------------------------------
# Slide-level ROC AUC


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve of slide scores (Mann-Whitney U, ties count one half).

    ``labels``: 1/True for tumour slides, 0/False for normal; ``scores``: higher = more likely
    tumour. NaN when either class is absent.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if np.isnan(s).any():
        raise ValueError("slide scores contain NaN")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # average ranks (1-based) with ties sharing the mean rank
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
