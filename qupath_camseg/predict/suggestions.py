""""Review here" suggestions: the few small boxes of a slide where a pathologist's look helps most.

Where the model is unsure, a correction teaches it most. Per map pixel, the *uncertainty* of a
probability ``p`` against the threshold ``t`` is ``u = max(0, 1 - ((p - t) / w)²)`` with ``w`` half the
distance from ``t`` to 0 (below it) or to 1 (above it): 1 at the threshold, 0 beyond ``t ± w``
(for t = 0.5: outside 0.25–0.75); with several classes, the largest over the classes. The band is
narrow on purpose: tissue the model calls normal at p ≈ 0.2 is already right, while the errors
lie where ``p`` crosses the threshold (false-positive rims, tumour borders, half-seen metastases);
a broad measure such as the entropy or ``4p(1 - p)`` spreads the boxes over all that mildly unsure
but correct tissue (``benchmarks/bench_active_learning.py`` measured it: no better than random
boxes). A box's score is the *sum* of ``u`` over its pixels, i.e. mean uncertainty × area, so a
large unsure border outranks a single unsure pixel.

The work follows the chunked design of :mod:`~qupath_camseg.predict.slide`: each chunk's summary
(:func:`~qupath_camseg.predict.summaries.summarize_chunk`, on the worker processes, while inference
runs) adds :func:`chunk_uncertainty`, the sums of ``u`` on a grid of ``cell_px`` map px (a lookup
table over the 256 stored byte values, then block sums). At the end :func:`review_objects`
assembles the slide's cell grid (≤ :data:`MAX_CELLS` cells, so memory stays flat in slide size),
scores every box position by a summed-area table, and picks the best box, suppresses every box
position within 1.5 box widths of it (non-maximum suppression, so the boxes spread over the
slide), and repeats, up to ``n`` boxes whose uncertainty adds up to at least :data:`MIN_UNCERTAIN_LINES`
pixel-wide lines across the box (mean ``u`` ≥ 0.25 / box side): a calibrated model is sharp, so its
unsure pixels are a border a pixel wide or less, and a border crossing a box is exactly what to
review. A floor on the *mean*, such as 0.05, dropped every such box (on one generated project the
round-0 model's best boxes read 0.01-0.03 and no box was suggested although it missed tumour), and
so did a floor of one whole line: the models of the correction loop, fitted to temperatures of
0.15-0.2, cross the threshold within half a pixel, and their best boxes summed 0.5-0.96 lines, so
the loop ran dry after one round while the model still missed tumour. A quarter of a line keeps
such borders and still leaves out a few stray unsure pixels; a confident slide, with no border near
the threshold, still gets none.

Ground the pathologist has annotated already (``reviewed``: their classified outlines, read by
``predict_project``) does not count: the model may still be unsure there until it is trained on it,
but a look there teaches nothing new (on a generated project, from round 5 of the loop almost every
box a model offered lay on its own training boxes, and the loop ran dry).

Flipped/rotated passes would measure disagreement too, but cost a whole second inference (the
suggestions must add < 10 % to ``predict``), so the threshold margin is used alone.
This module runs in ``spawn``-ed summary workers: numpy only (no torch).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    OUR_NAME_PREFIX,
    QPObject,
    is_ours,
    is_tissue_class,
    iter_objects,
    polygonal_part,
    rasterize,
)
from qupath_camseg.predict.chunks import TilePlan

__all__ = ["MAX_CELLS", "MIN_UNCERTAIN_LINES", "RANK_KEY", "REVIEW_CLASS", "REVIEW_NAME", "UNCERTAINTY_KEY",
           "chunk_uncertainty", "review_objects", "reviewed_ground", "suggestion_cell_px", "suggestion_sizes",
           "uncertainty_lut"]

#: Name (then `` <rank>``) and class of a suggestion; the Groovy scripts find them by this name.
REVIEW_NAME = f"{OUR_NAME_PREFIX} Review"
REVIEW_CLASS = "Review"
_REVIEW_COLOR = (255, 140, 0)
#: Measurements of a suggestion: mean uncertainty in the box (0–1) and its rank (1 = look first).
UNCERTAINTY_KEY = "uncertainty"
RANK_KEY = "review rank"
#: A box is suggested when its uncertainty adds up to this many pixel-wide lines across it (a
#: confident slide gets fewer; see the module docstring).
MIN_UNCERTAIN_LINES = 0.25
#: The slide's cell grid holds at most this many cells (4 MiB as float32).
MAX_CELLS = 1 << 20
_CELLS_PER_BOX = 8
#: Sample points per cell side when measuring how much of a cell is annotated already.
_COVER_SAMPLES = 4
#: The uncertainty band: this fraction of the way from the threshold to 0 or 1 (see the module docstring).
_BAND = 0.5


@functools.lru_cache(maxsize=8)
def uncertainty_lut(threshold_q: int) -> npt.NDArray[np.float32]:
    """``u`` for every stored byte value (``p = v / 255``; threshold ``threshold_q / 255``), ``(256,)``."""
    p = np.arange(256, dtype=np.float64) / 255.0
    t = min(max(threshold_q / 255.0, 1e-6), 1 - 1e-6)
    scale = np.where(p < t, t, 1.0 - t) * _BAND
    lut = (1.0 - ((p - t) / scale) ** 2).clip(0.0, 1.0).astype(np.float32)
    lut.setflags(write=False)
    return lut


def chunk_uncertainty(data: npt.NDArray[np.uint8], cell_px: int, threshold_q: int) -> npt.NDArray[np.float32]:
    """Sums of ``u`` per cell of a chunk ``data`` (``uint8 (n, h, w)``): ``float32 (ceil(h / cell_px),
    ceil(w / cell_px))``; the last row and column of cells may be partial (chunks at the map edge).

    ``u`` is looked up as a byte (``round(255 u)``, so a sum is exact to 0.5/255 per pixel) and
    summed in ``uint32``: about 1 ms per 512² chunk, a fraction of the chunk's other summaries.
    """
    lut8 = _lut8(threshold_q)
    u8 = np.take(lut8, data[0]) if data.shape[0] == 1 else np.take(lut8, data).max(axis=0)
    h, w = u8.shape
    rows, cols = -(-h // cell_px), -(-w // cell_px)
    if (rows * cell_px, cols * cell_px) != (h, w):
        u8 = np.pad(u8, ((0, rows * cell_px - h), (0, cols * cell_px - w)))
    sums = u8.reshape(rows, cell_px, cols, cell_px).sum(axis=(1, 3), dtype=np.uint32)
    return (sums / np.float32(255.0)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _lut8(threshold_q: int) -> npt.NDArray[np.uint8]:
    return np.round(uncertainty_lut(threshold_q) * 255.0).astype(np.uint8)


def suggestion_sizes(plan: TilePlan, model_mpp: float, box_um: float) -> tuple[int, int]:
    """``(box_px, cell_px)`` in map px for review boxes about ``box_um`` µm wide on ``plan``'s map
    (``model_mpp`` µm/px); see :func:`suggestion_cell_px`."""
    box_px = max(1, round(box_um / model_mpp))
    return box_px, suggestion_cell_px(plan, box_px)


def suggestion_cell_px(plan: TilePlan, box_px: int) -> int:
    """The cell size (map px) for boxes of about ``box_px`` map px: a divisor of the chunk size near
    ``box_px / 8``, coarse enough that the slide's grid stays within :data:`MAX_CELLS` cells."""
    w, h = plan.map_size
    floor_px = math.sqrt(w * h / MAX_CELLS)
    want = max(box_px / _CELLS_PER_BOX, floor_px, 1.0)
    divisors = [d for d in range(1, plan.chunk_px + 1) if plan.chunk_px % d == 0]
    fitting = [d for d in divisors if d >= floor_px]
    return min(fitting, key=lambda d: (abs(math.log(d / want)), d))


