"""The Camelyon16 lesion-level FROC: detections matched to the lesions of the evaluation mask
(:mod:`qupath_camseg.evaluate.lesion_mask`, which builds it), the curve and its score.

numpy only (no torch); the mask uses scipy.ndimage + scikit-image. Coordinates are level-0
pixels; ``mpp`` is the slide's level-0 pixel size in µm/px.

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
* the score is the mean sensitivity at 1/4, 1/2, 1, 2, 4, 8 FP/slide, each read off the curve by
  linear interpolation exactly as the challenge's script does:
  ``np.interp(eval_threshold, total_FPs[::-1], total_sensitivity[::-1])`` — the curve in
  increasing-FP order, straight lines between its points (at exactly an FP rate that several
  points share, ``np.interp`` returns the last of them, the highest sensitivity), and the end
  value held beyond the last point (this reading is :func:`_sensitivity_at`). An earlier version read a
  step instead (the first point at or above each rate, ``bisect_left``), which scored lower.

Differences from the 2016 script, fixed on purpose: it indexed with ``Y/pow(2, level)``
(integer division in Python 2; we floor explicitly) and crashed or wrapped around on coordinates
outside the mask (we count them as FP on label 0); it kept TP probabilities as float32 and FP
ones as float64, so a TP could miss its own threshold (we use float64 throughout); it skipped the
lowest probability (``all_probs[1:]``, meant to drop the 0.0 of missed lesions, but dropping a
real threshold when nothing was missed; we drop 0.0 only, as the later script does); it divided
by zero when no lesion exists (we report "no lesions": :attr:`FROCResult.no_lesions`, a score of
``None`` in JSON). On every set of slides with a missed lesion or an ITC (a 0.0 in the script's
TP list) and probabilities that float32 holds exactly, the curve and score are the script's
(``tests/evaluate/test_froc_challenge.py`` checks it on random multi-slide cases).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qupath_camseg.evaluate._json import json_float
from qupath_camseg.evaluate.lesion_mask import EvaluationMask

__all__ = [
    "FP_RATES",
    "FROCResult",
    "SlideFROC",
    "froc",
    "froc_curve",
    "froc_score",
    "match_detections",
]

FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per slide at which the Camelyon16 score averages the sensitivity."""


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
    ``sensitivity_at``: the sensitivity read at each of ``fp_rates``. Without any lesion
    (:attr:`no_lesions`) sensitivity is undefined: ``score`` and the sensitivities are NaN
    (``None`` in :meth:`to_dict`, with ``"status": "no lesions"``).
    """

    thresholds: npt.NDArray[np.float64]
    fps_per_slide: npt.NDArray[np.float64]
    sensitivity: npt.NDArray[np.float64]
    fp_rates: tuple[float, ...]
    sensitivity_at: tuple[float, ...]
    score: float
    n_slides: int
    n_lesions: int

    @property
    def no_lesions(self) -> bool:
        """True when the slides' ground truth holds no lesion (ITCs aside): nothing to detect."""
        return self.n_lesions == 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (NaN → None); ``status`` is ``"scored"`` or ``"no lesions"``."""
        return {
            "status": "no lesions" if self.no_lesions else "scored",
            "score": json_float(self.score),
            "fp_rates": list(self.fp_rates),
            "sensitivity_at": [json_float(v) for v in self.sensitivity_at],
            "n_slides": self.n_slides,
            "n_lesions": self.n_lesions,
            "thresholds": [float(v) for v in self.thresholds],
            "fps_per_slide": [float(v) for v in self.fps_per_slide],
            "sensitivity": [json_float(v) for v in self.sensitivity],
        }


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
    """Mean sensitivity at ``fp_rates`` as the Camelyon16 script reads it.

    The curve (as from :func:`froc_curve`, FPs decreasing) is reversed to increasing FPs and the
    sensitivity at each rate interpolated linearly (``np.interp``). Returns
    ``(score, per-rate sensitivities)``.
    """
    fps_r = np.asarray(fps_per_slide, np.float64)[::-1]
    sens_r = np.asarray(sensitivity, np.float64)[::-1]
    if fps_r.size == 0 or fps_r.size != sens_r.size:
        raise ValueError("the FROC curve needs matching, non-empty FP and sensitivity arrays")
    at = _sensitivity_at(fps_r, sens_r, fp_rates)
    return float(np.mean(at)), at


def _sensitivity_at(
    fps: npt.NDArray[np.float64], sensitivity: npt.NDArray[np.float64], fp_rates: Sequence[float]
) -> tuple[float, ...]:
    """The sensitivity read off the curve (``fps`` increasing, ``sensitivity`` aligned) at each
    of ``fp_rates`` (FP/slide), as the Camelyon16 script reads it:
    ``np.interp(fp_rates, fps, sensitivity)`` (linear between points, the end values held beyond)."""
    return tuple(float(v) for v in np.interp(np.asarray(fp_rates, np.float64), fps, sensitivity))


def froc(slides: Sequence[SlideFROC], *, fp_rates: Sequence[float] = FP_RATES) -> FROCResult:
    """The FROC curve and score over ``slides`` (tumour and normal slides together)."""
    fps, sens, thresholds = froc_curve(slides)
    score, at = froc_score(fps, sens, fp_rates=fp_rates)
    return FROCResult(
        thresholds, fps, sens, tuple(float(r) for r in fp_rates), at, score,
        len(slides), sum(s.n_lesions for s in slides),
    )
