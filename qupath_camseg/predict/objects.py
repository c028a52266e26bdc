"""Chunk summaries → QuPath objects: tile objects with measurements, and region annotations.

The second half of the per-slide output stage (the first: :mod:`qupath_camseg.predict.summaries`).
:func:`build_objects` lays the measurement-tile grid over the tissue (one ``tile`` object per
cell, classified by its highest mean probability) and merges each class's traced pieces into
region annotations (:func:`_regions`, the region-polygon stage: the pieces cut by chunk seams
joined by a union and a closing, ROI clip, simplify, specks and pinholes removed; specks and
pinholes were already dropped on the raster, see :mod:`qupath_camseg.predict.regions`), each with its shape fingerprint (measurement
``camseg fingerprint``, :mod:`qupath_camseg.annotations.fingerprint`). All geometry in level-0 px.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    FINGERPRINT_KEY,
    OUR_NAME_PREFIX,
    QPObject,
    polygonal_part,
    shape_fingerprint,
)
from qupath_camseg.predict.chunks import TilePlan
from qupath_camseg.predict.summaries import ChunkSummary
from qupath_camseg.wsi import TissueFractions

__all__ = ["BACKGROUND_CLASS", "build_objects", "measure_tile_px"]

#: Name given to tiles whose most probable class is the background (QuPath's catch-all class).
BACKGROUND_CLASS = "Other"


def measure_tile_px(plan: TilePlan, model_tile_px: int) -> int:
    """Measurement tile size in map px: the model's tile if it divides the chunk, else the chunk."""
    return model_tile_px if plan.chunk_px % model_tile_px == 0 else plan.chunk_px


def build_objects(summaries: list[ChunkSummary], plan: TilePlan, fractions: TissueFractions, roi: BaseGeometry | None, *,
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
    regions, tumor_area = _region_objects(summaries, plan, roi, class_names=class_names, colors=colors,
                                          slide_mpp=slide_mpp, min_area_um2=min_area_um2, min_hole_um2=min_hole_um2,
                                          simplify_um=simplify_um, tumor_index=tumor_index)
    return objs + regions, tumor_area


def _region_objects(summaries: list[ChunkSummary], plan: TilePlan, roi: BaseGeometry | None, *,
                    class_names: list[str], colors: list[tuple[int, int, int]], slide_mpp: float,
                    min_area_um2: float, min_hole_um2: float, simplify_um: float | None,
                    tumor_index: int) -> tuple[list[QPObject], float]:
    """The region stage: one annotation per region of each class (traced pieces merged by
    :func:`_regions`), and the area (level-0 px²) of class ``tumor_index``'s regions."""
    ds = plan.ds
    um2_px = 1 / slide_mpp**2
    simplify = (simplify_um / slide_mpp) if simplify_um is not None else 0.5 * ds
    objs: list[QPObject] = []
    tumor_area = 0.0
    for k in range(len(class_names)):
        regions = _regions([p for s in summaries for p in s.pieces[k]], [p for s in summaries for p in s.open_pieces[k]],
                           close_px=0.3 * ds, simplify_px=simplify,
                           min_area_px=min_area_um2 * um2_px, min_hole_px=min_hole_um2 * um2_px, roi=roi)
        if k == tumor_index:
            tumor_area = float(sum(p.area for p in regions))
        for p in regions:
            # the fingerprint tells later whether the user reshaped or reclassified the region
            fp = shape_fingerprint(p, class_names[k])
            objs.append(QPObject(p, object_type="annotation", classification=class_names[k], color=colors[k],
                                 name=f"{OUR_NAME_PREFIX} {class_names[k]}", metadata=dict(CAMSEG_METADATA),
                                 measurements={FINGERPRINT_KEY: float(fp)} if fp is not None else {}))
    return objs, tumor_area


def _tile_objects(summaries: list[ChunkSummary], plan: TilePlan, fractions: TissueFractions, roi: BaseGeometry | None, *,
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


def _regions(closed: list[Polygon], open_pieces: list[Polygon], *, close_px: float, simplify_px: float,
             min_area_px: float, min_hole_px: float, roi: BaseGeometry | None) -> list[Polygon]:
    """Regions from whole-region ``closed`` pieces and the ``open_pieces`` cut by chunk seams:
    the open ones are merged (union, morphological closing by ``close_px``, which joins them across
    the seams); then ROI clip, simplify, drop specks and fill small holes. Specks and pinholes
    were already dropped on the raster (:mod:`qupath_camseg.predict.regions`), so the work is
    bounded by the regions kept; the area tests here are the exact ones on the final outlines."""
    parts: list[BaseGeometry] = list(closed)
    if open_pieces:
        merged = shapely.union_all(shapely.buffer(np.asarray(open_pieces, dtype=object), close_px, join_style="mitre"))
        parts.append(merged.buffer(-close_px, join_style="mitre"))
    polys = [p for g in parts for p in getattr(g, "geoms", [g]) if isinstance(p, Polygon) and not p.is_empty]
    if roi is not None and polys:
        shapely.prepare(roi)
        inside = shapely.contains(roi, np.asarray(polys, dtype=object))
        polys = [p if ok else roi.intersection(p) for p, ok in zip(polys, inside)]
        polys = [q for g in polys for q in getattr(g, "geoms", [g]) if isinstance(q, Polygon) and not q.is_empty]
    out = []
    for p in polys:
        if simplify_px > 0:
            p = p.simplify(simplify_px, preserve_topology=True)
        holes = [h for h in p.interiors if Polygon(h).area >= min_hole_px]
        p = Polygon(p.exterior, holes)
        if p.area >= min_area_px and p.is_valid:
            out.append(p)
    out.sort(key=lambda p: (p.bounds[1], p.bounds[0]))
    return out
