"""Which tissue a prediction analyses (``PredictOptions.tissue``, ``qcamseg predict --tissue``).

* ``"auto"``: detected (:func:`~qupath_camseg.wsi.tissue.detect_tissue`);
* ``"none"``: no tissue mask: every tile of the slide (or of the ROI) is computed and nothing is
  set to 0; no ``camseg Tissue`` annotation is written;
* a **file**: the user's own outline, a GeoJSON, ASAP XML or mask image
  (:func:`~qupath_camseg.wsi.tissue_file.read_tissue_file`);
* a **folder** of such files, one per slide: ``<entry ID>.<ext>``, ``<slide file stem>.<ext>``,
  ``<slide file name>.<ext>`` or HistoQC's ``<slide file name>/<slide file name>_mask_use.png``.

The choice is part of the chunk store's key (:func:`tissue_key`: the detector's version, or the
file's content hash), so a changed tissue source recomputes the probabilities.
:func:`tissue_annotation` is the ``camseg Tissue`` annotation that shows the analysed tissue in
QuPath (class :data:`~qupath_camseg.annotations.objects.TISSUE_CLASS`, locked, never trained on).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import CAMSEG_METADATA, TISSUE_CLASS, QPObject, polygonal_part
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.wsi import DETECTOR_VERSION, Slide, TissueMask, detect_tissue, read_tissue_file
from qupath_camseg.wsi.tissue_file import IMAGE_SUFFIXES, POLYGON_SUFFIXES

__all__ = ["TISSUE_COLOR", "TISSUE_MODES", "load_tissue", "resolve_tissue", "tissue_annotation", "tissue_key"]

TISSUE_MODES = ("auto", "none")
#: The ``camseg Tissue`` annotation's colour (a quiet blue-grey outline in QuPath).
TISSUE_COLOR = (96, 128, 160)


def resolve_tissue(tissue: str, slide_path: Path, *, entry_id: str | None = None) -> str:
    """``"auto"``, ``"none"`` or the tissue file of the slide at ``slide_path`` (a folder is
    searched, see the module docstring); :class:`InvalidSettingsError` if there is none."""
    if tissue in TISSUE_MODES:
        return tissue
    path = Path(tissue)
    if not path.exists():
        raise InvalidSettingsError(f"--tissue {tissue}: no such file or folder; pass auto, none, a GeoJSON, "
                                   "ASAP XML or mask image file, or a folder of them named after the slides")
    if path.is_file():
        return str(path)
    stems = [s for s in (entry_id, slide_path.stem, slide_path.name) if s]
    candidates = [path / f"{s}{ext}" for s in stems for ext in (*POLYGON_SUFFIXES, *IMAGE_SUFFIXES)]
    candidates.append(path / slide_path.name / f"{slide_path.name}_mask_use.png")  # HistoQC's output folder
    for c in candidates:
        if c.is_file():
            return str(c)
    raise InvalidSettingsError(f"--tissue folder {path} has no file for slide {slide_path.name} (looked for "
                               f"{', '.join(c.name for c in candidates[:3])}, ... and HistoQC's "
                               f"{slide_path.name}/{slide_path.name}_mask_use.png); add one, or use --tissue auto")


def tissue_key(tissue: str) -> dict[str, Any]:
    """What the probabilities depend on about the tissue (part of the chunk store's key):
    the detector's version, ``none``, or a file's content hash (a resolved file, not a folder)."""
    if tissue == "auto":
        return {"source": "auto", "detector": DETECTOR_VERSION}
    if tissue == "none":
        return {"source": "none"}
    path = Path(tissue)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise InvalidSettingsError(f"--tissue file {path} cannot be read ({err}); check the path") from err
    return {"source": "file", "path": str(path.resolve()), "sha256": digest}


def load_tissue(slide: Slide, tissue: str, mask_mpp: float) -> tuple[TissueMask, BaseGeometry | None]:
    """The tissue mask (at about ``mask_mpp`` µm/px) and, for a polygon file, its outline in level-0
    px; ``tissue`` is ``"auto"``, ``"none"`` (everything is tissue) or a file."""
    if tissue == "auto":
        return detect_tissue(slide, mask_mpp=mask_mpp), None
    w, h = (int(v) for v in slide.dimensions)
    downsample = mask_mpp / float(slide.mpp)
    if tissue == "none":
        mw, mh = max(1, round(w / downsample)), max(1, round(h / downsample))
        return TissueMask(np.ones((mh, mw), bool), w / mw), None
    return read_tissue_file(tissue, (w, h), mask_downsample=downsample)


def tissue_annotation(mask: TissueMask, outline: BaseGeometry | None, roi: BaseGeometry | None) -> QPObject | None:
    """The locked ``camseg Tissue`` annotation: ``outline`` (else the mask's traced outline), inside
    ``roi`` when given; None when nothing is left."""
    geom = outline if outline is not None else mask.to_polygons()
    if roi is not None:
        geom = geom.intersection(roi)
    geom = polygonal_part(geom)
    if geom is None:
        return None
    return QPObject(geom, object_type="annotation", classification=TISSUE_CLASS, color=TISSUE_COLOR,
                    name=TISSUE_CLASS, metadata=dict(CAMSEG_METADATA), locked=True)
