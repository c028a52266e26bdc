"""Labelled images: a slide of a QuPath project with its annotations painted as training labels.

A :class:`LabelledImage` holds everything sampling needs about one slide, picklable and without
open file handles: pixel size, dimensions, tissue tile origins and the annotation shapes in
level-0 px. Labels of a tile come from rasterising the shapes (:meth:`LabelledImage.label_tile`):

* a class from ``classes`` → its index (1, 2, …); ``Ignore*`` classes → 255 (:data:`IGNORE_INDEX`,
  left out of the loss);
* other classes → 0 (background; e.g. ``Normal``, what *camseg Mark as normal* makes of a false
  positive); unannotated pixels → 0 (default: Camelyon16 tumour outlines are exhaustive, so
  everything not outlined is normal) or 255 with ``unannotated="ignore"`` (only annotated regions
  teach the network).

The regions of those other classes are also *negative regions*: the sampler centres a share of
its tiles inside them (:meth:`LabelledImage.inside_point` with label 0), so a correction is seen
whatever ``unannotated`` says.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from qupath_camseg.annotations import QPObject, is_ignore_class, is_tissue_class, iter_objects, rasterize
from qupath_camseg.wsi import TissueMask, detect_tissue, level0_size, open_slide, tissue_tiles

__all__ = ["IGNORE_INDEX", "LabelledImage", "annotated_fraction", "build_shapes", "prepare_image"]

#: Label of pixels left out of the loss (``Ignore*`` classes; unannotated ones with ``unannotated="ignore"``).
IGNORE_INDEX = 255
_CLIP_MIN_COORDS = 64  # clip shapes with more vertices to the tile before rasterising


@dataclass
class LabelledImage:
    """One image ready for sampling (picklable; no open file handles).

    Geometries and boxes in level-0 px. ``shapes``: ``(geometry, label)`` in paint order (later
    wins). ``regions[label]``: the union of that target class. ``tissue_xy``: ``(n, 2)`` origins of
    half-overlapping tiles with at least ``min_tissue`` tissue (training negatives);
    ``grid_xy``: origins of the non-overlapping grid tiles touching tissue (validation).
    ``tile_px_level0``: the tile size in level-0 px. ``annotated_fraction``: the share (0-1) of the
    slide's tissue mask that its annotations cover, whatever their class (1: outlined completely).
    """

    name: str
    entry_id: str
    path: str
    slide_mpp: float
    dimensions: tuple[int, int]
    tile_px_level0: float
    shapes: list[tuple[BaseGeometry, int]]
    fill: int
    regions: dict[int, MultiPolygon]
    tissue_xy: npt.NDArray[np.int64]
    grid_xy: npt.NDArray[np.int64]
    mpp_override: float | None = None
    annotated_fraction: float = 1.0
    _tree: STRtree | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        geoms = np.array([g for g, _ in self.shapes], dtype=object)
        self._tree = STRtree(geoms) if self.shapes else None
        # shapes worth clipping to a tile before rasterising: valid, with many vertices
        self._clip = (shapely.get_num_coordinates(geoms) > _CLIP_MIN_COORDS) & shapely.is_valid(geoms)
        self._parts: dict[int, tuple[list[Polygon], npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
        negative = [g for g, label in self.shapes if label == 0]  # background-class shapes
        regions = dict(self.regions)
        if negative:
            regions[0] = shapely.union_all(negative)
        for label, region in regions.items():
            parts = [p for p in getattr(region, "geoms", [region]) if isinstance(p, Polygon) and p.area > 0]
            if not parts:
                continue
            areas = np.array([p.area for p in parts], np.float64)
            lengths = np.array([p.exterior.length for p in parts], np.float64)
            self._parts[label] = (parts, areas / areas.sum(), lengths / lengths.sum())

    def region_area(self, label: int) -> float:
        """Area (level-0 px²) of target class ``label`` in this image."""
        region = self.regions.get(label)
        return 0.0 if region is None else float(region.area)

    def negative_area(self) -> float:
        """Area (level-0 px²) of the negative regions (annotations of background classes)."""
        parts = self._parts.get(0)
        return 0.0 if parts is None else float(sum(p.area for p in parts[0]))

    def label_tile(self, box_px: tuple[int, int, int, int], out_size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The label tile ``(h, w)`` uint8 for a level-0 box (only shapes near the box are drawn).

        Large outlines (thousands of vertices, as hand-drawn Camelyon metastases) are first clipped
        to the box plus one output pixel, so the cost follows the vertices inside the tile: every
        pixel centre lies inside that rectangle, so it is labelled as by the whole shape.
        """
        if self._tree is None:
            return np.full((out_size[1], out_size[0]), self.fill, np.uint8)
        x, y, w, h = box_px
        hits = np.sort(self._tree.query(shapely.box(x, y, x + w, y + h)))
        if hits.size == 0:
            return np.full((out_size[1], out_size[0]), self.fill, np.uint8)
        shapes = [self.shapes[i] for i in hits]
        clip = np.flatnonzero(self._clip[hits])
        if clip.size:
            mx, my = w / out_size[0], h / out_size[1]  # one output pixel, level-0 px
            geoms = np.array([shapes[j][0] for j in clip], dtype=object)
            for j, g in zip(clip, shapely.clip_by_rect(geoms, x - mx, y - my, x + w + mx, y + h + my)):
                shapes[j] = (g, shapes[j][1])
        return rasterize(shapes, box_px, out_size, fill=self.fill)

    def inside_point(self, label: int, rng: np.random.Generator) -> tuple[float, float]:
        """A uniformly random point inside target class ``label`` (area-weighted over its parts);
        label 0: inside the negative regions."""
        parts, area_w, _ = self._parts[label]
        part = parts[int(rng.choice(len(parts), p=area_w))]
        x0, y0, x1, y1 = part.bounds
        for _ in range(20):
            xs, ys = rng.uniform(x0, x1, 64), rng.uniform(y0, y1, 64)
            inside = np.flatnonzero(shapely.contains_xy(part, xs, ys))
            if inside.size:
                return float(xs[inside[0]]), float(ys[inside[0]])
        point = part.representative_point()  # very thin shapes
        return float(point.x), float(point.y)

    def border_point(self, label: int, rng: np.random.Generator) -> tuple[float, float]:
        """A random point on the outline of target class ``label`` (length-weighted)."""
        parts, _, length_w = self._parts[label]
        part = parts[int(rng.choice(len(parts), p=length_w))]
        point = shapely.line_interpolate_point(part.exterior, rng.random(), normalized=True)
        return float(point.x), float(point.y)


