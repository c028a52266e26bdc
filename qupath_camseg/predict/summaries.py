"""Probability chunks → chunk summaries: the traced polygons and tile means of each stored chunk.

The first half of the per-slide output stage of :func:`~qupath_camseg.predict.slide.predict_slide`.
Each stored chunk (``uint8 (n_classes, h, w)`` map pixels, see
:class:`~qupath_camseg.predict.chunks.ChunkStore`) is *summarised* once: its thresholded classes
cleaned on the raster and traced into polygons (level-0 px; :mod:`qupath_camseg.predict.regions`:
specks below the minimum area and pinholes below the minimum hole are dropped before any geometry,
pieces cut by a chunk edge are kept until :meth:`ChunkSummaries.finish` has joined them across
the seams) and the mean probability and area fraction of every measurement tile it covers.
Summaries are independent, so :class:`ChunkSummaries` computes them on a process pool (contour
tracing is pure Python in scikit-image and holds the GIL) *while inference is still running*: the
inference stage calls :meth:`ChunkSummaries.submit` as each chunk is written. What is left at the
end of a slide is the seams (:func:`~qupath_camseg.predict.regions.resolve_seams`, then tracing
the edge pieces of joined regions that reached the minimum area) and
:func:`~qupath_camseg.predict.objects.build_objects`: one union of the pieces cut by seams per class
and the tile grid, both bounded by the regions kept.

Pooled and in-process summaries are the same function on the same bytes, so the objects are
identical either way (``tests/predict/test_outputs.py``). This module runs in ``spawn``-ed worker
processes: it must not import torch (nor anything that does), so the workers start quickly.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from shapely.geometry import Polygon

from qupath_camseg.predict.chunks import ChunkStore
from qupath_camseg.predict.regions import (
    Seam,
    chunk_regions,
    resolve_seams,
    trace_selected,
)
from qupath_camseg.predict.suggestions import chunk_uncertainty

__all__ = ["ChunkSummaries", "ChunkSummary", "summarize_chunk"]

log = logging.getLogger(__name__)

#: Fewer chunks than this are summarised in-process: starting worker processes (≈ 0.3 s each,
#: they import numpy, shapely and scikit-image) would cost more than it saves.
MIN_CHUNKS_FOR_POOL = 32


@dataclass
class ChunkSummary:
    """What the output stage needs from one chunk.

    ``pieces[k]``: polygons (level-0 px) of whole regions of class ``k`` (at or above the threshold)
    inside the chunk; ``open_pieces[k]``: polygons of the regions that touch the chunk's edge (to be
    joined across seams); ``seams[k]``: those regions' edge labels and pixel counts
    (:class:`~qupath_camseg.predict.regions.Seam`, ``None``: none); ``tile_means[(i, j)]``: for measurement tile ``(i, j)`` (row, column on a grid of
    ``measure_px`` map px), ``float64 (2n,)`` = mean probability of each class, then the share of
    its pixels at or above the threshold (over the part of the tile inside this chunk);
    ``uncertainty``: the review-suggestion uncertainty summed per cell (``float32``, see
    :func:`~qupath_camseg.predict.suggestions.chunk_uncertainty`), ``None`` when not asked for.
    """

    row: int
    col: int
    pieces: list[list[Polygon]] = field(default_factory=list)
    open_pieces: list[list[Polygon]] = field(default_factory=list)
    seams: list[Seam | None] = field(default_factory=list)
    tile_means: dict[tuple[int, int], npt.NDArray[np.float64]] = field(default_factory=dict)
    uncertainty: npt.NDArray[np.float32] | None = None


def summarize_chunk(data: npt.NDArray[np.uint8], box: tuple[int, int, int, int], *, ds: float, measure_px: int,
                    threshold_q: int, row: int = 0, col: int = 0, min_area_px: float = 0.0,
                    min_hole_px: float = 0.0, uncertainty_px: int = 0) -> ChunkSummary:
    """Summarise one chunk ``data`` (``uint8 (n, h, w)``, 255 = probability 1) whose map-px box is
    ``box = (x, y, w, h)``; ``ds`` level-0 px per map px; ``threshold_q`` the quantised threshold
    (foreground: ``data >= threshold_q``); ``measure_px`` the measurement tile in map px (a divisor
    of the chunk size, so tiles never straddle chunks); ``min_area_px`` and ``min_hole_px`` (map
    px²) the smallest region and hole kept (see :mod:`qupath_camseg.predict.regions`);
    ``uncertainty_px`` > 0: also the uncertainty grid of review suggestions, on cells of that many
    map px (a divisor of the chunk size)."""
    cx, cy, w, h = box
    n = data.shape[0]
    out = ChunkSummary(row, col)
    for k in range(n):
        regions = chunk_regions(data[k] >= threshold_q, origin_px=(cx * ds, cy * ds), ds=ds,
                                min_area_px=min_area_px, min_hole_px=min_hole_px)
        out.pieces.append(regions.closed)
        out.open_pieces.append(regions.open)
        out.seams.append(regions.seam)
    m = measure_px
    for ty in range(0, h, m):
        for tx in range(0, w, m):
            block = data[:, ty:ty + m, tx:tx + m].reshape(n, -1)
            out.tile_means[((cy + ty) // m, (cx + tx) // m)] = np.concatenate(
                [block.mean(axis=1) / 255.0, (block >= threshold_q).mean(axis=1)])
    if uncertainty_px > 0:
        out.uncertainty = chunk_uncertainty(data, uncertainty_px, threshold_q)
    return out


def _summarize_stored(store: ChunkStore, row: int, col: int, measure_px: int, threshold_q: int,
                      min_area_px: float = 0.0, min_hole_px: float = 0.0, uncertainty_px: int = 0) -> ChunkSummary:
    """Process-pool task: read chunk ``(row, col)`` from ``store`` (a pickled handle) and summarise it."""
    return summarize_chunk(store.read(row, col), store.plan.chunk_box(row, col), ds=store.plan.ds, measure_px=measure_px,
                           threshold_q=threshold_q, row=row, col=col, min_area_px=min_area_px, min_hole_px=min_hole_px,
                           uncertainty_px=uncertainty_px)


def _trace_stored(store: ChunkStore, row: int, col: int, todo: dict[int, npt.NDArray[np.int32]], threshold_q: int,
                  min_area_px: float, min_hole_px: float) -> list[list[Polygon]]:
    """Process-pool task: the open pieces of chunk ``(row, col)``'s edge components ``todo[k]``
    (class ``k`` → local ids), per class."""
    data = store.read(row, col)
    cx, cy, _, _ = store.plan.chunk_box(row, col)
    ds = store.plan.ds
    return [trace_selected(data[k] >= threshold_q, todo[k], origin_px=(cx * ds, cy * ds), ds=ds,
                           min_area_px=min_area_px, min_hole_px=min_hole_px) if k in todo else []
            for k in range(data.shape[0])]


class ChunkSummaries:
    """Summaries of every stored chunk of ``store``, computed as chunks arrive.

    ``processes`` > 1 (and at least :data:`MIN_CHUNKS_FOR_POOL` chunks ``expected``) uses a pool of
    ``spawn``-ed worker processes (safe next to CUDA and threads); otherwise summaries are computed
    in :meth:`finish`. :meth:`submit` is thread-safe (chunk writer threads call it). Use as a
    context manager: leaving it stops the pool. ``min_area_px`` and ``min_hole_px`` (map px²):
    smaller regions and holes are dropped on the raster (0: keep every one); ``uncertainty_px``:
    see :func:`summarize_chunk`.
    """

    def __init__(self, store: ChunkStore, *, measure_px: int, threshold_q: int, processes: int = 1,
                 expected: int = 0, min_area_px: float = 0.0, min_hole_px: float = 0.0,
                 uncertainty_px: int = 0) -> None:
        self.store, self.measure_px, self.threshold_q = store, measure_px, threshold_q
        self.min_area_px, self.min_hole_px, self.uncertainty_px = min_area_px, min_hole_px, uncertainty_px
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
                    _summarize_stored, self.store, row, col, *self._args())
            except BrokenProcessPool:
                self._broken()

    def _args(self) -> tuple[int, int, float, float, int]:
        return self.measure_px, self.threshold_q, self.min_area_px, self.min_hole_px, self.uncertainty_px

    def finish(self) -> list[ChunkSummary]:
        """Summaries of all stored chunks (including ones resumed from an earlier run), row-major,
        with the pieces of regions cut by chunk seams that reach the minimum area traced."""
        rows, cols = self.store.plan.chunk_shape
        out = []
        for r in range(rows):
            for c in range(cols):
                summary = self._result(self._futures.get((r, c)))
                if summary is None and self.store.has(r, c):
                    summary = _summarize_stored(self.store, r, c, *self._args())
                if summary is not None:
                    out.append(summary)
        self._join_seams(out)
        return out

    def _result(self, fut: Future[Any] | None) -> Any:
        """``fut``'s result, or ``None`` (no future, or the pool broke: then stop using it)."""
        if fut is None:
            return None
        try:
            return fut.result()
        except (BrokenProcessPool, CancelledError):
            with self._lock:
                self._broken()
        return None

    def _join_seams(self, summaries: list[ChunkSummary]) -> None:
        """Join edge components across seams, per class, and trace (on the pool when there is
        one) those whose joined region reaches the minimum area but were not traced yet."""
        by_key = {(s.row, s.col): s for s in summaries}
        todo: dict[tuple[int, int], dict[int, npt.NDArray[np.int32]]] = {}
        for k in range(max((len(s.seams) for s in summaries), default=0)):
            seams = {key: s.seams[k] for key, s in by_key.items() if s.seams[k] is not None}
            for key, ids in resolve_seams(seams, self.min_area_px).items():  # type: ignore[arg-type]
                todo.setdefault(key, {})[k] = ids
        futures: dict[tuple[int, int], Future[list[list[Polygon]]]] = {}
        with self._lock:
            try:
                for key, ids_by_class in todo.items() if self._pool is not None else ():
                    futures[key] = self._pool.submit(_trace_stored, self.store, *key, ids_by_class, self.threshold_q,
                                                     self.min_area_px, self.min_hole_px)
            except BrokenProcessPool:
                self._broken()
        for key, ids_by_class in todo.items():
            traced = self._result(futures.get(key))
            if traced is None:
                traced = _trace_stored(self.store, *key, ids_by_class, self.threshold_q, self.min_area_px,
                                       self.min_hole_px)
            for k, pieces in enumerate(traced):
                by_key[key].open_pieces[k].extend(pieces)

    def _broken(self) -> None:
        """A worker process died (killed for memory, say): stop using the pool (lock held)."""
        if self._pool is not None:
            log.warning("a chunk-summary worker process died; summarising the rest in this process")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
