"""Evaluate a QuPath project's predictions against its annotations.

Ground truth and predictions per entry: see :mod:`qupath_camseg.evaluate.sources` (an entry
without tumour annotations counts as a normal, tumour-free slide, as in Camelyon16).

Per slide: pixel Dice/IoU (predicted regions vs truth rasterised at ``dice_mpp``; the heatmap
thresholded at 0.5 when there are no regions), lesion detections from the heatmap
(:func:`~qupath_camseg.evaluate.detections.detect_lesions`; from the regions when there is no heatmap)
matched against the Camelyon16 evaluation mask, a slide score (maximum probability), the heatmap's
calibration on tissue (ECE, mean tumour probability on normal tissue:
:mod:`qupath_camseg.evaluate.calibration`) and the slide's role for the model (trained on it or not:
:mod:`qupath_camseg.evaluate.roles`). Over the slides the model did not train on (the headline; or
over all with ``all_slides``) and, apart, over its training slides
(:mod:`qupath_camseg.evaluate.slide_sets`): pooled pixel scores, the FROC and its score, the
slide-level ROC AUC and the pooled calibration.
"""

from __future__ import annotations

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
from qupath_camseg.evaluate.calibration import HeatmapCalibration, heatmap_calibration
from qupath_camseg.evaluate.detections import Detection, detect_lesions
from qupath_camseg.evaluate.lesion_froc import FROCResult, SlideFROC, match_detections
from qupath_camseg.evaluate.lesion_mask import evaluation_mask_from_polygons
from qupath_camseg.evaluate.pixels import (
    PixelCounts,
    heatmap_pixel_counts,
    heatmap_truth,
    polygon_pixel_counts,
)
from qupath_camseg.evaluate.roles import read_training_roles, slide_roles
from qupath_camseg.evaluate.slide_sets import SetSummary, split_headline
from qupath_camseg.evaluate.sources import (
    TUMOR_CLASS_NAMES,
    Region,
    missing_class_warning,
    prediction_dirs,
    tumor_geometries,
)
from qupath_camseg.qupath import Door, open_project
from qupath_camseg.wsi import Slide, detect_tissue, open_slide, read_heatmap

if TYPE_CHECKING:
    from qupath_camseg.qupath import FileProject, PaquoProject, ProjectEntry

__all__ = ["ProjectEvaluation", "SlideEvaluation", "evaluate_project"]