def build_shapes(
    objs: Sequence[QPObject], class_to_label: dict[str, int], *, background_classes: Sequence[str] = ()
) -> tuple[list[tuple[BaseGeometry, int]], dict[int, MultiPolygon]]:
    """Paint order and target regions from annotations (``QPObject``s, children included).

    Same priority as :func:`qupath_camseg.annotations.masks.label_mask`: larger shapes first (a small island
    annotated inside a larger region wins), ``Ignore*`` last. Classes in ``background_classes``
    (any other named class, e.g. ``Normal``) paint 0: first, under every target shape, unless they
    lie inside one (an island of normal tissue in a tumour, painted in size order). So a ``Normal``
    box drawn across a tumour outline never paints over the tumour. Returns ``(shapes, regions)``.
    """
    labelled: list[tuple[BaseGeometry, int]] = []
    ignored: list[tuple[BaseGeometry, int]] = []
    background: list[BaseGeometry] = []
    by_label: dict[int, list[BaseGeometry]] = {}
    for obj in iter_objects(objs):
        if obj.object_type != "annotation" or not obj.is_area or is_tissue_class(obj.classification):
            continue  # the analysed-tissue annotation never trains (its children may)
        name = obj.classification
        if name in class_to_label:
            label = class_to_label[name]
            labelled.append((obj.geometry, label))
            by_label.setdefault(label, []).append(obj.geometry)
        elif is_ignore_class(name):
            ignored.append((obj.geometry, IGNORE_INDEX))
        elif name is not None and name in background_classes:
            background.append(obj.geometry)
    targets = [g for g, _ in labelled]
    tree = STRtree(targets) if targets else None
    under: list[tuple[BaseGeometry, int]] = []
    for g in background:
        inside = tree is not None and any(targets[i].covers(g) for i in tree.query(g))
        (labelled if inside else under).append((g, 0))
    labelled.sort(key=lambda s: -s[0].area)
    shapes = under + labelled + ignored
    regions: dict[int, MultiPolygon] = {}
    for label, geoms in by_label.items():
        region = shapely.union_all(geoms)
        polys = [p for p in getattr(region, "geoms", [region]) if isinstance(p, Polygon) and p.area > 0]
        if polys:
            regions[label] = MultiPolygon(polys)
    return shapes, regions


