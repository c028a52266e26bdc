"""Where a slide is predicted: the ROI file, the tiles on tissue (inside the ROI), and the tissue
area counted in the report. Geometry in level-0 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import read_asap_xml, read_geojson
from qupath_camseg.errors import InvalidAnnotationError
from qupath_camseg.predict.chunks import TilePlan
from qupath_camseg.wsi import TissueFractions, TissueMask

__all__ = ["active_tiles", "check_roi_on_slide", "read_roi", "tissue_area_mm2"]


def read_roi(path: str | Path) -> BaseGeometry:
    """The union of the polygons in a GeoJSON or ASAP XML file (level-0 px)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidAnnotationError(f"ROI file {p} does not exist; pass a GeoJSON or ASAP XML polygon file")
    objs = read_asap_xml(p) if p.suffix.lower() == ".xml" else read_geojson(p)
    polys = [o.geometry for o in objs if isinstance(o.geometry, (Polygon, MultiPolygon)) and o.geometry.area > 0]
    if not polys:
        raise InvalidAnnotationError(f"ROI file {p} holds no polygon; draw an area annotation and export it")
    return shapely.union_all(polys)


def check_roi_on_slide(roi: BaseGeometry, roi_path: str | Path, dims: tuple[int, int], slide: str | Path) -> None:
    """Refuse a ROI that does not touch the slide ``dims = (w, h)`` (level-0 px): nothing would be
    predicted (another slide's ROI, or coordinates that are not level-0 px)."""
    if not roi.intersects(shapely.box(0, 0, dims[0], dims[1])):
        x0, y0, x1, y1 = roi.bounds
        raise InvalidAnnotationError(
            f"ROI {roi_path} lies outside slide {Path(slide).name} ({dims[0]}x{dims[1]} level-0 px; the ROI spans "
            f"x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}); export the ROI from this slide, in level-0 pixels")


def active_tiles(plan: TilePlan, fractions: TissueFractions | TissueMask, roi: BaseGeometry | None,
                 min_tissue: float) -> npt.NDArray[np.bool_]:
    """``bool (ny, nx)``: tiles to compute - on enough tissue (a share of at least ``min_tissue``)
    and, if given, touching the ROI. ``fractions`` is a :class:`TissueFractions` (or a tissue mask)."""
    if not callable(fractions):
        fractions = TissueFractions(fractions)
    ny, nx = plan.grid_shape
    flat = plan.tile_boxes_level0().reshape(-1, 4)
    active = fractions(flat) >= max(min_tissue, 1e-9)
    if roi is not None:
        geoms = shapely.box(flat[:, 0], flat[:, 1], flat[:, 0] + flat[:, 2], flat[:, 1] + flat[:, 3])
        shapely.prepare(roi)
        active &= shapely.intersects(roi, geoms)
    return active.reshape(ny, nx)


def tissue_area_mm2(tissue: TissueMask, roi: BaseGeometry | None, slide_mpp: float) -> float:
    """Area (mm²) of the tissue mask, inside ``roi`` when given; ``slide_mpp`` in µm per level-0 px."""
    if roi is None:
        px = float(np.count_nonzero(tissue.mask)) * float(tissue.downsample) ** 2
    else:
        px = float(tissue.to_polygons().intersection(roi).area)
    return px * slide_mpp**2 / 1e6
