"""How well probabilities are calibrated: reliability bins and the expected calibration error.

numpy only. A probability ``p`` of a class is *calibrated* when, among the pixels given ``p``, a
fraction ``p`` truly is that class. The pixels are put into ``n_bins`` equal-width bins of ``p``
(``[0, 1/n), …, [(n-1)/n, 1]``); per bin the mean probability (confidence) is compared with the
fraction of true pixels (accuracy). The **expected calibration error** is the pixel-weighted mean
gap (Guo et al. 2017, "On calibration of modern neural networks")::

    ECE = Σ_b (n_b / N) · |mean p in b − fraction true in b|

:class:`ReliabilityBins` keeps only sums per bin, so bins of several slides (or batches) add up
(``a + b``) to the bins of all their pixels, in bounded memory. :class:`HeatmapCalibration` is
the same for a slide's heatmap over its tissue, with the mean tumour probability over normal
tissue (what a pathologist sees as "background noise" in the heatmap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qupath_camseg.evaluate._json import json_float

__all__ = ["DEFAULT_BINS", "HeatmapCalibration", "ReliabilityBins", "heatmap_calibration", "reliability_bins"]

DEFAULT_BINS = 15
"""Bins of the reliability diagram and the ECE (15 equal-width bins, as in Guo et al.)."""


@dataclass(frozen=True)
class ReliabilityBins:
    """Per bin ``b`` of ``[b/n, (b+1)/n)``: ``count`` pixels, ``sum_prob`` of their probabilities and
    ``sum_true`` of their truth (0/1). Arrays of length ``n`` (float64)."""

    count: npt.NDArray[np.float64]
    sum_prob: npt.NDArray[np.float64]
    sum_true: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
        """No pixels yet."""
        z = np.zeros(n_bins, np.float64)
        return cls(z, z.copy(), z.copy())

    def __add__(self, other: ReliabilityBins) -> ReliabilityBins:
        if self.count.shape != other.count.shape:
            raise ValueError(f"cannot add {self.count.size} bins to {other.count.size}")
        return ReliabilityBins(self.count + other.count, self.sum_prob + other.sum_prob,
                               self.sum_true + other.sum_true)

    @property
    def n_pixels(self) -> int:
        """Pixels counted."""
        return int(self.count.sum())

    @property
    def confidence(self) -> npt.NDArray[np.float64]:
        """Mean probability per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum_prob / self.count, np.nan)

    @property
    def accuracy(self) -> npt.NDArray[np.float64]:
        """Fraction of true pixels per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum_true / self.count, np.nan)

    @property
    def ece(self) -> float:
        """Expected calibration error (0 = perfectly calibrated; NaN without pixels)."""
        n = self.count.sum()
        if n <= 0:
            return math.nan
        return float(np.abs(self.sum_prob - self.sum_true).sum() / n)

    @property
    def mean_prob(self) -> float:
        """Mean probability over all pixels (NaN without pixels)."""
        n = self.count.sum()
        return float(self.sum_prob.sum() / n) if n > 0 else math.nan

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``ece``, ``pixels``, ``mean_prob`` and per bin ``count`` / ``confidence`` / ``accuracy``."""
        return {"ece": json_float(self.ece), "pixels": self.n_pixels, "mean_prob": json_float(self.mean_prob),
                "bins": {"count": [int(c) for c in self.count],
                         "confidence": [json_float(v) for v in self.confidence],
                         "accuracy": [json_float(v) for v in self.accuracy]}}


def reliability_bins(prob: npt.ArrayLike, truth: npt.ArrayLike, *, valid: npt.ArrayLike | None = None,
                     n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Bin probabilities ``prob`` (float in [0, 1], any shape) against ``truth`` (same shape,
    non-zero = the class), over the pixels where ``valid`` (bool, same shape) is True."""
    p = np.asarray(prob, np.float64)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"probabilities {p.shape} and truth {t.shape} differ in shape")
    if valid is not None:
        v = np.asarray(valid, bool)
        p, t = p[v], t[v]
    p, t = p.ravel(), (t.ravel() != 0).astype(np.float64)
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)  # p = 1 goes into the last bin
    return ReliabilityBins(np.bincount(idx, minlength=n_bins).astype(np.float64),
                           np.bincount(idx, weights=p, minlength=n_bins),
                           np.bincount(idx, weights=t, minlength=n_bins))


@dataclass(frozen=True)
class HeatmapCalibration:
    """A heatmap's calibration on tissue: reliability ``bins`` of the tumour probability over the
    tissue pixels, and the probabilities' sum over the *normal* tissue pixels (truth 0) with their
    number. Adds up over slides (``a + b``)."""

    bins: ReliabilityBins
    normal_prob_sum: float = 0.0
    normal_pixels: int = 0

    @classmethod
    def empty(cls, n_bins: int = DEFAULT_BINS) -> HeatmapCalibration:
        """No pixels yet."""
        return cls(ReliabilityBins.empty(n_bins))

    def __add__(self, other: HeatmapCalibration) -> HeatmapCalibration:
        return HeatmapCalibration(self.bins + other.bins, self.normal_prob_sum + other.normal_prob_sum,
                                  self.normal_pixels + other.normal_pixels)

    @property
    def mean_normal_prob(self) -> float:
        """Mean tumour probability over normal tissue (NaN without normal tissue)."""
        return self.normal_prob_sum / self.normal_pixels if self.normal_pixels else math.nan

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``ece``, ``tissue_pixels``, ``mean_prob_normal_tissue``, ``normal_tissue_pixels``, ``bins``."""
        d = self.bins.to_dict()
        return {"ece": d["ece"], "tissue_pixels": d["pixels"], "mean_prob_normal_tissue": json_float(self.mean_normal_prob),
                "normal_tissue_pixels": self.normal_pixels, "bins": d["bins"]}


def heatmap_calibration(prob: npt.NDArray[np.floating], truth: npt.NDArray[np.generic],
                        tissue: npt.NDArray[np.bool_], *, n_bins: int = DEFAULT_BINS) -> HeatmapCalibration:
    """The calibration of a heatmap ``prob`` (float ``(H, W)`` in [0, 1]) against ``truth`` (same
    grid, non-zero = tumour) over the ``tissue`` pixels (bool, same grid)."""
    t = np.asarray(tissue, bool)
    normal = t & (np.asarray(truth) == 0)
    p = np.asarray(prob)
    return HeatmapCalibration(reliability_bins(p, truth, valid=t, n_bins=n_bins),
                              float(p[normal].sum(dtype=np.float64)), int(normal.sum()))
