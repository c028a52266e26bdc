"""The images of a training run: read a project's annotations, check the classes, split by slide.

:func:`collect_images` runs the steps in order (each raises a one-line error naming the fix):
read the user's annotations (:func:`_read_annotations`), check that the classes to learn are
annotated (:func:`_found_classes`), choose the validation slides (:func:`_validation_ids`: the
named ones, or about ``val_fraction`` of the slides, never split by tile), prepare each image once
(:func:`~qupath_camseg.train.images.prepare_image`: tissue and labels) and describe the split
(:func:`_summary`, saved with the run).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qupath_camseg.annotations import (
    TISSUE_CLASS,
    QPObject,
    default_class_color,
    is_ignore_class,
    is_ours,
    is_tissue_class,
    iter_objects,
)
from qupath_camseg.errors import InvalidAnnotationError, InvalidSettingsError, ProjectError
from qupath_camseg.qupath import Project, ProjectEntry, open_project
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.images import LabelledImage, prepare_image

__all__ = ["TrainingData", "collect_images"]

_UM2_PER_MM2 = 1e6


@dataclass
class TrainingData:
    """The images of a training run, split by slide, and the classes (output-channel order).

    ``classes``: ``{"name": str, "color": [r, g, b]}`` per foreground class (channel ``i + 1``);
    ``project``: the project file; ``summary``: the split and each image's target area (mm²)
    and tissue tiles, as saved in ``train_config.json``; ``door``: how the annotations were read;
    ``annotations``: the number of the user's area annotations read per image (name → count);
    ``objects``: the annotations each image's labels come from, by entry ID; ``lineage``: the
    parent model and what was added since (:func:`~qupath_camseg.train.lineage.parent_lineage`),
    for runs fine-tuned with ``init``.
    """

    train_images: list[LabelledImage]
    val_images: list[LabelledImage]
    classes: list[dict[str, Any]]
    project: str
    summary: dict[str, Any]
    door: str = "files"
    annotations: dict[str, int] = field(default_factory=dict)
    objects: dict[str, list[QPObject]] = field(default_factory=dict)
    lineage: dict[str, Any] | None = None


def collect_images(project_path: str | os.PathLike[str], config: TrainConfig) -> TrainingData:
    """Read a project's annotated entries, check the classes, split by slide and prepare images.

    Reads ``config``'s ``classes``, ``mpp`` (µm/px), ``tile_px`` (px), ``images``,
    ``val_images``, ``val_fraction``, ``unannotated``, ``include_unannotated``,
    ``sampling.min_tissue``, ``slide_mpp`` and ``seed``.

    Raises :class:`~qupath_camseg.errors.InvalidAnnotationError` when there is nothing to learn
    from or a class is unknown, :class:`~qupath_camseg.errors.ProjectError` for unknown image
    names, and slide errors (missing image, missing mpp) from the slides module.
    """
    classes = config.classes
    if any(is_tissue_class(c) for c in classes):
        raise InvalidSettingsError(f"{TISSUE_CLASS} marks the tissue a prediction analysed and never trains; "
                                   "pass the classes you outlined (e.g. --classes Tumor)")
    project = open_project(project_path, "r", door=config.door)  # type: ignore[arg-type]
    try:
        where = str(project.path)
        door = project.door
        entries = [project.entry(n) for n in config.images] if config.images else list(project.entries)
        annotations = _read_annotations(project, entries)
        found = _found_classes(annotations, classes, where)
        class_to_label = {c: i + 1 for i, c in enumerate(classes)}
        background = [c for c in found if c not in class_to_label and not is_ignore_class(c)]
        labelled = [e for e in entries if annotations[e.entry_id] or config.include_unannotated]
        val_ids = _validation_ids(project, labelled, annotations, class_to_label, config, where)
        prepared = {
            e.entry_id: prepare_image(
                name=e.image_name,
                entry_id=e.entry_id,
                path=project.image_path(e),
                objs=annotations[e.entry_id],
                class_to_label=class_to_label,
                background_classes=background,
                unannotated=config.unannotated,
                mpp=config.mpp,
                tile_px=config.tile_px,
                min_tissue=config.sampling.min_tissue,
                mpp_override=config.slide_mpp,
            )
            for e in labelled
        }
    finally:
        close = getattr(project, "close", None)
        if close is not None:
            close()
    train_imgs = [prepared[e.entry_id] for e in labelled if e.entry_id not in val_ids]
    val_imgs = [prepared[e.entry_id] for e in labelled if e.entry_id in val_ids]
    _check_scale(list(prepared.values()), val_imgs, config)
    if not any(img.regions for img in train_imgs):
        raise InvalidAnnotationError(
            f"no training image of {where} has {', '.join(classes)} annotations (they are all held out for "
            "validation); annotate more images or choose --val-images"
        )
    class_list = [{"name": c, "color": list(found.get(c) or default_class_color(c))} for c in classes]
    summary = _summary(train_imgs, val_imgs, classes, background, config.unannotated)
    counts = {e.image_name: len(annotations[e.entry_id]) for e in entries}
    summary.update(door=door, annotations=counts)
    used = {e.entry_id: annotations[e.entry_id] for e in labelled}
    return TrainingData(train_imgs, val_imgs, class_list, where, summary, door, counts, objects=used)


#: The finest --mpp relative to a slide's own pixel size (the rule predict applies to the model).
_MAX_UPSAMPLE = 2.0


def _check_scale(images: Sequence[LabelledImage], val_images: Sequence[LabelledImage], config: TrainConfig) -> None:
    """Refuse a --mpp that would train a model predict refuses (finer than a slide allows) or
    that leaves nothing to learn or validate on (every image smaller than one tile at --mpp)."""
    for img in images:
        if config.mpp * _MAX_UPSAMPLE < img.slide_mpp:
            raise InvalidSettingsError(
                f"--mpp {config.mpp:g} is finer than image {img.name!r} ({img.slide_mpp:g} µm/px): its pixels would be "
                f"upsampled {img.slide_mpp / config.mpp:.1f}x and qcamseg predict refuses such a model; use --mpp "
                f"{img.slide_mpp:g} or coarser (0.5 is typical)")
    px = [tuple(round(d * img.slide_mpp / config.mpp) for d in img.dimensions) for img in images]
    if px and all(max(w, h) < config.tile_px for w, h in px):
        raise InvalidSettingsError(
            f"at --mpp {config.mpp:g} µm/px every image is smaller than one --tile {config.tile_px} px tile "
            f"(e.g. {images[0].name!r} is {px[0][0]}x{px[0][1]} px): nothing to learn from; use a finer --mpp "
            "(0.5 is typical) or a smaller --tile")
    if val_images and not any(len(img.grid_xy) for img in val_images):
        raise InvalidSettingsError(
            f"no validation tiles: at --mpp {config.mpp:g} µm/px with --tile {config.tile_px} px no tile of "
            f"{', '.join(repr(i.name) for i in val_images[:3])} holds tissue; use a finer --mpp or a smaller --tile, "
            "or choose other --val-images")


def _read_annotations(project: Project, entries: Sequence[ProjectEntry]) -> dict[str, list[QPObject]]:
    """Each entry's usable annotations, by entry ID."""
    return {e.entry_id: _usable(project.read_annotations(e)) for e in entries}


