"""Evaluate a QuPath project's predictions against its annotations, and draw its figures.

Ground truth: each entry's tumour annotations (``Project.read_annotations``, class ``Tumor`` or
another tumour name, our own objects excluded). Predictions: under ``<project>/camseg/``,
``predictions/<entryID>.geojson`` (the ``annotation`` objects of the tumour class: the predicted
regions) and ``heatmaps/<entryID>.tif`` (tumour probability, uint8 pyramidal TIFF). An entry
without tumour annotations counts as a normal (tumour-free) slide, as in Camelyon16.

Per slide: pixel Dice/IoU (predicted regions vs truth rasterised at ``dice_mpp``; the heatmap
thresholded at 0.5 when there are no regions), lesion detections from the heatmap
(:func:`~qupath_camseg.evaluate.detections.detect_lesions`; from the regions when there is no heatmap)
matched against the Camelyon16 evaluation mask, and a slide score (maximum probability). Over all
slides: pooled pixel scores, the FROC and its score, and the slide-level ROC AUC.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qupath_camseg.errors import CamsegError, InvalidGeoJSONError, ProjectError
from qupath_camseg.evaluate.detections import Detection, detect_lesions
from qupath_camseg.evaluate.metrics import (
    FROCResult,
    PixelCounts,
    SlideFROC,
    evaluation_mask_from_polygons,
    froc,
    match_detections,
    pixel_counts,
    polygon_pixel_counts,
    pooled_counts,
    roc_auc,
)

__all__ = ["TUMOR_CLASS_NAMES", "SlideEvaluation", "ProjectEvaluation", "evaluate_project",
           "read_heatmap", "project_seed_figure"]

TUMOR_CLASS_NAMES = ("tumor", "tumour", "metastasis", "metastases")
_HEATMAP_MAX_SIDE_PX = 8192


@dataclass
class SlideEvaluation:
    """One entry's results. ``pixels`` is None when the entry had nothing to compare."""

    entry_id: str
    image_name: str
    has_tumor: bool
    n_lesions: int
    n_itc: int
    pixels: PixelCounts
    lesions: SlideFROC
    detections: list[Detection]
    slide_score: float
    sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None)."""
        return {
            "entry_id": self.entry_id, "image": self.image_name, "has_tumor": self.has_tumor,
            "n_lesions": self.n_lesions, "n_itc": self.n_itc,
            **{k: _num(v) for k, v in self.pixels.scores().items()},
            "pixels": {"tp": self.pixels.tp, "fp": self.pixels.fp, "fn": self.pixels.fn, "tn": self.pixels.tn},
            "n_detections": len(self.detections), "lesions_hit": self.lesions.n_hit,
            "false_positives": len(self.lesions.fp_probs), "slide_score": _num(self.slide_score),
            "sources": self.sources,
            "detections": [{"prob": round(d.prob, 6), "x": round(d.x_px, 1), "y": round(d.y_px, 1), "outcome": o}
                           for d, o in zip(self.detections, self.lesions.outcomes)],
        }


@dataclass
class ProjectEvaluation:
    """All slides' results and the summary metrics."""

    slides: list[SlideEvaluation]
    froc: FROCResult
    pooled: PixelCounts
    auc: float
    settings: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        """Mean of the per-slide Dice where defined (NaN if none)."""
        vals = [s.pixels.dice for s in self.slides if not math.isnan(s.pixels.dice)]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``overall``, ``froc`` (curve + score), ``slides``, ``skipped``, ``warnings``."""
        overall = {f"pooled_{k}": _num(v) for k, v in self.pooled.scores().items()}
        overall.update(mean_dice=_num(self.mean_dice), froc_score=_num(self.froc.score),
                       slide_auc=_num(self.auc), n_slides=len(self.slides),
                       n_tumor_slides=sum(s.has_tumor for s in self.slides), n_lesions=self.froc.n_lesions)
        return {"overall": overall, "froc": self.froc.to_dict(), "slides": [s.to_dict() for s in self.slides],
                "skipped": [{"image": n, "reason": r} for n, r in self.skipped], "warnings": list(self.warnings),
                "settings": self.settings}


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _is_tumor(name: str | None, wanted: Sequence[str]) -> bool:
    return name is not None and name.split(":")[0].strip().lower() in wanted


def _tumor_geoms(objs: Sequence[Any], wanted: Sequence[str], *, ours: bool | None,
                 object_types: Sequence[str] = ("annotation",)) -> list[Any]:
    from qupath_camseg.annotations import is_ours, iter_objects, polygonal_part

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


def _class_warning(objs: Sequence[Any], found: Sequence[Any], what: str, wanted: Sequence[str],
                   consequence: str, *, ours: bool | None) -> list[str]:
    """A warning when ``objs`` hold area annotations (ours or not, as for :func:`_tumor_geoms`)
    but none of a tumour class (``found`` empty): a class-name mismatch would pass silently."""
    from qupath_camseg.annotations import is_ours, iter_objects

    if found:
        return []
    classes = sorted({o.classification or "(unclassified)" for o in iter_objects(objs)
                      if o.object_type == "annotation" and o.is_area and (ours is None or is_ours(o) == ours)})
    if not classes:
        return []
    return [f"{what} has annotations of class {', '.join(classes)} but none of a tumour class "
            f"({', '.join(wanted)}); {consequence}"]


def read_heatmap(path: str | os.PathLike[str], slide_size_px: tuple[int, int], slide_mpp: float, *,
                 max_side_px: int = _HEATMAP_MAX_SIDE_PX) -> tuple[npt.NDArray[np.float32], float]:
    """Read a probability heatmap TIFF: ``(prob float32 (H, W) in [0, 1], downsample)`` where
    ``downsample`` is slide level-0 px per returned pixel. The finest pyramid level whose longer
    side is at most ``max_side_px`` is read. The heatmap's scale comes from its pixel size, or,
    when the file has none, from its size relative to the slide."""
    from qupath_camseg.wsi import open_slide

    with open_slide(path) as heat:
        if heat.has_mpp:
            ds0 = heat.mpp / slide_mpp
        else:
            ds0 = slide_size_px[0] / heat.dimensions[0]
        level = next((i for i, (w, h) in enumerate(heat.level_dimensions) if max(w, h) <= max_side_px),
                     heat.level_count - 1)
        w, h = heat.level_dimensions[level]
        rgb = heat.read_region((0, 0), level, (w, h))
        ds = ds0 * heat.dimensions[0] / w
    return rgb[..., 0].astype(np.float32) / 255.0, float(ds)


def _polygon_detections(geoms: Sequence[Any]) -> list[Detection]:
    """Fallback detections when there is no heatmap: one per predicted region, at its
    representative point, probability 1 (the FROC then has a single operating point)."""
    return [Detection(1.0, float(p.x), float(p.y)) for p in (g.representative_point() for g in geoms)]


def evaluate_project(
    project_path: str | os.PathLike[str],
    *,
    predictions_dir: str | os.PathLike[str] | None = None,
    heatmaps_dir: str | os.PathLike[str] | None = None,
    images: Sequence[str] = (),
    slide_mpp: float | None = None,
    eval_downsample: float | None = None,
    dice_mpp: float = 2.0,
    detection_threshold: float = 0.1,
    nms_radius_um: float = 200.0,
    include_itcs: bool = False,
    tumor_classes: Sequence[str] = TUMOR_CLASS_NAMES,
) -> ProjectEvaluation:
    """Evaluate every entry (or ``images``: names or entry IDs) that has predictions.

    ``dice_mpp``: pixel size (µm/px) at which regions are compared (never finer than the slide);
    ``eval_downsample``: FROC mask downsample (default ≈ 7.8 µm/px, see
    :func:`~qupath_camseg.evaluate.metrics.default_eval_downsample`); ``detection_threshold`` /
    ``nms_radius_um``: heatmap → detections. Raises :class:`CamsegError` when no entry has
    predictions.
    """
    from qupath_camseg.annotations import rasterize, read_geojson
    from qupath_camseg.qupath import open_project
    from qupath_camseg.wsi import open_slide

    wanted = tuple(c.lower() for c in tumor_classes)
    project = open_project(project_path, "r")
    try:
        pred_dir = Path(predictions_dir) if predictions_dir else project.camseg_dir / "predictions"
        heat_dir = Path(heatmaps_dir) if heatmaps_dir else project.camseg_dir / "heatmaps"
        if not project.entries:
            raise ProjectError(
                f"{getattr(project, 'qpproj', project_path)} has no images; add images in QuPath "
                "(File > Project > Add images), then annotate, train and predict"
            )
        entries = [project.entry(i) for i in images] if images else list(project.entries)
        slides: list[SlideEvaluation] = []
        skipped: list[tuple[str, str]] = []
        warnings: list[str] = []
        for entry in entries:
            pred_file = pred_dir / f"{entry.entry_id}.geojson"
            heat_file = heat_dir / f"{entry.entry_id}.tif"
            if not pred_file.is_file() and not heat_file.is_file():
                skipped.append((entry.image_name, f"no {pred_file.name} in {pred_dir} and no heatmap"))
                continue
            with open_slide(project.image_path(entry), mpp=slide_mpp) as slide:
                size, mpp = (int(slide.dimensions[0]), int(slide.dimensions[1])), float(slide.mpp)
            user_objs = project.read_annotations(entry)
            truth = _tumor_geoms(user_objs, wanted, ours=False)
            warnings += _class_warning(user_objs, truth, f"image {entry.image_name!r}", wanted,
                                       "it counts as a normal slide - name the tumour class Tumor in QuPath",
                                       ours=False)
            sources: list[str] = []
            pred_geoms: list[Any] = []
            if pred_file.is_file():
                try:
                    pred_objs = read_geojson(pred_file)
                except InvalidGeoJSONError as err:
                    raise InvalidGeoJSONError(
                        f"{str(err).split('; ')[0]}; rerun qcamseg predict with --overwrite to write it again"
                    ) from err
                pred_geoms = _tumor_geoms(pred_objs, wanted, ours=None)
                sources.append(str(pred_file))
                warnings += _class_warning(pred_objs, pred_geoms, str(pred_file), wanted,
                                           "no tumour is predicted - was the model trained for other classes?",
                                           ours=None)
            prob, heat_ds = None, 1.0
            if heat_file.is_file():
                prob, heat_ds = read_heatmap(heat_file, size, mpp)
                sources.append(str(heat_file))
            # pixel scores: regions at dice_mpp, else the heatmap at 0.5 on its own grid
            if pred_file.is_file() or prob is None:
                pixels = polygon_pixel_counts(truth, pred_geoms, box_px=(0, 0, *size), mpp=mpp,
                                              eval_mpp=max(dice_mpp, mpp))
            else:
                hh, hw = prob.shape
                t = rasterize([(g, 1) for g in truth], (0, 0, hw * heat_ds, hh * heat_ds), (hw, hh)) \
                    if truth else np.zeros((hh, hw), np.uint8)
                pixels = pixel_counts(t, prob >= 0.5)
            # lesion detections
            if prob is not None:
                dets = detect_lesions(prob, downsample=heat_ds, mpp=mpp, threshold=detection_threshold,
                                      nms_radius_um=nms_radius_um)
                score = float(prob.max()) if prob.size else 0.0
            else:
                dets = _polygon_detections(pred_geoms)
                score = 1.0 if dets else 0.0
            mask = evaluation_mask_from_polygons(truth, size, mpp=mpp, downsample=eval_downsample,
                                                 include_itcs=include_itcs) if truth else None
            lesions = match_detections(dets, mask, name=entry.image_name)
            slides.append(SlideEvaluation(
                entry.entry_id, entry.image_name, bool(truth), lesions.n_lesions, lesions.n_itc,
                pixels, lesions, dets, score, sources))
    finally:
        close = getattr(project, "close", None)
        if close is not None:
            close()
    if not slides:
        raise CamsegError(
            f"no predictions for {'the chosen images' if images else 'any image'} of {project_path} "
            f"(looked in {pred_dir} and {heat_dir}); run `qcamseg predict PROJECT --model MODEL` first"
        )
    labels = [s.has_tumor for s in slides]
    auc = roc_auc(labels, [s.slide_score for s in slides])
    settings = {
        "dice_mpp": dice_mpp, "eval_downsample": eval_downsample, "detection_threshold": detection_threshold,
        "nms_radius_um": nms_radius_um, "include_itcs": include_itcs, "tumor_classes": list(wanted),
        "predictions_dir": str(pred_dir), "heatmaps_dir": str(heat_dir),
        "eval_downsample_default": eval_downsample is None,
    }
    return ProjectEvaluation(slides, froc([s.lesions for s in slides]), pooled_counts(s.pixels for s in slides),
                             auc, settings, skipped, warnings)


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
) -> tuple[Path, float]:
    """Draw the seed figure of one project image (whole slide or ``region_px``, level 0) and
    return ``(png path, Dice)``. Default output ``<project>/camseg/reports/figure_<entryID>.png``.

    Right panel: the heatmap (with a colour bar) when one exists and ``use_heatmap``, and the
    predicted regions. The title gives the image name and the Dice of the shown area.
    """
    from qupath_camseg.annotations import read_geojson
    from qupath_camseg.evaluate.figures import save_figure, seed_figure
    from qupath_camseg.qupath import open_project
    from qupath_camseg.wsi import open_slide

    wanted = tuple(c.lower() for c in tumor_classes)
    project = open_project(project_path, "r")
    try:
        entry = project.entry(image)
        pred_file = Path(predictions_dir or project.camseg_dir / "predictions") / f"{entry.entry_id}.geojson"
        heat_file = Path(heatmaps_dir or project.camseg_dir / "heatmaps") / f"{entry.entry_id}.tif"
        truth = _tumor_geoms(project.read_annotations(entry), wanted, ours=False)
        pred = _tumor_geoms(read_geojson(pred_file), wanted, ours=None) if pred_file.is_file() else []
        out_path = Path(out) if out else project.camseg_dir / "reports" / f"figure_{entry.entry_id}.png"
        with open_slide(project.image_path(entry), mpp=slide_mpp) as slide:
            mpp = float(slide.mpp)
            size = (int(slide.dimensions[0]), int(slide.dimensions[1]))
            if region_px is None:
                box = (0.0, 0.0, float(size[0]), float(size[1]))
            else:
                box = tuple(float(v) for v in region_px)  # type: ignore[assignment]
                if box[2] <= 0 or box[3] <= 0:
                    raise CamsegError(f"--region {region_px} needs a positive width and height (x,y,w,h in level-0 px)")
            target = max(mpp, max(box[2], box[3]) * mpp / max_side_px)
            if region_px is not None:  # only what the region shows (counts, Dice, drawing)
                from shapely.geometry import box as shapely_box

                view = shapely_box(box[0], box[1], box[0] + box[2], box[1] + box[3])
                truth = [g for g in truth if g.intersects(view)]
                pred = [g for g in pred if g.intersects(view)]
            rgb = slide.read_region_mpp(box, target)
        prob, heat_ds = (read_heatmap(heat_file, size, mpp) if use_heatmap and heat_file.is_file() else (None, 1.0))
    finally:
        close = getattr(project, "close", None)
        if close is not None:
            close()
    if pred or prob is None:
        counts = polygon_pixel_counts(truth, pred, box_px=box, mpp=mpp, eval_mpp=target)
    else:
        from qupath_camseg.annotations import rasterize

        hh, hw = prob.shape
        t = rasterize([(g, 1) for g in truth], (0, 0, hw * heat_ds, hh * heat_ds), (hw, hh)) if truth \
            else np.zeros((hh, hw), np.uint8)
        counts = pixel_counts(t, prob >= 0.5)
    dice = counts.dice
    dice_txt = "n/a (no tumour in truth or prediction)" if math.isnan(dice) else f"{dice:.3f}"
    where = "" if region_px is None else f"  region {tuple(int(v) for v in box)}"
    fig = seed_figure(
        rgb, box_px=box, truth=truth, prediction=pred, probability=prob,
        probability_box_px=(0, 0, prob.shape[1] * heat_ds, prob.shape[0] * heat_ds) if prob is not None else None,
        mpp=mpp, title=f"{entry.image_name}{where} — Dice {dice_txt}",
    )
    return save_figure(fig, out_path), dice

