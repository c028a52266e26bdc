"""The settings of a prediction, what it returns, and the progress callback it reports to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qupath_camseg.annotations import QPObject

__all__ = ["PredictOptions", "PredictResult", "Progress", "ProgressEvent", "no_progress"]

#: One progress event: a JSON-ready dict with ``"event"`` and (but for a global error) ``"image"``::
#:
#:     {"event": "start",    "image": str, "tiles": int, "resumed": bool}     tiles to compute now
#:     {"event": "progress", "image": str, "done": int, "total": int, "tiles_per_s": float}
#:     {"event": "note",     "image": str, "message": str}                     e.g. resampling
#:     {"event": "warning",  "image": str, "message": str}                     e.g. no tissue: nothing predicted
#:     {"event": "skip",     "image": str, "reason": str, "outputs": {name: path}}
#:     {"event": "done",     "image": str, "outputs": {"geojson": path, "heatmap": path, "report": path}}
#:     {"event": "error",    "image": str, "message": str}                     (projects: one image failed)
#:
#: ``progress`` events come at most twice a second and always for the last tile.
ProgressEvent = dict[str, Any]


class Progress(Protocol):
    """Receives the :data:`ProgressEvent` dicts of a prediction (called on the calling thread)."""

    def __call__(self, event: ProgressEvent) -> None: ...


def no_progress(event: ProgressEvent) -> None:
    """The :class:`Progress` that ignores every event (the default)."""


@dataclass(frozen=True)
class PredictOptions:
    """Settings of a prediction (the defaults suit Camelyon-style lymph-node slides).

    ``overlap`` is the tile overlap fraction; ``min_tissue`` the tissue fraction a tile needs to be
    computed (``min_tile_tissue`` for a measurement tile object); ``min_area_um2`` and
    ``min_hole_um2`` drop specks and fill pinholes (a hole under 100 µm², less than one cell, is map
    noise; a larger one is what the model saw, a lumen, necrosis or a normal island, and is kept, as
    QuPath's own Create objects keeps every hole by default); ``simplify_um`` is the outline tolerance.
    The tissue mask is computed at ``tissue_mask_mpp`` µm/px, coarser for slides whose mask would
    exceed ``tissue_mask_max_px`` pixels (so memory does not grow with the slide: a 15 mm slide
    gets a ≈ 15 µm/px mask, a Camelyon slide a ≈ 36 µm/px one). ``workers`` tile readers
    (``None``: 4 on a CPU, where the model is the bottleneck; half the CPU cores, at most 8, on a
    GPU) are threads or, with ``readers="processes"`` (``"auto"``: on CUDA), DataLoader worker
    processes; the choice changes speed, never the result. ``compile`` runs the network through
    :func:`~qupath_camseg.model.loaded.compile_model` (slow first batch, faster after).
    ``mask_to_tissue`` zeroes the probabilities off the tissue mask (dilated by one mask pixel):
    a network trained on tissue says nothing useful about glass, so the heatmap and regions follow
    the tissue. ``chunk_px`` (map px, a multiple of 16) and ``stripe_chunks`` shape the chunk
    store; ``tile_px`` overrides the model's inference tile (map px). ``stain_norm``: ``"model"``
    normalises the tiles' stains when the model was trained with stain normalisation (its
    reference is in ``model.json``), ``"none"`` never does (:mod:`qupath_camseg.predict.stain`).
    ``tissue`` says which tissue is analysed: ``"auto"`` (detected), ``"none"`` (the whole slide:
    every tile, nothing set to 0), or the path of the user's outline (GeoJSON, ASAP XML or mask
    image) or of a folder of them, one per slide (:mod:`qupath_camseg.predict.tissue_source`).
    ``suggest``: up to this many ``camseg Review`` boxes about ``suggest_um`` µm wide where the
    model is least sure (:mod:`~qupath_camseg.predict.suggestions`; 0: none).
    ``cascade``: ``"auto"``
    screens the slide first and runs the full model only near screened-positive tissue when the
    model folder has a calibrated screen (:mod:`qupath_camseg.predict.cascade`); ``"off"``: one
    full pass over all tissue.
    """

    threshold: float = 0.5
    overlap: float = 0.25
    batch_size: int = 16
    workers: int | None = None
    readers: str = "auto"
    compile: bool = False
    device: str = "auto"
    slide_mpp: float | None = None
    roi: str | None = None
    overwrite: bool = False
    min_tissue: float = 0.01
    min_tile_tissue: float = 0.05
    tissue_mask_mpp: float = 8.0
    tissue_mask_max_px: int = 1 << 20
    min_area_um2: float = 2000.0
    min_hole_um2: float = 100.0
    simplify_um: float | None = None
    chunk_px: int = 512
    stripe_chunks: int = 16
    tile_px: int | None = None
    mask_to_tissue: bool = True
    stain_norm: str = "model"
    tissue: str = "auto"
    suggest: int = 20
    suggest_um: float = 256.0
    cascade: str = "auto"


@dataclass
class PredictResult:
    """What :func:`~qupath_camseg.predict.slide.predict_slide` did: ``outputs`` maps
    ``geojson``/``heatmap``/``report`` to paths; ``report`` is the report's content; ``objects``
    the objects written (empty when skipped or read back from another process's report)."""

    image: str
    entry_id: str
    outputs: dict[str, Path]
    report: dict[str, Any]
    skipped: bool = False
    objects: list[QPObject] = field(default_factory=list)
