"""Thresholded map → region pieces, on the raster first: specks and pinholes go before any geometry.

The region-polygon stage used to trace every thresholded blob of every chunk and then merge,
buffer and simplify them all, only to drop the specks at the end; an early model's speckled map
(tens of thousands of blobs, most far below the minimum area) made that hours of geometry for a
few regions kept. Here each chunk's mask is cleaned on the raster (connected components, C speed)
and only what can still reach the minimum area is traced, so the geometry scales with the regions
kept:

1. **Components**: the foreground is labelled 4-connected, the connectivity the contour tracer
   uses (:func:`~qupath_camseg.annotations.masks.vectorize`: diagonal neighbours are separate).
2. **Pinholes**: in every component whose bounding box could hold ``min_area_px`` pixels, the
   holes (what it encloses, 8-connected, islands included) of fewer than ``min_hole_px`` pixels are
   filled (the final stage fills holes below the same area anyway, and a pixel count is never
   below the traced hole's area, so nothing larger is filled). A hole open to the chunk's edge is
   not a hole here; if a seam cuts it, the final stage judges it.
3. **Interior components** (not touching the chunk's edge) are complete: traced when they have at
   least ``min_area_px`` pixels, dropped otherwise.
4. **Edge components** may be one piece of a region cut by a chunk seam, so a speck test per chunk
   would drop pieces of large regions. Each chunk keeps, per edge component, its pixel count and
   the labels along its four edges (a :class:`Seam`); :func:`resolve_seams` joins components
   across seams (4-connected, as the map is one raster), sums their counts over the whole slide
   and keeps the joined components of at least ``min_area_px`` pixels. Edge components that are
   large on their own are traced at once; the others only when their joined component is kept
   (:func:`trace_selected`, a second look at that chunk).

Counts are in map pixels (areas: map px²), geometry in level-0 px. No torch here: this runs in
the output stage's ``spawn``-ed worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon

from qupath_camseg.annotations import vectorize

__all__ = ["ChunkRegions", "Seam", "chunk_regions", "resolve_seams", "trace_selected"]

_EIGHT = np.ones((3, 3), bool)


@dataclass
class Seam:
    """The components of one class's mask that touch its chunk's edge.

    ``top``/``bottom`` (``int32 (w,)``) and ``left``/``right`` (``int32 (h,)``) give the edge
    pixels' component (``1..m``, 0: background); ``counts`` (``int64 (m,)``) each component's
    pixels in this chunk (pinholes filled); ``traced[i]``: component ``i + 1`` is already among
    the chunk's open pieces (large enough on its own).
    """

    top: npt.NDArray[np.int32]
    bottom: npt.NDArray[np.int32]
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    counts: npt.NDArray[np.int64]
    traced: npt.NDArray[np.bool_]


@dataclass
class ChunkRegions:
    """One class of one chunk after the raster clean-up: ``closed`` pieces (level-0 polygons of
    whole regions inside the chunk), ``open`` pieces (edge components traced so far: to be merged
    across seams) and the ``seam`` (``None``: no edge component)."""

    closed: list[Polygon] = field(default_factory=list)
    open: list[Polygon] = field(default_factory=list)
    seam: Seam | None = None


def _components(fg: npt.NDArray[np.bool_], min_area_px: float,
                min_hole_px: float) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """4-connected labels ``int32 (h, w)`` of ``fg`` and each label's pixel count (``[0]``:
    background), with the pinholes of every component that could reach ``min_area_px`` filled: a
    hole is what the component encloses (islands in it included), filled when it has fewer than
    ``min_hole_px`` px. A component of ``c`` px spans a box of at most ``((c + 1) / 2)²`` px, so
    smaller ones (the specks) are never looked at."""
    lab, n = ndimage.label(fg)
    lab = lab.astype(np.int32, copy=False)
    counts = np.bincount(lab.ravel(), minlength=n + 1).astype(np.int64)
    if min_hole_px <= 1:
        return lab, counts
    filled = False
    boxes = ndimage.find_objects(lab)  # boxes[i - 1]: label i's (rows, cols) slices
    for i in np.flatnonzero(((counts + 1) / 2) ** 2 >= max(min_area_px, 9))[1:] if n else ():
        box = boxes[int(i) - 1]
        if box is None:
            continue
        sub = lab[box]
        comp = sub == i
        inside = ndimage.binary_fill_holes(comp) & ~comp
        if not inside.any():
            continue
        holes, nh = ndimage.label(inside, structure=_EIGHT)
        small = np.bincount(holes.ravel(), minlength=nh + 1) < min_hole_px
        small[0] = False
        sub[small[holes]] = i  # (an island inside a filled pinhole goes with it: its count drops to 0)
        filled = True
    if filled:
        counts = np.bincount(lab.ravel(), minlength=n + 1).astype(np.int64)
    return lab, counts


def _edge_ids(lab: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """The labels (> 0) found on the edge of ``lab``, ascending."""
    ids = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return ids[ids > 0]


def _trace(lab: npt.NDArray[np.int32], ids: npt.NDArray[np.int64], origin_px: tuple[float, float],
           ds: float) -> list[Polygon]:
    """Polygons (level-0 px) of the components ``ids`` of ``lab``, each traced inside its own box."""
    ox, oy = origin_px
    out: list[Polygon] = []
    boxes = ndimage.find_objects(lab, max_label=int(ids.max()) if len(ids) else 0)
    for i in ids:
        if boxes[int(i) - 1] is None:  # swallowed by a filled pinhole
            continue
        rows, cols = boxes[int(i) - 1]
        out += vectorize(lab[rows, cols] == i, origin_px=(ox + cols.start * ds, oy + rows.start * ds), downsample=ds)
    return out


def chunk_regions(fg: npt.NDArray[np.bool_], *, origin_px: tuple[float, float], ds: float,
                  min_area_px: float = 0.0, min_hole_px: float = 0.0) -> ChunkRegions:
    """Clean and trace one chunk's mask ``fg`` (``bool (h, w)``, map px) whose top-left corner
    is level-0 ``origin_px`` (``ds`` level-0 px per map px); see the module docstring."""
    h, w = fg.shape
    if not fg.any():
        return ChunkRegions()
    if fg.all():  # inside a region: the chunk itself (no contour to trace)
        ox, oy = origin_px
        one = np.ones(1, np.int32)
        seam = Seam(np.ones(w, np.int32), np.ones(w, np.int32), np.ones(h, np.int32), np.ones(h, np.int32),
                    np.array([h * w], np.int64), one.astype(bool))
        return ChunkRegions([], [shapely.box(ox, oy, ox + w * ds, oy + h * ds)], seam)
    lab, counts = _components(fg, min_area_px, min_hole_px)
    n = len(counts) - 1
    big = counts >= min_area_px
    big[0] = False
    edge = _edge_ids(lab)
    on_edge = np.zeros(n + 1, bool)
    on_edge[edge] = True
    closed = _trace(lab, np.flatnonzero(big & ~on_edge), origin_px, ds)
    if len(edge) == 0:
        return ChunkRegions(closed)
    local = np.zeros(n + 1, np.int32)
    local[edge] = np.arange(1, len(edge) + 1, dtype=np.int32)
    seam = Seam(local[lab[0]], local[lab[-1]], local[lab[:, 0]], local[lab[:, -1]], counts[edge], big[edge])
    return ChunkRegions(closed, _trace(lab, edge[big[edge]], origin_px, ds), seam)


def trace_selected(fg: npt.NDArray[np.bool_], local_ids: npt.NDArray[np.int32], *, origin_px: tuple[float, float],
                   ds: float, min_area_px: float = 0.0, min_hole_px: float = 0.0) -> list[Polygon]:
    """The open pieces of the edge components ``local_ids`` (``1..m``, as numbered by
    :func:`chunk_regions` with the same ``fg``, ``min_area_px`` and ``min_hole_px``)."""
    if fg.all():
        return []  # the whole chunk is one component, always traced by chunk_regions
    lab, _ = _components(fg, min_area_px, min_hole_px)
    edge = _edge_ids(lab)
    return _trace(lab, edge[np.asarray(local_ids, np.int64) - 1], origin_px, ds)


def resolve_seams(seams: dict[tuple[int, int], Seam], min_area_px: float) -> dict[tuple[int, int], npt.NDArray[np.int32]]:
    """Join the edge components of neighbouring chunks ``(row, col)`` across their seams and keep
    the joined components of at least ``min_area_px`` map px²; return, per chunk, the local ids
    (``1..m``) still to trace (kept, not yet traced)."""
    keys = sorted(seams)
    if not keys:
        return {}
    offsets = np.cumsum([0] + [len(seams[k].counts) for k in keys])
    base = {k: int(o) for k, o in zip(keys, offsets[:-1])}
    a_parts, b_parts = [], []
    for (r, c) in keys:
        s = seams[(r, c)]
        for other, mine, theirs in (((r, c + 1), s.right, "left"), ((r + 1, c), s.bottom, "top")):
            t = seams.get(other)
            if t is None:
                continue
            their = getattr(t, theirs)
            n = min(len(mine), len(their))
            both = (mine[:n] > 0) & (their[:n] > 0)
            a_parts.append(base[(r, c)] + mine[:n][both] - 1)
            b_parts.append(base[other] + their[:n][both] - 1)
    total = int(offsets[-1])
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    counts = np.concatenate([seams[k].counts for k in keys]).astype(np.float64)
    kept = np.bincount(comp, weights=counts)[comp] >= min_area_px
    traced = np.concatenate([seams[k].traced for k in keys])
    todo = kept & ~traced
    out = {}
    for k in keys:
        lo, hi = base[k], base[k] + len(seams[k].counts)
        ids = np.flatnonzero(todo[lo:hi]).astype(np.int32) + 1
        if len(ids):
            out[k] = ids
    return out
