"""Evaluate a QuPath project's predictions against its annotations.

Ground truth and predictions per entry: see :mod:`qupath_camseg.evaluate.sources` (an entry
without tumour annotations counts as a normal, tumour-free slide, as in Camelyon16).

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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from qupath_camseg._io import entry_file
from qupath_camseg.annotations import read_geojson
from qupath_camseg.errors import InvalidGeoJSONError, ProjectError
from qupath_camseg.evaluate._json import json_float
from qupath_camseg.evaluate.auc import roc_auc
from qupath_camseg.evaluate.detections import Detection, detect_lesions
from qupath_camseg.evaluate.lesion_froc import (
    FROCResult,
    SlideFROC,
    froc,
    match_detections,
)
from qupath_camseg.evaluate.lesion_mask import evaluation_mask_from_polygons
from qupath_camseg.evaluate.pixels import (
    PixelCounts,
    heatmap_pixel_counts,
    polygon_pixel_counts,
    pooled_counts,
)
from qupath_camseg.evaluate.sources import (
    TUMOR_CLASS_NAMES,
    Region,
    missing_class_warning,
    prediction_dirs,
    tumor_geometries,
)
from qupath_camseg.qupath import Door, open_project
from qupath_camseg.wsi import open_slide, read_heatmap

if TYPE_CHECKING:
    from qupath_camseg.qupath import FileProject, PaquoProject, ProjectEntry

__all__ = ["ProjectEvaluation", "SlideEvaluation", "evaluate_project"]


@dataclass
class SlideEvaluation:
    """One entry's results. ``pixels``: confusion counts (all true negatives when neither truth
    nor prediction has tumour); ``sources``: the prediction files read."""

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
    n_annotations: int = 0  # the user's objects read for this image (its ground truth)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None)."""
        return {
            "entry_id": self.entry_id, "image": self.image_name, "has_tumor": self.has_tumor,
            "n_annotations": self.n_annotations,
            "n_lesions": self.n_lesions, "n_itc": self.n_itc,
            **{k: json_float(v) for k, v in self.pixels.scores().items()},
            "pixels": {"tp": self.pixels.tp, "fp": self.pixels.fp, "fn": self.pixels.fn, "tn": self.pixels.tn},
            "n_detections": len(self.detections), "lesions_hit": self.lesions.n_hit,
            "false_positives": len(self.lesions.fp_probs), "slide_score": json_float(self.slide_score),
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
    door: str = "files"  # how the ground truth was read: "files" (camseg/annotations/) or "paquo"

    @property
    def mean_dice(self) -> float:
        """Mean of the per-slide Dice where defined (NaN if none)."""
        vals = [s.pixels.dice for s in self.slides if not math.isnan(s.pixels.dice)]
        return float(np.mean(vals)) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``overall``, ``froc`` (curve + score), ``slides``, ``skipped``, ``warnings``."""
        overall = {f"pooled_{k}": json_float(v) for k, v in self.pooled.scores().items()}
        overall.update(mean_dice=json_float(self.mean_dice), froc_score=json_float(self.froc.score),
                       slide_auc=json_float(self.auc), n_slides=len(self.slides),
                       n_tumor_slides=sum(s.has_tumor for s in self.slides), n_lesions=self.froc.n_lesions)
        return {"overall": overall, "froc": self.froc.to_dict(), "slides": [s.to_dict() for s in self.slides],
                "skipped": [{"image": n, "reason": r} for n, r in self.skipped], "warnings": list(self.warnings),
                "settings": self.settings, "door": self.door}


@dataclass(frozen=True)
class _Scoring:
    """How every slide is scored (the options of :func:`evaluate_project`); ``wanted``: tumour
    class names, lower case."""

    wanted: tuple[str, ...]
    slide_mpp: float | None
    eval_downsample: float | None
    dice_mpp: float
    detection_threshold: float
    nms_radius_um: float
    include_itcs: bool


@dataclass(frozen=True)
class _Predictions:
    """What was predicted for one entry: tumour ``regions`` (level-0 px) from its GeoJSON
    (``has_regions``: the file exists, tumour or not) and/or the heatmap ``prob`` (float32
    ``(H, W)`` in [0, 1], ``heat_ds`` level-0 px per pixel); ``sources``: the files read."""

    regions: list[Region]
    has_regions: bool
    prob: npt.NDArray[np.float32] | None
    heat_ds: float
    sources: list[str]


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
    door: Door = "auto",
) -> ProjectEvaluation:
    """Evaluate every entry (or ``images``: names or entry IDs) that has predictions.

    ``dice_mpp``: pixel size (µm/px) at which regions are compared (never finer than the slide);
    ``eval_downsample``: FROC mask downsample (default ≈ 7.8 µm/px, see
    :func:`~qupath_camseg.evaluate.lesion_mask.default_eval_downsample`); ``detection_threshold`` /
    ``nms_radius_um``: heatmap → detections; ``door``: how the ground truth is read (see
    :func:`~qupath_camseg.qupath.open_project`). Raises :class:`ProjectError` when no entry has
    predictions.
    """
    scoring = _Scoring(tuple(c.lower() for c in tumor_classes), slide_mpp, eval_downsample, dice_mpp,
                       detection_threshold, nms_radius_um, include_itcs)
    slides: list[SlideEvaluation] = []
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    with open_project(project_path, "r", door=door) as project:
        used_door = project.door
        pred_dir, heat_dir = prediction_dirs(project, predictions_dir, heatmaps_dir)
        for entry in _chosen_entries(project, project_path, images):
            pred_file = entry_file(pred_dir, "", entry.entry_id, ".geojson")
            heat_file = entry_file(heat_dir, "", entry.entry_id, ".tif")
            if not pred_file.is_file() and not heat_file.is_file():
                skipped.append((entry.image_name, f"no {pred_file.name} in {pred_dir} and no heatmap"))
                continue
            slides.append(_evaluate_slide(project, entry, pred_file, heat_file, scoring, warnings))
    if not slides:
        raise ProjectError(
            f"no predictions for {'the chosen images' if images else 'any image'} of {project_path} "
            f"(looked in {pred_dir} and {heat_dir}); run `qcamseg predict PROJECT --model MODEL` first"
        )
    evaluation = _summarise(slides, scoring, (pred_dir, heat_dir), skipped, warnings)
    evaluation.door = used_door
    return evaluation


def _chosen_entries(project: FileProject | PaquoProject, project_path: str | os.PathLike[str],
                    images: Sequence[str]) -> list[ProjectEntry]:
    """The entries named in ``images`` (all when empty); :class:`ProjectError` for an empty project."""
    if not project.entries:
        raise ProjectError(
            f"{getattr(project, 'qpproj', project_path)} has no images; add images in QuPath "
            "(File > Project > Add images), then annotate, train and predict"
        )
    return [project.entry(i) for i in images] if images else list(project.entries)


def _evaluate_slide(project: FileProject | PaquoProject, entry: ProjectEntry, pred_file: Path, heat_file: Path,
                    scoring: _Scoring, warnings: list[str]) -> SlideEvaluation:
    """One entry: its truth and predictions → pixel scores, detections and lesions (class-name
    warnings are appended to ``warnings``)."""
    with open_slide(project.image_path(entry), mpp=scoring.slide_mpp) as slide:
        size, mpp = (int(slide.dimensions[0]), int(slide.dimensions[1])), float(slide.mpp)
    user_objs = project.read_annotations(entry)
    truth = tumor_geometries(user_objs, scoring.wanted, ours=False)
    warnings += missing_class_warning(user_objs, truth, f"image {entry.image_name!r}", scoring.wanted,
                                      "it counts as a normal slide - name the tumour class Tumor in QuPath",
                                      ours=False)
    pred = _read_predictions(pred_file, heat_file, size, mpp, scoring.wanted, warnings)
    # pixel scores: regions at dice_mpp, else the heatmap at 0.5 on its own grid
    if pred.has_regions or pred.prob is None:
        pixels = polygon_pixel_counts(truth, pred.regions, box_px=(0, 0, *size), mpp=mpp,
                                      eval_mpp=max(scoring.dice_mpp, mpp))
    else:
        pixels = heatmap_pixel_counts(truth, pred.prob, pred.heat_ds)
    dets, score = _detections(pred, mpp, scoring)
    mask = evaluation_mask_from_polygons(truth, size, mpp=mpp, downsample=scoring.eval_downsample,
                                         include_itcs=scoring.include_itcs) if truth else None
    lesions = match_detections(dets, mask, name=entry.image_name)
    return SlideEvaluation(entry.entry_id, entry.image_name, bool(truth), lesions.n_lesions, lesions.n_itc,
                           pixels, lesions, dets, score, pred.sources, len(user_objs))


def _read_predictions(pred_file: Path, heat_file: Path, size: tuple[int, int], mpp: float,
                      wanted: Sequence[str], warnings: list[str]) -> _Predictions:
    """The entry's predicted regions (when ``pred_file`` exists) and heatmap (when ``heat_file``
    exists) for a slide of ``size`` level-0 px at ``mpp`` µm/px."""
    regions: list[Region] = []
    sources: list[str] = []
    has_regions = pred_file.is_file()
    if has_regions:
        try:
            pred_objs = read_geojson(pred_file)
        except InvalidGeoJSONError as err:
            raise InvalidGeoJSONError(
                f"{str(err).split('; ')[0]}; rerun qcamseg predict with --overwrite to write it again"
            ) from err
        regions = tumor_geometries(pred_objs, wanted, ours=None)
        sources.append(str(pred_file))
        warnings += missing_class_warning(pred_objs, regions, str(pred_file), wanted,
                                          "no tumour is predicted - was the model trained for other classes?",
                                          ours=None)
    prob, heat_ds = None, 1.0
    if heat_file.is_file():
        prob, heat_ds = read_heatmap(heat_file, size, mpp)
        sources.append(str(heat_file))
    return _Predictions(regions, has_regions, prob, heat_ds, sources)


def _detections(pred: _Predictions, mpp: float, scoring: _Scoring) -> tuple[list[Detection], float]:
    """Lesion detections (level 0) and the slide score: from the heatmap (score: its maximum),
    else one per predicted region at its representative point, probability 1 (the FROC then has
    a single operating point; score 1 when any)."""
    if pred.prob is not None:
        dets = detect_lesions(pred.prob, downsample=pred.heat_ds, mpp=mpp, threshold=scoring.detection_threshold,
                              nms_radius_um=scoring.nms_radius_um)
        return dets, float(pred.prob.max()) if pred.prob.size else 0.0
    dets = [Detection(1.0, float(p.x), float(p.y)) for p in (g.representative_point() for g in pred.regions)]
    return dets, 1.0 if dets else 0.0


def _summarise(slides: list[SlideEvaluation], scoring: _Scoring, dirs: tuple[Path, Path],
               skipped: list[tuple[str, str]], warnings: list[str]) -> ProjectEvaluation:
    """The FROC, pooled pixel scores and slide AUC over ``slides``, with the settings used."""
    auc = roc_auc([s.has_tumor for s in slides], [s.slide_score for s in slides])
    settings = {
        "dice_mpp": scoring.dice_mpp, "eval_downsample": scoring.eval_downsample,
        "detection_threshold": scoring.detection_threshold, "nms_radius_um": scoring.nms_radius_um,
        "include_itcs": scoring.include_itcs, "tumor_classes": list(scoring.wanted),
        "predictions_dir": str(dirs[0]), "heatmaps_dir": str(dirs[1]),
        "eval_downsample_default": scoring.eval_downsample is None,
    }
    return ProjectEvaluation(slides, froc([s.lesions for s in slides]), pooled_counts(s.pixels for s in slides),
                             auc, settings, skipped, warnings)
