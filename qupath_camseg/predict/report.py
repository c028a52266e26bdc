"""The keys that tell whether a slide's finished outputs still match the settings, and reading
the report (``reports/<id>.json``: written last, atomically, so its presence means the image is
finished)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from qupath_camseg.errors import ImagesFailedError
from qupath_camseg.model import LoadedModel
from qupath_camseg.predict.chunks import TilePlan
from qupath_camseg.predict.options import PredictOptions
from qupath_camseg.predict.tissue_source import tissue_key

__all__ = ["finished_report", "read_report", "settings_key", "store_key"]

#: Settings that change only the post-processing of the stored probabilities (not the store).
_POST_SETTINGS = ("threshold", "min_tile_tissue", "min_area_um2", "min_hole_um2", "simplify_um", "suggest",
                  "suggest_um")


def store_key(lm: LoadedModel, slide_path: Path, slide_mpp: float, roi: BaseGeometry | None,
              opts: PredictOptions) -> dict[str, Any]:
    """Everything the stored probabilities depend on (the chunk store's key): the model's
    weights and calibration, the slide file (path, size, mtime) and pixel size (µm/px), the ROI
    and the tissue settings and source (the detector's version, or the user's file by content),
    and the stain reference when tiles are stain-normalised. A store with another key is cleared;
    one with this key is resumed."""
    stat = slide_path.stat()
    stain = {"stain": lm.config.stain} if lm.config.stain is not None and opts.stain_norm != "none" else {}
    key = {**stain, "model": lm.sha256, "slide": [str(slide_path.resolve()), stat.st_size, int(stat.st_mtime)],
           "slide_mpp": slide_mpp, "roi": roi.wkb_hex if roi is not None else None,
           "min_tissue": opts.min_tissue, "tissue_mask_mpp": opts.tissue_mask_mpp,
           "tissue_mask_max_px": opts.tissue_mask_max_px, "mask_to_tissue": opts.mask_to_tissue,
           "tissue": tissue_key(opts.tissue)}
    cal = lm.config.calibration
    if cal is not None:  # the stored probabilities are calibrated ones (no key: as before calibration existed)
        key["calibration"] = [cal.temperature, list(cal.logit_bias)]
    return key


def settings_key(store: dict[str, Any], opts: PredictOptions, plan: TilePlan,
                 reviewed: BaseGeometry | None = None) -> str:
    """A 16-hex-digit hash of everything the outputs depend on: the ``store`` key, the
    post-processing settings and the plan, and with suggestions the ground already annotated
    (``reviewed``, level-0 px: new outlines move the review boxes, so the image is not skipped;
    its stored probabilities are reused). Recorded in the report; equal keys: skip the image."""
    post = {**store, **{k: getattr(opts, k) for k in _POST_SETTINGS}}
    data: list[Any] = [store, post, plan.to_dict()]
    if opts.suggest and reviewed is not None and not reviewed.is_empty:
        data.append(hashlib.sha256(shapely.normalize(reviewed).wkb).hexdigest())
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_report(path: Path, key: str) -> dict[str, Any] | None:
    """The report at ``path`` if it records a finished prediction with settings key ``key``
    (``None``: missing, unreadable, unfinished or made with other settings)."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        old = {}
    if not isinstance(old, dict):
        return None
    return old if old.get("status") == "done" and old.get("settings_key") == key else None


def read_report(path: Path) -> dict[str, Any]:
    """The report another process wrote at ``path`` (one line :class:`ImagesFailedError` if unreadable)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
        return report
    except (OSError, ValueError, RecursionError) as err:
        raise ImagesFailedError(f"cannot read the report {path} another process wrote ({err}); "
                          "check the shared file system, then run again") from err