class _Summary(Protocol):
    """What :func:`review_objects` reads of a chunk summary: its place and uncertainty grid."""

    row: int
    col: int
    uncertainty: npt.NDArray[np.float32] | None


def _slide_grid(summaries: Sequence[_Summary], plan: TilePlan, cell_px: int) -> npt.NDArray[np.float64]:
    """The slide's cell grid ``(ceil(map_h / cell), ceil(map_w / cell))`` from the chunk grids."""
    per_chunk = plan.chunk_px // cell_px
    grid = np.zeros((math.ceil(plan.map_size[1] / cell_px), math.ceil(plan.map_size[0] / cell_px)))
    for s in summaries:
        if s.uncertainty is not None:
            r0, c0 = s.row * per_chunk, s.col * per_chunk
            grid[r0:r0 + s.uncertainty.shape[0], c0:c0 + s.uncertainty.shape[1]] = s.uncertainty
    return grid


def _unreviewed(grid: npt.NDArray[np.float64], plan: TilePlan, cell_px: int,
                reviewed: BaseGeometry | None) -> npt.NDArray[np.float64]:
    """``grid`` (cell sums of ``u``) with each cell scaled by the share of it that ``reviewed``
    (level-0 px: what the pathologist has annotated already) leaves uncovered, measured on
    :data:`_COVER_SAMPLES`² points per cell."""
    if reviewed is None or reviewed.is_empty:
        return grid
    rows, cols = grid.shape
    side = cell_px * plan.ds  # level-0 px per cell
    parts = getattr(reviewed, "geoms", [reviewed])  # one by one: each is drawn in its own bounding box
    covered = rasterize(((g, 1) for g in parts), (0.0, 0.0, cols * side, rows * side),
                        (cols * _COVER_SAMPLES, rows * _COVER_SAMPLES))
    share = covered.reshape(rows, _COVER_SAMPLES, cols, _COVER_SAMPLES).mean(axis=(1, 3))
    return grid * (1.0 - share)