@dataclass
class SlideEvaluation:
    """One entry's results. ``pixels``: confusion counts (all true negatives when neither truth
    nor prediction has tumour); ``sources``: the prediction files read; ``calibration``: the
    heatmap's on tissue (``None`` without a heatmap); ``role``: ``train``, ``val``, ``unseen`` or
    ``unknown`` for the model that predicted it (:mod:`qupath_camseg.evaluate.roles`)."""

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
    calibration: HeatmapCalibration | None = None
    role: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None)."""
        return {
            "entry_id": self.entry_id, "image": self.image_name, "role": self.role, "has_tumor": self.has_tumor,
            "n_annotations": self.n_annotations,
            "n_lesions": self.n_lesions, "n_itc": self.n_itc,
            **{k: json_float(v) for k, v in self.pixels.scores().items()},
            "pixels": {"tp": self.pixels.tp, "fp": self.pixels.fp, "fn": self.pixels.fn, "tn": self.pixels.tn},
            "n_detections": len(self.detections), "lesions_hit": self.lesions.n_hit,
            "false_positives": len(self.lesions.fp_probs), "slide_score": json_float(self.slide_score),
            "sources": self.sources,
            "ece": json_float(self.calibration.bins.ece) if self.calibration is not None else None,
            "mean_prob_normal_tissue": json_float(self.calibration.mean_normal_prob)
            if self.calibration is not None else None,
            "normal_tissue_pixels": self.calibration.normal_pixels if self.calibration is not None else None,
            "detections": [{"prob": round(d.prob, 6), "x": round(d.x_px, 1), "y": round(d.y_px, 1), "outcome": o}
                           for d, o in zip(self.detections, self.lesions.outcomes)],
        }


@dataclass
class ProjectEvaluation:
    """All slides' results and the summary metrics: ``headline`` over the slides of ``scope``
    (:data:`~qupath_camseg.evaluate.slide_sets.SCOPES`), ``training`` over the training slides
    when they are not in the headline (``None`` when there are none)."""

    slides: list[SlideEvaluation]
    headline: SetSummary
    training: SetSummary | None
    scope: str
    settings: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    door: str = "files"  # how the ground truth was read: "files" (camseg/annotations/) or "paquo"

    @property
    def froc(self) -> FROCResult:
        """The headline FROC."""
        return self.headline.froc

    @property
    def pooled(self) -> PixelCounts:
        """The headline slides' pooled pixel counts."""
        return self.headline.pooled

    @property
    def auc(self) -> float:
        """The headline slide-level AUC (NaN unless both tumour and normal slides)."""
        return self.headline.auc

    @property
    def mean_dice(self) -> float:
        """Mean of the headline slides' Dice where defined (NaN if none)."""
        return self.headline.mean_dice

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: ``overall`` (the headline set, with its ``scope``), ``training_slides``
        (scored apart, or ``None``), ``froc`` (headline curve + score), ``slides``, ``skipped``,
        ``warnings``, ``settings``."""
        overall = {"scope": self.scope, **self.headline.to_dict()}
        overall["n_tumor_slides"] = sum(s.has_tumor for s in self.slides if s.image_name in self.headline.names)
        return {"overall": overall, "training_slides": self.training.to_dict() if self.training else None,
                "froc": self.froc.to_dict(), "slides": [s.to_dict() for s in self.slides],
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
    all_slides: bool = False


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
    model_dir: str | os.PathLike[str] | None = None,
    all_slides: bool = False,
) -> ProjectEvaluation:
    """Evaluate every entry (or ``images``: names or entry IDs) that has predictions.

    ``dice_mpp``: pixel size (µm/px) at which regions are compared (never finer than the slide);
    ``eval_downsample``: FROC mask downsample (default ≈ 7.8 µm/px, see
    :func:`~qupath_camseg.evaluate.lesion_mask.default_eval_downsample`); ``detection_threshold`` /
    ``nms_radius_um``: heatmap → detections; ``door``: how the ground truth is read (see
    :func:`~qupath_camseg.qupath.open_project`). ``model_dir``: the model whose training slides are
    scored apart (default: the model each slide's prediction report names); ``all_slides``: pool
    every slide in the headline. Raises :class:`ProjectError` when no entry has predictions.
    """
    scoring = _Scoring(tuple(c.lower() for c in tumor_classes), slide_mpp, eval_downsample, dice_mpp,
                       detection_threshold, nms_radius_um, include_itcs, all_slides)
    slides: list[SlideEvaluation] = []
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    if model_dir is not None:
        read_training_roles(model_dir)  # a wrong --model fails before any slide is read
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
        project_dir = Path(project.path)
    if not slides:
        raise ProjectError(
            f"no predictions for {'the chosen images' if images else 'any image'} of {project_path} "
            f"(looked in {pred_dir} and {heat_dir}); run `qcamseg predict PROJECT --model MODEL` first"
        )
    roles = slide_roles([(s.entry_id, s.image_name) for s in slides], pred_dir.parent / "reports", project_dir,
                        model_dir=model_dir)
    for s in slides:
        s.role = roles.roles[s.entry_id]
    evaluation = _summarise(slides, scoring, (pred_dir, heat_dir), skipped, warnings + roles.warnings, model_dir)
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
        pred = _read_predictions(pred_file, heat_file, size, mpp, scoring.wanted, warnings)
        tissue = _tissue_on_grid(slide, pred.prob.shape, pred.heat_ds) if pred.prob is not None else None
    user_objs = project.read_annotations(entry)
    truth = tumor_geometries(user_objs, scoring.wanted, ours=False)
    warnings += missing_class_warning(user_objs, truth, f"image {entry.image_name!r}", scoring.wanted,
                                      "it counts as a normal slide - name the tumour class Tumor in QuPath",
                                      ours=False)
    truth_grid = heatmap_truth(truth, pred.prob.shape, pred.heat_ds) if pred.prob is not None else None
    # pixel scores: regions at dice_mpp, else the heatmap at 0.5 on its own grid
    if pred.has_regions or pred.prob is None:
        pixels = polygon_pixel_counts(truth, pred.regions, box_px=(0, 0, *size), mpp=mpp,
                                      eval_mpp=max(scoring.dice_mpp, mpp))
    else:
        pixels = heatmap_pixel_counts(truth, pred.prob, pred.heat_ds, truth_mask=truth_grid)
    calibration = heatmap_calibration(pred.prob, truth_grid, tissue) \
        if pred.prob is not None and truth_grid is not None and tissue is not None else None
    dets, score = _detections(pred, mpp, scoring)
    mask = evaluation_mask_from_polygons(truth, size, mpp=mpp, downsample=scoring.eval_downsample,
                                         include_itcs=scoring.include_itcs) if truth else None
    lesions = match_detections(dets, mask, name=entry.image_name)
    return SlideEvaluation(entry.entry_id, entry.image_name, bool(truth), lesions.n_lesions, lesions.n_itc,
                           pixels, lesions, dets, score, pred.sources, len(user_objs), calibration)


def _tissue_on_grid(slide: Slide, shape: tuple[int, int], heat_ds: float) -> npt.NDArray[np.bool_]:
    """The slide's tissue (:func:`~qupath_camseg.wsi.detect_tissue`) on a heatmap's grid: bool
    ``shape`` = ``(H, W)``, each heatmap pixel taking the tissue mask pixel under its centre."""
    tissue = detect_tissue(slide)
    mh, mw = tissue.mask.shape
    rows = np.clip(((np.arange(shape[0]) + 0.5) * heat_ds / tissue.downsample).astype(np.int64), 0, mh - 1)
    cols = np.clip(((np.arange(shape[1]) + 0.5) * heat_ds / tissue.downsample).astype(np.int64), 0, mw - 1)
    return tissue.mask[np.ix_(rows, cols)]


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
               skipped: list[tuple[str, str]], warnings: list[str],
               model_dir: str | os.PathLike[str] | None) -> ProjectEvaluation:
    """The headline and training-slide scores (:func:`~qupath_camseg.evaluate.slide_sets.split_headline`)
    with the settings used."""
    scope, headline, training = split_headline(slides, all_slides=scoring.all_slides, warnings=warnings)
    settings = {
        "dice_mpp": scoring.dice_mpp, "eval_downsample": scoring.eval_downsample,
        "detection_threshold": scoring.detection_threshold, "nms_radius_um": scoring.nms_radius_um,
        "include_itcs": scoring.include_itcs, "tumor_classes": list(scoring.wanted),
        "predictions_dir": str(dirs[0]), "heatmaps_dir": str(dirs[1]),
        "eval_downsample_default": scoring.eval_downsample is None,
        "all_slides": scoring.all_slides, "model": str(model_dir) if model_dir is not None else None,
    }
    return ProjectEvaluation(slides, headline, training, scope, settings, skipped, warnings)
