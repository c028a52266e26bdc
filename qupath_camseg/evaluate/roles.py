"""Which evaluated slides the model trained on: each slide's role, from the model that predicted it.

A model folder's ``model.json`` lists the images of its training run with their role
(``training.data.images[]``: ``name``, ``entry_id``, ``role`` = ``train`` or ``val``). The model of
a slide is the one its prediction report names (``reports/<entryID>.json``: ``model.path`` and
``model.sha256``, written by ``qcamseg predict``), or the one given with ``--model``. A slide is

* ``train``: the model learned from it (its scores say little about new slides);
* ``val``: held out for validation (chose the best epoch and fitted the calibration, never trained on);
* ``unseen``: not in the model's training run at all;
* ``unknown``: no model could be found for it (no report naming a readable model, no ``--model``).

Only ``train`` slides leave the headline scores. Plain JSON is read here (no torch): evaluation
does not load networks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qupath_camseg._io import entry_file
from qupath_camseg.errors import ProjectError, UnsafePathError

__all__ = ["ROLES", "SlideRoles", "TrainingRoles", "read_training_roles", "slide_roles"]

ROLES = ("train", "val", "unseen", "unknown")
_CONFIG, _WEIGHTS = "model.json", "model.safetensors"  # the model folder's files (see model/bundle.py)


@dataclass(frozen=True)
class TrainingRoles:
    """The images a model folder trained (``train``) and validated (``val``) on, by entry ID and by
    image name; ``project``: the training project's path as recorded."""

    model_dir: Path
    project: str | None
    by_entry: dict[str, str]
    by_name: dict[str, str]

    def role(self, entry_id: str, name: str, *, same_project: bool) -> str:
        """``train``, ``val`` or ``unseen`` for an image (matched by entry ID in the training
        project, else by image name)."""
        if same_project:
            return self.by_entry.get(entry_id, "unseen")
        return self.by_name.get(name, "unseen")


def read_training_roles(model_dir: str | os.PathLike[str]) -> TrainingRoles:
    """The training images of the model folder ``model_dir`` (:class:`ProjectError` when its
    ``model.json`` is missing or unreadable)."""
    folder = Path(model_dir)
    folder = folder.parent if folder.name in (_CONFIG, _WEIGHTS) else folder
    path = folder / _CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ProjectError(f"cannot read {path} ({why}); pass --model with a model folder written by qcamseg train") \
            from err
    training = data.get("training") if isinstance(data, dict) else None
    images = (training or {}).get("data", {}).get("images", []) if isinstance(training, dict) else []
    by_entry, by_name = {}, {}
    for img in images if isinstance(images, list) else []:
        if isinstance(img, dict) and img.get("role") in ("train", "val"):
            if img.get("entry_id") is not None:
                by_entry[str(img["entry_id"])] = img["role"]
            if img.get("name") is not None:
                by_name[str(img["name"])] = img["role"]
    project = training.get("project") if isinstance(training, dict) else None
    return TrainingRoles(folder, str(project) if project else None, by_entry, by_name)


@dataclass(frozen=True)
class SlideRoles:
    """Per entry ID its role (one of :data:`ROLES`) and the model folder it was read from
    (``None``: unknown); ``warnings``: one line per problem (model changed, missing, …)."""

    roles: dict[str, str]
    models: dict[str, str | None]
    warnings: list[str]


def _weights_sha256(folder: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(folder / _WEIGHTS, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _report_path(reports_dir: Path, entry_id: str) -> Path | None:
    """Where predict wrote ``entry_id``'s report; ``None`` for an ID predict could not have used."""
    try:
        return entry_file(reports_dir, "", entry_id, ".json")
    except UnsafePathError:
        return None


def _report_model(report: Path | None) -> tuple[str | None, str | None]:
    """``(model path, sha256)`` a prediction report names (``None`` when absent or unreadable)."""
    if report is None:
        return None, None
    try:
        model: Any = json.loads(report.read_text(encoding="utf-8")).get("model") or {}
    except (OSError, ValueError, AttributeError):
        return None, None
    return (model.get("path"), model.get("sha256")) if isinstance(model, dict) else (None, None)


def _same_project(recorded: str | None, project_dir: Path) -> bool:
    if not recorded:
        return False
    p = Path(recorded)
    p = p.parent if p.suffix == ".qpproj" else p
    try:
        return p.resolve() == project_dir.resolve()
    except OSError:
        return False


def slide_roles(entries: Sequence[tuple[str, str]], reports_dir: Path, project_dir: Path, *,
                model_dir: str | os.PathLike[str] | None = None) -> SlideRoles:
    """The role of each ``(entry ID, image name)``: from ``model_dir`` when given, else from the
    model each slide's report in ``reports_dir`` names. ``project_dir``: the evaluated project's
    folder (entry IDs only match within the training project)."""
    warnings: list[str] = []
    cache: dict[str, tuple[TrainingRoles | None, str | None]] = {}

    def load(path: str) -> tuple[TrainingRoles | None, str | None]:
        if path not in cache:
            try:
                cache[path] = (read_training_roles(path), _weights_sha256(Path(path)))
            except ProjectError:
                cache[path] = (None, None)
        return cache[path]

    given = read_training_roles(model_dir) if model_dir is not None else None
    if given is not None:
        cache[str(model_dir)] = (given, _weights_sha256(given.model_dir))
    roles: dict[str, str] = {}
    models: dict[str, str | None] = {}
    changed, missing, other_model = [], [], []
    for entry_id, name in entries:
        path, sha = _report_model(_report_path(reports_dir, entry_id))
        use = str(model_dir) if model_dir is not None else path
        tr, current_sha = load(use) if use else (None, None)
        if tr is None:
            roles[entry_id], models[entry_id] = "unknown", None
            missing.append(name)
            continue
        if sha is not None and current_sha is not None and sha != current_sha:
            (other_model if model_dir is not None else changed).append(name)
        roles[entry_id] = tr.role(entry_id, name, same_project=_same_project(tr.project, project_dir))
        models[entry_id] = str(tr.model_dir)
    if missing:
        warnings.append(f"cannot tell whether {', '.join(missing)} trained the model (no prediction report naming "
                        "a readable model folder); they count as held out - pass --model MODEL_DIR to check")
    if changed:
        warnings.append(f"the model folder that predicted {', '.join(changed)} has other weights now (retrained "
                        "since?); their roles are read from its current model.json - predict again to be sure")
    if other_model:
        warnings.append(f"{', '.join(other_model)} were predicted with another model than --model {model_dir}; "
                        "their roles are those of --model")
    return SlideRoles(roles, models, warnings)
