"""Slide-level ROC AUC of slide scores (tumour vs normal slides), as the Camelyon16 slide task."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["roc_auc"]


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
