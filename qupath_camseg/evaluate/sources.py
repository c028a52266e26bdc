"""Where a project entry's ground truth and predictions come from: tumour regions picked from
QuPath objects by class name, and the prediction folders under ``<project>/camseg/``.

Ground truth: the entry's own tumour annotations (``Project.read_annotations``, class ``Tumor``
or another tumour name, our own objects excluded). Predictions: ``predictions/<entryID>.geojson``
(the ``annotation`` objects of a tumour class) and ``heatmaps/<entryID>.tif`` (tumour probability).
Geometries are shapely polygons in level-0 px.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shapely.geometry import MultiPolygon, Polygon

from qupath_camseg.annotations import QPObject, is_ours, is_tissue_class, iter_objects, polygonal_part

if TYPE_CHECKING:
    from qupath_camseg.qupath import FileProject, PaquoProject

__all__ = ["TUMOR_CLASS_NAMES", "Region", "missing_class_warning", "prediction_dirs", "tumor_geometries"]

TUMOR_CLASS_NAMES = ("tumor", "tumour", "metastasis", "metastases")
"""Class names (lower case, before any ``:`` sub-class) that count as tumour."""

Region = Polygon | MultiPolygon
"""A tumour region: a valid shapely polygon in level-0 px."""


def _is_tumor(name: str | None, wanted: Sequence[str]) -> bool:
    return name is not None and name.split(":")[0].strip().lower() in wanted


def tumor_geometries(objs: Sequence[QPObject], wanted: Sequence[str], *, ours: bool | None,
                     object_types: Sequence[str] = ("annotation",)) -> list[Region]:
    """The polygonal parts (level-0 px) of ``objs`` and their descendants whose class is one of
    ``wanted`` (lower case) and whose type is one of ``object_types``; ``ours``: only objects
    qupath-camseg made (True), only the others (False), or both (None)."""
    out = []
    for o in iter_objects(objs):
        if o.object_type not in object_types or not _is_tumor(o.classification, wanted):
            continue
        if ours is not None and is_ours(o) != ours:
            continue
        g = polygonal_part(o.geometry)
        if g is not None:
            out.append(g)
    return out


def missing_class_warning(objs: Sequence[QPObject], found: Sequence[object], what: str, wanted: Sequence[str],
                          consequence: str, *, ours: bool | None) -> list[str]:
    """A warning when ``objs`` hold area annotations (ours or not, as for :func:`tumor_geometries`)
    but none of a tumour class (``found`` empty): a class-name mismatch would pass silently."""
    if found:
        return []
    classes = sorted({o.classification or "(unclassified)" for o in iter_objects(objs)
                      if o.object_type == "annotation" and o.is_area and (ours is None or is_ours(o) == ours)
                      and not is_tissue_class(o.classification)})  # the analysed tissue is no class to score
    if not classes:
        return []
    return [f"{what} has annotations of class {', '.join(classes)} but none of a tumour class "
            f"({', '.join(wanted)}); {consequence}"]


def prediction_dirs(project: FileProject | PaquoProject, predictions_dir: str | os.PathLike[str] | None,
                    heatmaps_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """``(predictions folder, heatmaps folder)``: the given ones, else ``<project>/camseg/predictions``
    and ``<project>/camseg/heatmaps`` (where ``qcamseg predict`` writes)."""
    pred_dir = Path(predictions_dir) if predictions_dir else project.camseg_dir / "predictions"
    heat_dir = Path(heatmaps_dir) if heatmaps_dir else project.camseg_dir / "heatmaps"
    return pred_dir, heat_dir