def _usable(objs: Sequence[QPObject]) -> list[QPObject]:
    """The user's area annotations: our own predictions and the analysed-tissue annotation are never
    training labels, but a user's annotation nested inside one of them (QuPath's hierarchy) is."""
    out: list[QPObject] = []
    for o in objs:
        if is_ours(o) or is_tissue_class(o.classification):
            out.extend(_usable(o.children))
        elif any(c.object_type == "annotation" and c.is_area for c in iter_objects([o])):
            out.append(o)
    return out


def _found_classes(
    annotations: dict[str, list[QPObject]], classes: Sequence[str], where: str
) -> dict[str, tuple[int, int, int] | None]:
    """The classes of the area annotations (name → colour, first seen); raise unless there are
    annotations and every class of ``classes`` is among them."""
    found: dict[str, tuple[int, int, int] | None] = {}
    for objs in annotations.values():
        for o in iter_objects(objs):
            if o.object_type == "annotation" and o.is_area and o.classification and not is_tissue_class(o.classification):
                found.setdefault(o.classification, o.color)
    if not any(annotations.values()):
        raise InvalidAnnotationError(
            f"no annotations in {where}: outline {classes[0]} regions in QuPath and export them with the "
            "camseg bridge (or import ASAP XML with qcamseg convert), then train again"
        )
    missing = [c for c in classes if c not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise InvalidAnnotationError(
            f"class {missing[0]!r} is not used by any annotation in {where} (classes found: {have}); "
            "pass --classes with classes that are annotated"
        )
    return found


def _validation_ids(
    project: Project,
    labelled: Sequence[ProjectEntry],
    annotations: dict[str, list[QPObject]],
    class_to_label: dict[str, int],
    config: TrainConfig,
    where: str,
) -> set[str]:
    """Entry IDs of the validation slides: ``config.val_images``, else a split by :func:`_split`
    (slides with a target class on both sides when possible). At least one slide stays for training."""
    if config.val_images:
        labelled_ids = {x.entry_id for x in labelled}
        val_ids = set()
        for name in config.val_images:
            e = project.entry(name)
            if e.entry_id not in labelled_ids:
                raise ProjectError(
                    f"--val-images {name!r} has no annotations in {where}; validate on annotated images"
                )
            val_ids.add(e.entry_id)
    else:
        by_name = {e.image_name: e for e in labelled}
        positive = {
            e.image_name
            for e in labelled
            if any(o.classification in class_to_label for o in iter_objects(annotations[e.entry_id]))
        }
        held = _split(list(by_name), positive, config.val_fraction, config.seed)
        val_ids = {by_name[n].entry_id for n in held}
    if len(val_ids) >= len(labelled):
        raise ProjectError(f"every annotated image of {where} is a validation image; leave at least one to train on")
    return val_ids


def _split(names: list[str], positive: set[str], fraction: float, seed: int) -> set[str]:
    """Hold out about ``fraction`` of the slides (≥ 1 when there are ≥ 2), keeping slides with the
    target class on both sides when possible. Deterministic in ``seed``."""
    n = len(names)
    if n < 2:
        return set()
    rng = np.random.default_rng([seed, 31337])
    pos = [names[i] for i in rng.permutation(n) if names[i] in positive]
    neg = [names[i] for i in rng.permutation(n) if names[i] not in positive]
    n_val = min(n - 1, max(1, round(fraction * n)))
    k_pos = min(max(round(n_val * len(pos) / n), 1 if len(pos) >= 2 else 0), max(len(pos) - 1, 0))
    k_neg = min(n_val - k_pos, len(neg))
    return set(pos[:k_pos] + neg[:k_neg])


def _summary(
    train_imgs: Sequence[LabelledImage],
    val_imgs: Sequence[LabelledImage],
    classes: Sequence[str],
    background: list[str],
    unannotated: str,
) -> dict[str, Any]:
    """The split as saved with the run: per image its role, µm/px, target area (mm²) and tissue tiles."""

    def describe(img: LabelledImage, role: str) -> dict[str, Any]:
        area = {classes[lab - 1]: img.region_area(lab) * img.slide_mpp**2 / _UM2_PER_MM2 for lab in img.regions}
        return {
            "name": img.name,
            "entry_id": img.entry_id,
            "role": role,
            "slide_mpp": img.slide_mpp,
            "area_mm2": area,
            "tissue_tiles": int(len(img.tissue_xy)),
        }

    return {
        "images": [describe(i, "train") for i in train_imgs] + [describe(i, "val") for i in val_imgs],
        "background_classes": background,
        "unannotated": unannotated,
    }
