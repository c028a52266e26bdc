"""Stain normalisation of one slide at predict time (no torch).

A model trained with ``qcamseg train --stain-norm macenko`` carries a stain reference in its
``model.json``. Before inference, :func:`slide_stain` estimates the slide's own stains once, from
a sample of its tissue tiles read at the model's pixel size, and returns the
:class:`~qupath_camseg.wsi.stain.StainTransform` the tile readers apply to every tile (threads
and reader processes alike). ``--stain-norm none`` (``PredictOptions.stain_norm``) switches it off;
a slide whose stains cannot be estimated (too little stained tissue) is read unchanged, with a note.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.predict.chunks import TilePlan
from qupath_camseg.predict.options import Progress, no_progress
from qupath_camseg.wsi import (
    SAMPLE_MIN_TISSUE,
    SAMPLE_TILES,
    Slide,
    StainReference,
    StainTransform,
    TissueFractions,
    estimate_stains,
    pick_boxes,
)

__all__ = ["STAIN_NORM_CHOICES", "SlideStain", "check_stain_norm", "slide_stain"]

#: ``qcamseg predict --stain-norm``: follow the model (normalise when it was trained so), or never.
STAIN_NORM_CHOICES = ("model", "none")


@dataclass
class SlideStain:
    """The tile transform of one slide (``None``: tiles pass unchanged) and what the report says
    about it (``info``: method, the slide's estimated stains, fallback, tiles read, seconds)."""

    transform: StainTransform | None
    info: dict[str, Any] = field(default_factory=dict)


def check_stain_norm(value: str) -> str:
    """``value`` if it is a ``--stain-norm`` choice, else :class:`InvalidSettingsError`."""
    if value not in STAIN_NORM_CHOICES:
        raise InvalidSettingsError(f"--stain-norm must be {' or '.join(STAIN_NORM_CHOICES)}, not {value!r}")
    return value


def slide_stain(slide: Slide, plan: TilePlan, active: npt.NDArray[np.bool_], fractions: TissueFractions,
                reference: StainReference | None, model_mpp: float, stain_norm: str, *,
                emit: Progress = no_progress, image: str = "", max_tiles: int = SAMPLE_TILES) -> SlideStain:
    """The stain transform of ``slide`` onto the model's ``reference`` (``None``: the model has none),
    read at ``model_mpp`` µm/px from up to ``max_tiles`` of the
    ``active`` tiles (``bool (ny, nx)`` of ``plan``) evenly spread over those with at least
    :data:`~qupath_camseg.wsi.stain.SAMPLE_MIN_TISSUE` tissue (all active tiles when none has)."""
    if reference is None or check_stain_norm(stain_norm) == "none":
        why = "off (--stain-norm none)" if reference is not None else "the model has no stain reference"
        return SlideStain(None, {"method": "none", "why": why})
    t0 = time.perf_counter()
    boxes = plan.tile_boxes_level0()[active]
    full = boxes[fractions(boxes) >= SAMPLE_MIN_TISSUE] if len(boxes) else boxes
    chosen = pick_boxes(list(full if len(full) else boxes), max_tiles=max_tiles)
    size = (plan.tile_px, plan.tile_px)
    tiles = [slide.read_region_mpp(tuple(float(v) for v in b), model_mpp, out_size=size) for b in chosen]
    found = estimate_stains(np.stack(tiles)) if tiles else None
    info: dict[str, Any] = {"method": reference.method, "reference": reference.to_json(), "tiles": len(tiles)}
    if found is None:
        emit({"event": "note", "image": image, "message": "too little stained tissue to estimate this slide's "
              "stains: its tiles are not stain-normalised"})
        info.update(fallback=True, seconds=time.perf_counter() - t0)
        return SlideStain(None, info)
    transform = StainTransform.between(found, reference)
    info.update(fallback=False, slide=found.to_json(), matrix=transform.to_json(), seconds=time.perf_counter() - t0)
    return SlideStain(transform, info)
