"""Probability chunks → QuPath objects: tile objects with measurements and region annotations.

The per-slide output stage of :func:`~qupath_camseg.predict.slide.predict_slide`. Each stored chunk
(``uint8 (n_classes, h, w)`` map pixels, see :class:`~qupath_camseg.predict.chunks.ChunkStore`) is
*summarised* once: its thresholded classes traced into polygons (level-0 px; a chunk wholly at
or above the threshold is its own box, nothing to trace) and the mean probability and area fraction of every measurement tile it covers. Summaries are independent,
so :class:`ChunkSummaries` computes them on a process pool (contour tracing is pure Python in
scikit-image and holds the GIL) *while inference is still running*: the inference stage calls
:meth:`ChunkSummaries.submit` as each chunk is written. What is left at the end of a slide is
:func:`build_objects`: one union of the traced pieces per class and the tile grid, both cheap.

Pooled and in-process summaries are the same function on the same bytes, so the objects are
identical either way (``tests/test_outputs.py``).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    OUR_NAME_PREFIX,
    QPObject,
    polygonal_part,
)
from qupath_camseg.predict.chunks import ChunkStore, TilePlan

__all__ = ["BACKGROUND_CLASS", "ChunkSummaries", "ChunkSummary", "build_objects", "summarize_chunk"]

log = logging.getLogger(__name__)

#: Name given to tiles whose most probable class is the background (QuPath's catch-all class).
BACKGROUND_CLASS = "Other"
#: Fewer chunks than this are summarised in-process: starting worker processes (≈ 0.3 s each,
#: they import numpy, shapely and scikit-image) would cost more than it saves.
MIN_CHUNKS_FOR_POOL = 32


@dataclass
class ChunkSummary:
    """What the output stage needs from one chunk.

    ``pieces[k]``: polygons (level-0 px) where class ``k`` is at or above the threshold, cut at the
    chunk's edges; ``tile_means[(i, j)]``: for measurement tile ``(i, j)`` (row, column on a grid of
    ``measure_px`` map px), ``float64 (2n,)`` = mean probability of each class, then the share of
    its pixels at or above the threshold (over the part of the tile inside this chunk).
    """

    row: int
    col: int
    pieces: list[list[Polygon]] = field(default_factory=list)
    tile_means: dict[tuple[int, int], npt.NDArray[np.float64]] = field(default_factory=dict)


def summarize_chunk(data: npt.NDArray[np.uint8], box: tuple[int, int, int, int], *, ds: float, measure_px: int,
                    threshold_q: int, row: int = 0, col: int = 0) -> ChunkSummary:
    """Summarise one chunk ``data`` (``uint8 (n, h, w)``, 255 = probability 1) whose map-px box is
    ``box = (x, y, w, h)``; ``ds`` level-0 px per map px; ``threshold_q`` the quantised threshold
    (foreground: ``data >= threshold_q``); ``measure_px`` the measurement tile in map px (a divisor
    of the chunk size, so tiles never straddle chunks)."""
    from qupath_camseg.annotations import vectorize

    cx, cy, w, h = box
    n = data.shape[0]
    out = ChunkSummary(row, col)
    for k in range(n):
        fg = data[k] >= threshold_q
        if not fg.any():
            out.pieces.append([])
        elif fg.all():  # inside a region: the chunk itself (no contour to trace)
            out.pieces.append([shapely.box(cx * ds, cy * ds, (cx + w) * ds, (cy + h) * ds)])
        else:
            out.pieces.append(vectorize(fg, origin_px=(cx * ds, cy * ds), downsample=ds))
    m = measure_px
    for ty in range(0, h, m):
        for tx in range(0, w, m):
            block = data[:, ty:ty + m, tx:tx + m].reshape(n, -1)
            out.tile_means[((cy + ty) // m, (cx + tx) // m)] = np.concatenate(
                [block.mean(axis=1) / 255.0, (block >= threshold_q).mean(axis=1)])
    return out


def _summarize_stored(store: ChunkStore, row: int, col: int, measure_px: int, threshold_q: int) -> ChunkSummary:
    """Process-pool task: read chunk ``(row, col)`` from ``store`` (a pickled handle) and summarise it."""
    return summarize_chunk(store.read(row, col), store.plan.chunk_box(row, col), ds=store.plan.ds, measure_px=measure_px,
                           threshold_q=threshold_q, row=row, col=col)


class ChunkSummaries:
    """Summaries of every stored chunk of ``store``, computed as chunks arrive.

    ``processes`` > 1 (and at least :data:`MIN_CHUNKS_FOR_POOL` chunks ``expected``) uses a pool of
    ``spawn``-ed worker processes (safe next to CUDA and threads); otherwise summaries are computed
    in :meth:`finish`. :meth:`submit` is thread-safe (chunk writer threads call it). Use as a
    context manager: leaving it stops the pool.
    """

    def __init__(self, store: ChunkStore, *, measure_px: int, threshold_q: int, processes: int = 1,
                 expected: int = 0) -> None:
        self.store, self.measure_px, self.threshold_q = store, measure_px, threshold_q
        self._futures: dict[tuple[int, int], Future[ChunkSummary]] = {}
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        if processes > 1 and expected >= MIN_CHUNKS_FOR_POOL:
            self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> ChunkSummaries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, row: int, col: int) -> None:
        """Chunk ``(row, col)`` has been written: start summarising it (no-op without a pool, or
        once a worker process has died: :meth:`finish` then does the rest in-process)."""
        with self._lock:
            if self._pool is None or (row, col) in self._futures:
                return
            try:
                self._futures[(row, col)] = self._pool.submit(
                    _summarize_stored, self.store, row, col, self.measure_px, self.threshold_q)
            except BrokenProcessPool:
                self._broken()

    def finish(self) -> list[ChunkSummary]:
        """Summaries of all stored chunks (including ones resumed from an earlier run), row-major."""
        rows, cols = self.store.plan.chunk_shape
        out = []
        for r in range(rows):
            for c in range(cols):
                fut = self._futures.get((r, c))
                summary = None
                if fut is not None:
                    try:
                        summary = fut.result()
                    except (BrokenProcessPool, CancelledError):
                        with self._lock:
                            self._broken()
                if summary is None and self.store.has(r, c):
                    summary = _summarize_stored(self.store, r, c, self.measure_px, self.threshold_q)
                if summary is not None:
                    out.append(summary)
        return out

    def _broken(self) -> None:
        """A worker process died (killed for memory, say): stop using the pool (lock held)."""
        if self._pool is not None:
            log.warning("a chunk-summary worker process died; summarising the rest in this process")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def measure_tile_px(plan: TilePlan, model_tile_px: int) -> int:
    """Measurement tile size in map px: the model's tile if it divides the chunk, else the chunk."""
    return model_tile_px if plan.chunk_px % model_tile_px == 0 else plan.chunk_px