def prepare_image(
    *,
    name: str,
    entry_id: str,
    path: str | os.PathLike[str],
    objs: Sequence[QPObject],
    class_to_label: dict[str, int],
    background_classes: Sequence[str],
    unannotated: str,
    mpp: float,
    tile_px: int,
    min_tissue: float,
    mpp_override: float | None = None,
) -> LabelledImage:
    """Open a slide once: pixel size, tissue mask and tissue tile origins; build its labels.

    ``mpp``: µm/px the model works at; ``tile_px``: tile size in px at ``mpp``; ``min_tissue``:
    tissue fraction of a negative tile; ``mpp_override``: level-0 µm/px for files without one.
    ``background_classes`` paint 0, ``unannotated`` is ``"negative"`` (0) or ``"ignore"`` (255).
    """
    with open_slide(path, mpp=mpp_override) as slide:
        slide_mpp = float(slide.mpp)
        dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
        tissue = detect_tissue(slide)
    tile0 = level0_size(tile_px, mpp, slide_mpp)
    tiles = tissue_tiles(dims, tissue, tile0, tile0 / 2, min_tissue)
    grid = tissue_tiles(dims, tissue, tile0, tile0, 0.01)
    shapes, regions = build_shapes(objs, class_to_label, background_classes=background_classes)
    return LabelledImage(
        name=name,
        entry_id=entry_id,
        path=str(path),
        slide_mpp=slide_mpp,
        dimensions=dims,
        tile_px_level0=tile0,
        shapes=shapes,
        fill=IGNORE_INDEX if unannotated == "ignore" else 0,
        regions=regions,
        tissue_xy=_origins(tiles),
        grid_xy=_origins(grid),
        mpp_override=mpp_override,
        annotated_fraction=annotated_fraction(shapes, tissue),
    )


def annotated_fraction(shapes: Sequence[tuple[BaseGeometry, int]], tissue: TissueMask) -> float:
    """The share (0-1) of ``tissue``'s pixels whose centres lie in one of ``shapes`` (level-0 px,
    any label); 1.0 for a slide without tissue."""
    n_tissue = int(tissue.mask.sum())
    if not n_tissue:
        return 1.0
    if not shapes:
        return 0.0
    rows, cols = tissue.mask.shape
    box = (0, 0, int(round(cols * tissue.downsample)), int(round(rows * tissue.downsample)))
    covered = rasterize(((g, 1) for g, _ in shapes), box, (cols, rows)) > 0
    return float((covered & tissue.mask).sum()) / n_tissue


def _origins(tiles: Sequence[tuple[int, int, int, int]]) -> npt.NDArray[np.int64]:
    return np.array([(t[0], t[1]) for t in tiles], np.int64).reshape(-1, 2)
