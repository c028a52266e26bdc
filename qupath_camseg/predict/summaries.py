"""Probability chunks → chunk summaries: the traced polygons and tile means of each stored chunk.

The first half of the per-slide output stage of :func:`~qupath_camseg.predict.slide.predict_slide`.
Each stored chunk (``uint8 (n_classes, h, w)`` map pixels, see
:class:`~qupath_camseg.predict.chunks.ChunkStore`) is *summarised* once: its thresholded classes
traced into polygons (level-0 px; a chunk wholly at or above the threshold is its own box, nothing
to trace) and the mean probability and area fraction of every measurement tile it covers.
Summaries are independent, so :class:`ChunkSummaries` computes them on a process pool (contour
tracing is pure Python in scikit-image and holds the GIL) *while inference is still running*: the
inference stage calls :meth:`ChunkSummaries.submit` as each chunk is written. What is left at the
end of a slide is :func:`~qupath_camseg.predict.objects.build_objects`: one union of the traced
pieces per class and the tile grid, both cheap.

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

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon

from qupath_camseg.annotations import vectorize
from qupath_camseg.predict.chunks import ChunkStore
from qupath_camseg.predict.suggestions import chunk_uncertainty

__all__ = ["ChunkSummaries", "ChunkSummary", "summarize_chunk"]

log = logging.getLogger(__name__)

#: Fewer chunks than this are summarised in-process: starting worker processes (≈ 0.3 s each,
#: they import numpy, shapely and scikit-image) would cost more than it saves.
MIN_CHUNKS_FOR_POOL = 32


@dataclass
class ChunkSummary:
    """What the output stage needs from one chunk.

    ``pieces[k]``: polygons (level-0 px) where class ``k`` is at or above the threshold, cut at the
    chunk's edges; ``tile_means[(i, j)]``: for measurement tile ``(i, j)`` (row, column on a grid of
    ``measure_px`` map px), ``float64 (2n,)`` = mean probability of each class, then the share of
    its pixels at or above the threshold (over the part of the tile inside this chunk);
    ``uncertainty``: the review-suggestion uncertainty summed per cell (``float32``, see
    :func:`~qupath_camseg.predict.suggestions.chunk_uncertainty`), ``None`` when not asked for.
    """

    row: int
    col: int
    pieces: list[list[Polygon]] = field(default_factory=list)
    tile_means: dict[tuple[int, int], npt.NDArray[np.float64]] = field(default_factory=dict)
    uncertainty: npt.NDArray[np.float32] | None = None


def summarize_chunk(data: npt.NDArray[np.uint8], box: tuple[int, int, int, int], *, ds: float, measure_px: int,
                    threshold_q: int, row: int = 0, col: int = 0, uncertainty_px: int = 0) -> ChunkSummary:
    """Summarise one chunk ``data`` (``uint8 (n, h, w)``, 255 = probability 1) whose map-px box is
    ``box = (x, y, w, h)``; ``ds`` level-0 px per map px; ``threshold_q`` the quantised threshold
    (foreground: ``data >= threshold_q``); ``measure_px`` the measurement tile in map px (a divisor
    of the chunk size, so tiles never straddle chunks); ``uncertainty_px`` > 0: also the uncertainty
    grid of review suggestions, on cells of that many map px (a divisor of the chunk size)."""
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
    if uncertainty_px > 0:
        out.uncertainty = chunk_uncertainty(data, uncertainty_px, threshold_q)
    return out


def _summarize_stored(store: ChunkStore, row: int, col: int, measure_px: int, threshold_q: int,
                      uncertainty_px: int = 0) -> ChunkSummary:
    """Process-pool task: read chunk ``(row, col)`` from ``store`` (a pickled handle) and summarise it."""
    return summarize_chunk(store.read(row, col), store.plan.chunk_box(row, col), ds=store.plan.ds, measure_px=measure_px,
                           threshold_q=threshold_q, row=row, col=col, uncertainty_px=uncertainty_px)


class ChunkSummaries:
    """Summaries of every stored chunk of ``store``, computed as chunks arrive.

    ``processes`` > 1 (and at least :data:`MIN_CHUNKS_FOR_POOL` chunks ``expected``) uses a pool of
    ``spawn``-ed worker processes (safe next to CUDA and threads); otherwise summaries are computed
    in :meth:`finish`. :meth:`submit` is thread-safe (chunk writer threads call it). Use as a
    context manager: leaving it stops the pool. ``uncertainty_px``: see :func:`summarize_chunk`.
    """

    def __init__(self, store: ChunkStore, *, measure_px: int, threshold_q: int, processes: int = 1,
                 expected: int = 0, uncertainty_px: int = 0) -> None:
        self.store, self.measure_px, self.threshold_q = store, measure_px, threshold_q
        self.uncertainty_px = uncertainty_px
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
                    _summarize_stored, self.store, row, col, self.measure_px, self.threshold_q, self.uncertainty_px)
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
                    summary = _summarize_stored(self.store, r, c, self.measure_px, self.threshold_q,
                                                self.uncertainty_px)
                if summary is not None:
                    out.append(summary)
        return out

    def _broken(self) -> None:
        """A worker process died (killed for memory, say): stop using the pool (lock held)."""
        if self._pool is not None:
            log.warning("a chunk-summary worker process died; summarising the rest in this process")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