def build_objects(summaries: list[ChunkSummary], plan: TilePlan, fractions: Any, roi: BaseGeometry | None, *,
                  class_names: list[str], colors: list[tuple[int, int, int]], measure_px: int,
                  min_tile_tissue: float, slide_mpp: float, min_area_um2: float, min_hole_um2: float,
                  simplify_um: float | None, tumor_index: int) -> tuple[list[QPObject], float]:
    """Tile objects over tissue and region annotations from chunk summaries.

    ``fractions`` maps level-0 boxes ``(N, 4)`` to tissue fractions (a
    :class:`~qupath_camseg.wsi.tiling.TissueFractions`). Returns the objects and the area (level-0 px²)
    of class ``tumor_index``'s regions.
    """
    objs = _tile_objects(summaries, plan, fractions, roi, class_names=class_names, colors=colors,
                         measure_px=measure_px, min_tile_tissue=min_tile_tissue)
    n, ds = len(class_names), plan.ds
    um2_px = 1 / slide_mpp**2
    simplify = (simplify_um / slide_mpp) if simplify_um is not None else 0.5 * ds
    tumor_area = 0.0
    for k in range(n):
        regions = _regions([p for s in summaries for p in s.pieces[k]], close_px=0.3 * ds, simplify_px=simplify,
                           min_area_px=min_area_um2 * um2_px, min_hole_px=min_hole_um2 * um2_px, roi=roi)
        if k == tumor_index:
            tumor_area = float(sum(p.area for p in regions))
        for p in regions:
            objs.append(QPObject(p, object_type="annotation", classification=class_names[k], color=colors[k],
                                 name=f"{OUR_NAME_PREFIX} {class_names[k]}", metadata=dict(CAMSEG_METADATA)))
    return objs, tumor_area


