"""The region-polygon stage as it was before issue 18, kept as the reference the new one is measured
against (``benchmarks/bench_regions.py``) and tested against (``tests/predict/test_regions.py``).

Every thresholded blob of every chunk is traced (marching squares), then all pieces are merged at
once: union of the pieces buffered by 0.3 map px (mitre), the negative buffer, ROI clip, simplify,
and only then are specks below the minimum area and holes below the minimum hole dropped. Its cost
grows with every blob of the map, kept or not.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import vectorize
from qupath_camseg.predict import ChunkStore

__all__ = ["reference_pieces", "reference_regions"]


def reference_pieces(store: ChunkStore, threshold_q: int, channel: int = 0) -> list[Polygon]:
    """Every traced piece of ``channel`` at or above ``threshold_q`` in every stored chunk (level-0 px)."""
    ds = store.plan.ds
    out: list[Polygon] = []
    for r, c, data in store.iter_chunks():
        cx, cy, w, h = store.plan.chunk_box(r, c)
        fg = data[channel] >= threshold_q
        if not fg.any():
            continue
        if fg.all():
            out.append(shapely.box(cx * ds, cy * ds, (cx + w) * ds, (cy + h) * ds))
        else:
            out += vectorize(fg, origin_px=(cx * ds, cy * ds), downsample=ds)
    return out


def reference_regions(pieces: list[Polygon], *, close_px: float, simplify_px: float, min_area_px: float,
                      min_hole_px: float, roi: BaseGeometry | None = None) -> list[Polygon]:
    """The old ``predict.objects._regions``: merge every piece, then drop specks and pinholes."""
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
