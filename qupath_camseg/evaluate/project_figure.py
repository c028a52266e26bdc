"""The seed figure of one project image: the slide (or a level-0 region of it) with its ground
truth beside the prediction (heatmap and/or regions), titled with the Dice of the shown area.

Truth and predictions come from the project as for :func:`~qupath_camseg.evaluate.project.evaluate_project`
(:mod:`qupath_camseg.evaluate.sources`); the drawing is :func:`~qupath_camseg.evaluate.figures.seed_figure`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from shapely.geometry import box as shapely_box

from qupath_camseg._io import entry_file, path_inside
from qupath_camseg.annotations import read_geojson
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.evaluate.figures import save_figure, seed_figure
from qupath_camseg.evaluate.pixels import heatmap_pixel_counts, polygon_pixel_counts
from qupath_camseg.evaluate.sources import (
    TUMOR_CLASS_NAMES,
    Region,
    prediction_dirs,
    tumor_geometries,
)
from qupath_camseg.qupath import Door, open_project
from qupath_camseg.wsi import open_slide, read_heatmap

__all__ = ["project_seed_figure"]

_Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class _View:
    """What the figure shows: ``rgb`` uint8 ``(h, w, 3)`` of the level-0 ``box`` (x, y, w, h) at
    ``target_mpp`` µm/px, from a slide of ``size`` level-0 px at ``mpp`` µm/px."""

    rgb: npt.NDArray[np.uint8]
    box: _Box
    mpp: float
    size: tuple[int, int]
    target_mpp: float


def project_seed_figure(
    project_path: str | os.PathLike[str],
    image: str,
    *,
    out: str | os.PathLike[str] | None = None,
    region_px: tuple[float, float, float, float] | None = None,
    predictions_dir: str | os.PathLike[str] | None = None,
    heatmaps_dir: str | os.PathLike[str] | None = None,
    slide_mpp: float | None = None,
    max_side_px: int = 1600,
    use_heatmap: bool = True,
    tumor_classes: Sequence[str] = TUMOR_CLASS_NAMES,
    door: Door = "auto",
    notes: list[str] | None = None,
) -> tuple[Path, float]:
    """Draw the seed figure of one project image (whole slide or ``region_px``, level 0) and
    return ``(png path, Dice)``. Default output ``<project>/camseg/reports/figure_<entryID>.png``.

    Right panel: the heatmap (with a colour bar) when one exists and ``use_heatmap``, and the
    predicted regions. The title gives the image name and the Dice of the shown area. ``door``:
    how the ground truth is read; ``notes`` receives a line saying which door and how many objects.
    """
    wanted = tuple(c.lower() for c in tumor_classes)
    with open_project(project_path, "r", door=door) as project:
        entry = project.entry(image)
        pred_dir, heat_dir = prediction_dirs(project, predictions_dir, heatmaps_dir)
        pred_file = entry_file(pred_dir, "", entry.entry_id, ".geojson")
        heat_file = entry_file(heat_dir, "", entry.entry_id, ".tif")
        user_objs = project.read_annotations(entry)
        if notes is not None:
            notes.append(f"ground truth: {len(user_objs)} annotation(s) of {entry.image_name} read through the "
                         f"{project.door} door")
        truth = tumor_geometries(user_objs, wanted, ours=False)
        pred = tumor_geometries(read_geojson(pred_file), wanted, ours=None) if pred_file.is_file() else []
        out_path = Path(out) if out else path_inside(project.camseg_dir, "reports", f"figure_{entry.entry_id}.png")
        view = _read_view(project.image_path(entry), region_px, slide_mpp=slide_mpp, max_side_px=max_side_px)
        if region_px is not None:  # only what the region shows (counts, Dice, drawing)
            truth, pred = _visible(truth, view.box), _visible(pred, view.box)
        prob, heat_ds = (read_heatmap(heat_file, view.size, view.mpp) if use_heatmap and heat_file.is_file()
                         else (None, 1.0))
    if pred or prob is None:
        counts = polygon_pixel_counts(truth, pred, box_px=view.box, mpp=view.mpp, eval_mpp=view.target_mpp)
    else:
        counts = heatmap_pixel_counts(truth, prob, heat_ds)
    dice = counts.dice
    dice_txt = "n/a (no tumour in truth or prediction)" if math.isnan(dice) else f"{dice:.3f}"
    where = "" if region_px is None else f"  region {tuple(int(v) for v in view.box)}"
    fig = seed_figure(
        view.rgb, box_px=view.box, truth=truth, prediction=pred, probability=prob,
        probability_box_px=(0, 0, prob.shape[1] * heat_ds, prob.shape[0] * heat_ds) if prob is not None else None,
        mpp=view.mpp, title=f"{entry.image_name}{where} — Dice {dice_txt}",
    )
    return save_figure(fig, out_path), dice


def _read_view(image_path: Path, region_px: _Box | None, *, slide_mpp: float | None, max_side_px: int) -> _View:
    """Read the whole slide (or ``region_px``, level 0) at the finest µm/px (never finer than the
    slide's) whose longer side fits ``max_side_px``. :class:`InvalidSettingsError` for an empty region."""
    with open_slide(image_path, mpp=slide_mpp) as slide:
        mpp = float(slide.mpp)
        size = (int(slide.dimensions[0]), int(slide.dimensions[1]))
        if region_px is None:
            box: _Box = (0.0, 0.0, float(size[0]), float(size[1]))
        else:
            box = _on_slide(tuple(float(v) for v in region_px), size, image_path)  # type: ignore[arg-type]
        target = max(mpp, max(box[2], box[3]) * mpp / max_side_px)
        rgb = slide.read_region_mpp(box, target)
    return _View(rgb, box, mpp, size, target)


def _on_slide(region: _Box, size: tuple[int, int], image_path: Path) -> _Box:
    """The part of ``region`` (x, y, w, h, level-0 px) on the slide of ``size``;
    :class:`InvalidSettingsError` for an empty region or one wholly off the slide."""
    x, y, w, h = region
    if not (w > 0 and h > 0):
        raise InvalidSettingsError(f"--region {region} needs a positive width and height (x,y,w,h in level-0 px)")
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(size[0])), min(y + h, float(size[1]))
    if x1 <= x0 or y1 <= y0:
        raise InvalidSettingsError(f"--region {tuple(int(v) for v in region)} lies outside {image_path.name} "
                                   f"({size[0]}x{size[1]} level-0 px); give x,y,width,height inside the slide")
    return (x0, y0, x1 - x0, y1 - y0)


def _visible(geoms: list[Region], box: _Box) -> list[Region]:
    """The geometries that intersect the level-0 ``box`` (x, y, w, h)."""
    view = shapely_box(box[0], box[1], box[0] + box[2], box[1] + box[3])
    return [g for g in geoms if g.intersects(view)]