def _tile_objects(summaries: list[ChunkSummary], plan: TilePlan, fractions: Any, roi: BaseGeometry | None, *,
                  class_names: list[str], colors: list[tuple[int, int, int]], measure_px: int,
                  min_tile_tissue: float) -> list[QPObject]:
    """One ``tile`` object per measurement-grid cell over tissue (clipped to the ROI)."""
    ds, m, n = plan.ds, measure_px, len(class_names)
    means = {key: v for s in summaries for key, v in s.tile_means.items()}
    mh, mw = math.ceil(plan.map_size[1] / m), math.ceil(plan.map_size[0] / m)
    ii, jj = (a.ravel() for a in np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij"))
    x0, y0 = jj * m * ds, ii * m * ds
    x1 = np.minimum((jj + 1) * m * ds, plan.map_size[0] * ds)
    y1 = np.minimum((ii + 1) * m * ds, plan.map_size[1] * ds)
    frac = fractions(np.column_stack([x0, y0, x1 - x0, y1 - y0]))
    geoms = shapely.box(x0, y0, x1, y1)
    keep = frac >= min_tile_tissue
    if roi is not None:
        shapely.prepare(roi)
        keep &= shapely.intersects(roi, geoms)
    zero = np.zeros(2 * n)
    objs = []
    for idx in np.flatnonzero(keep):
        v = means.get((int(ii[idx]), int(jj[idx])), zero)
        probs = np.concatenate([[max(0.0, 1.0 - v[:n].sum())], v[:n]])
        best = int(np.argmax(probs))
        geom = geoms[idx] if roi is None or roi.contains(geoms[idx]) else roi.intersection(geoms[idx])
        geom = polygonal_part(geom)
        if geom is None:
            continue
        meas = {}
        for k in range(n):
            meas[f"{class_names[k]} probability (mean)"] = round(float(v[k]), 4)
            meas[f"{class_names[k]} area fraction"] = round(float(v[n + k]), 4)
        cls = BACKGROUND_CLASS if best == 0 else class_names[best - 1]
        color = colors[best - 1] if best else (180, 180, 180)
        objs.append(QPObject(geom, object_type="tile", classification=cls, color=color,
                             name=f"{OUR_NAME_PREFIX} tile", measurements=meas, metadata=dict(CAMSEG_METADATA)))
    return objs


def _regions(pieces: list[Polygon], *, close_px: float, simplify_px: float, min_area_px: float,
             min_hole_px: float, roi: BaseGeometry | None) -> list[Polygon]:
    """Merge per-chunk polygons into regions: union, morphological closing by ``close_px``
    (joins the pieces across chunk seams), ROI clip, simplify, drop specks and fill small holes."""
    if not pieces:
        return []
    merged = shapely.union_all(shapely.buffer(np.asarray(pieces, dtype=object), close_px, join_style="mitre"))
    merged = merged.buffer(-close_px, join_style="mitre")
    if roi is not None:
        merged = merged.intersection(roi)
    if simplify_px > 0:
        merged = merged.simplify(simplify_px, preserve_topology=True)
    out = []
    for p in getattr(merged, "geoms", [merged]):
        if not isinstance(p, Polygon) or p.is_empty:
            continue
        holes = [h for h in p.interiors if Polygon(h).area >= min_hole_px]
        p = Polygon(p.exterior, holes)
        if p.area >= min_area_px and p.is_valid:
            out.append(p)
    out.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    return out
