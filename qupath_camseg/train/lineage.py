"""Fine-tuning from a model folder (``qcamseg train PROJECT --init MODEL_DIR``) and its lineage.

A run with ``init`` starts from the parent bundle's weights and takes its architecture, pixel size
(µm/px), tile size and classes (:func:`init_settings`: an option that says otherwise is refused in
one line, as for ``--resume``). Unless ``--epochs``/``--steps``/``--lr`` are given it trains a
short schedule: :data:`INIT_EPOCHS` epochs at peak learning rate :data:`INIT_LR` (a third of a
fresh run's), enough to take in a round of corrections without forgetting the rest.

The lineage (:func:`parent_lineage`, saved in ``train_config.json`` and in ``model.json`` under
``training.lineage``) names the parent (folder, SHA-256 of its weights, when it was made) and what
was annotated since: per image, the annotations the parent did not train on (matched by shape
fingerprint, :mod:`qupath_camseg.annotations.fingerprint`; every model records the fingerprints it
trained on in ``training.data.images[].annotations``), their number and area (mm², per class),
and how many of the parent's annotations are gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any

from qupath_camseg.annotations import fingerprint_neighbours, iter_objects, shape_fingerprint
from qupath_camseg.errors import CamsegError, InvalidSettingsError
from qupath_camseg.model import WEIGHTS_NAME, load_bundle, normalize_arch, read_model_config
from qupath_camseg.train.collect import TrainingData
from qupath_camseg.train.config import TrainConfig

__all__ = ["INIT_EPOCHS", "INIT_LR", "annotation_fingerprints", "init_settings", "load_init_weights",
           "parent_lineage", "record_lineage"]

#: The default schedule of a fine-tuning run (when neither --epochs, --steps nor --lr is given).
INIT_EPOCHS = 3
INIT_LR = 3e-4
_UM2_PER_MM2 = 1e6


def init_settings(config: TrainConfig) -> TrainConfig:
    """``config`` with the parent's architecture, mpp, tile and classes, and the short schedule.

    Options left at their defaults take the parent's values; one that was changed and differs
    raises :class:`~qupath_camseg.errors.InvalidSettingsError` (one line, naming the option and
    the parent). A missing or broken parent raises :class:`~qupath_camseg.errors.ModelBundleError`.
    """
    assert config.init is not None
    parent = read_model_config(config.init)
    defaults = TrainConfig()
    names = tuple(parent.class_names)
    given_arch = normalize_arch({**config.arch, "n_classes": len(names)})
    for flag, given, default, theirs in (
        ("--mpp", config.mpp, defaults.mpp, parent.mpp),
        ("--tile", config.tile_px, defaults.tile_px, parent.tile_px),
        ("--classes", config.classes, defaults.classes, names),
        ("--arch/--width/--depth/--encoder", given_arch if config.arch != defaults.arch else None, None, parent.arch),
    ):
        if given != default and not _same(given, theirs):
            shown = ",".join(theirs) if flag == "--classes" else theirs
            raise InvalidSettingsError(
                f"{flag} {_show(given)} does not match the --init model {config.init} ({flag.split('/')[0]} "
                f"{_show(shown)}); drop {flag.split('/')[0]}: a fine-tuned model keeps its parent's pixel size, "
                "tile, classes and architecture (or train a new model without --init)")
    stain_norm = _stain_setting(config, parent.stain, defaults.stain_norm)
    short = config.epochs is None and config.steps is None
    return dataclasses.replace(
        config, mpp=parent.mpp, tile_px=parent.tile_px, classes=names, arch=dict(parent.arch), stain_norm=stain_norm,
        epochs=INIT_EPOCHS if short else config.epochs, lr=INIT_LR if config.lr == defaults.lr else config.lr)


def _stain_setting(config: TrainConfig, parent_stain: dict[str, Any] | None, default: str) -> str:
    """The parent's stain normalisation (its reference is reused, see
    :func:`~qupath_camseg.train.stain_fit.fit_training_stains`); a different ``--stain-norm``
    raises :class:`~qupath_camseg.errors.InvalidSettingsError`."""
    theirs = str(parent_stain.get("method", "macenko")) if parent_stain else "none"
    if config.stain_norm != default and config.stain_norm != theirs:
        raise InvalidSettingsError(
            f"--stain-norm {config.stain_norm} does not match the --init model {config.init} (--stain-norm {theirs}); "
            "drop --stain-norm: a fine-tuned model keeps its parent's stain reference (or train a new model "
            "without --init)")
    return theirs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if k != "n_classes")
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_init_weights(model: Any, init_dir: str) -> None:
    """Copy the parent bundle's weights into ``model`` (same architecture, checked by
    :func:`~qupath_camseg.model.load_bundle`; safetensors only)."""
    parent, _ = load_bundle(init_dir, device="cpu")
    model.load_state_dict(parent.state_dict(), strict=True)


def annotation_fingerprints(objs: list[Any]) -> list[int]:
    """The shape fingerprints of the area annotations among ``objs`` (children included), sorted."""
    prints = (shape_fingerprint(o.geometry, o.classification) for o in iter_objects(objs)
              if o.object_type == "annotation" and o.is_area)
    return sorted(p for p in prints if p is not None)


def record_lineage(data: TrainingData, init_dir: str | None, *, resumed: bool = False) -> None:
    """Add to ``data`` what a later fine-tuning needs and what this one comes from: each image's
    annotation fingerprints (``summary["images"][i]["annotations"]``) and, with ``init_dir``, the
    lineage (``data.lineage``). A resumed run whose parent folder has gone since keeps going; its
    lineage then says so."""
    for rec in data.summary["images"]:
        rec["annotations"] = annotation_fingerprints(data.objects.get(rec["entry_id"], []))
    if init_dir is None:
        return
    try:
        data.lineage = parent_lineage(init_dir, data)
    except (CamsegError, OSError):
        if not resumed:
            raise
        data.lineage = {"parent": {"path": init_dir, "missing": "not found when the run was resumed"}}


def parent_lineage(init_dir: str, data: TrainingData) -> dict[str, Any]:
    """The lineage of a run fine-tuned from ``init_dir`` on ``data`` (see the module docstring)."""
    folder = Path(init_dir)
    parent = read_model_config(folder)
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    before = {(i.get("entry_id"), i.get("name")): set(i.get("annotations") or [])
              for i in (parent.training.get("data") or {}).get("images", [])}
    images = []
    for rec in data.summary["images"]:
        old = before.get((rec["entry_id"], rec["name"]), set())
        images.append(_added(rec, data.objects.get(rec["entry_id"], []), old))
    changed = [i for i in images if i["annotations_added"] or i["annotations_gone"]]
    generation = int((parent.training.get("lineage") or {}).get("generation") or 0)
    area: dict[str, float] = {}
    for i in images:
        for cls, a in i["area_added_mm2"].items():
            area[cls] = area.get(cls, 0.0) + a
    return {
        "parent": {"path": str(folder.resolve()), "sha256": digest, "created": parent.created,
                   "generation": generation},
        "generation": generation + 1,
        "annotations_added": sum(i["annotations_added"] for i in images),
        "area_added_mm2": area,
        "images": changed,
    }


def _added(rec: dict[str, Any], objs: list[Any], old: set[int]) -> dict[str, Any]:
    """One image's changes since the parent: annotations whose fingerprint (up to float rounding)
    is not among the parent's ``old`` ones, their area (mm², per class), and parent annotations gone."""
    mpp2 = float(rec["slide_mpp"]) ** 2
    added, area, kept = 0, {}, set()
    for o in iter_objects(objs):
        if o.object_type != "annotation" or not o.is_area:
            continue
        near = fingerprint_neighbours(o.geometry, o.classification)
        if near & old:
            kept |= near & old
            continue
        added += 1
        cls = o.classification or "(unclassified)"
        area[cls] = area.get(cls, 0.0) + float(o.geometry.area) * mpp2 / _UM2_PER_MM2
    return {"name": rec["name"], "entry_id": rec["entry_id"], "role": rec["role"], "annotations_added": added,
            "area_added_mm2": area, "annotations_gone": len(old - kept)}