def reviewed_ground(objs: Sequence[QPObject]) -> BaseGeometry | None:
    """The ground (level-0 px) the pathologist has labelled among an image's annotations ``objs``
    (children included): their own area annotations with a class - ``Tumor``, ``Normal``,
    ``Ignore*``, accepted or edited predictions - but not tissue outlines, review boxes or our
    untouched predictions; ``None`` when there is none."""
    parts = [o.geometry for o in iter_objects(objs)
             if o.object_type == "annotation" and o.is_area and o.classification and not is_ours(o)
             and not is_tissue_class(o.classification) and o.classification != REVIEW_CLASS]
    return shapely.union_all(parts) if parts else None


def _pick(scores: npt.NDArray[np.float64], n: int, k: int, min_score: float) -> list[tuple[int, int, float]]:
    """Greedy non-maximum suppression on window ``scores``: up to ``n`` ``(row, col, score)``,
    each at least ``1.5 k`` cells from those before it, none below ``min_score``."""
    scores = scores.copy()
    reach = k + k // 2
    out = []
    while len(out) < n:
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        best = float(scores[i, j])
        if not best >= min_score:
            break
        out.append((int(i), int(j), best))
        scores[max(0, i - reach + 1):i + reach, max(0, j - reach + 1):j + reach] = -np.inf
    return out


def review_objects(summaries: Sequence[_Summary], plan: TilePlan, *, n: int, box_px: int,
                   cell_px: int, roi: BaseGeometry | None = None,
                   reviewed: BaseGeometry | None = None) -> list[QPObject]:
    """Up to ``n`` ranked ``camseg Review`` annotations (level-0 px boxes of about ``box_px`` map
    px, a whole number of ``cell_px`` cells) from the chunk summaries' uncertainty grids, each
    with measurements :data:`UNCERTAINTY_KEY` (mean ``u`` in the box) and :data:`RANK_KEY`.
    With a ``roi`` (level-0 px) each box is cut to it: nothing is suggested outside the analysed area.
    ``reviewed`` (level-0 px): ground the pathologist has annotated already; its uncertainty does not
    count (a look there teaches nothing new: the label is given, the model has yet to learn it)."""
    if n < 1 or cell_px < 1:
        return []
    grid = _unreviewed(_slide_grid(summaries, plan, cell_px), plan, cell_px, reviewed)
    k = max(1, min(round(box_px / cell_px), *grid.shape))
    sat = np.zeros((grid.shape[0] + 1, grid.shape[1] + 1))
    sat[1:, 1:] = grid.cumsum(0).cumsum(1)
    scores = sat[k:, k:] - sat[:-k, k:] - sat[k:, :-k] + sat[:-k, :-k]  # window sums, (H - k + 1, W - k + 1)
    objs = []
    for i, j, score in _pick(scores, n, k, MIN_UNCERTAIN_LINES * k * cell_px):
        x0, y0 = j * cell_px, i * cell_px
        x1, y1 = min(x0 + k * cell_px, plan.map_size[0]), min(y0 + k * cell_px, plan.map_size[1])
        geom = shapely.box(x0 * plan.ds, y0 * plan.ds, x1 * plan.ds, y1 * plan.ds)
        if roi is not None:
            geom = polygonal_part(geom.intersection(roi))
            if geom is None or geom.is_empty:
                continue
        mean_u = score / ((x1 - x0) * (y1 - y0))
        rank = len(objs) + 1
        objs.append(QPObject(geom, object_type="annotation", classification=REVIEW_CLASS, color=_REVIEW_COLOR,
                             name=f"{REVIEW_NAME} {rank}", metadata=dict(CAMSEG_METADATA),
                             measurements={UNCERTAINTY_KEY: round(min(1.0, mean_u), 4), RANK_KEY: float(rank)}))
    return objs
