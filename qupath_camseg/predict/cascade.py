"""Cascade inference: a coarse screen of all tissue, then the full model only where it may matter.

Most of a Camelyon slide is normal tissue, and most slides hold no tumour at all. When the model
folder has a screening network (``screen.safetensors``, trained by ``qcamseg train`` at a coarse
pixel size, its threshold chosen on the validation slides for a tumour-pixel recall of at least
0.99), :func:`plan_cascade` runs it first over every tissue tile (:func:`run_screen`, stored in
``probability/<id>/screen/``, resumable like the main map), marks the screened-positive pixels
(foreground probability at or above the threshold), grows them by the full model's context (its
receptive-field radius, :func:`context_px`) and keeps only the full-model tiles that touch the
grown area (:func:`examined_tiles`). The full model then runs on those tiles alone; every other
pixel of the map takes the screen's calibrated probability (:meth:`Cascade.fill`, and
:meth:`Cascade.write_screen_only` for chunks no examined tile touches), so the outputs (GeoJSON,
heatmap, report) are the same kind as a single pass.

The guarantee is the screen's: on the validation slides it kept ``recall`` of the tumour pixels
(≥ 0.99 as chosen), measured at its own pixel size before growing by the context; tumour it misses
by more than the context (tiny deposits below its pixel size, slides unlike the validation
ones) is judged by the screen alone. ``--cascade off`` runs the single pass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from shapely.geometry.base import BaseGeometry

from qupath_camseg.model import LoadedModel, ScreenModel
from qupath_camseg.predict.blending import _mask_roi, _mask_tissue
from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.predict.inference import InferenceStats, run_inference
from qupath_camseg.predict.options import PredictOptions
from qupath_camseg.predict.roi import active_tiles
from qupath_camseg.wsi import TissueFractions, TissueMask

__all__ = ["Cascade", "ScreenPass", "cascade_key", "context_px", "examined_tiles", "plan_cascade", "run_screen"]


def context_px(lm: LoadedModel) -> int:
    """The full model's context in map px: the receptive-field radius of the U-Net (two 3×3
    convolutions per level on the way down and up, max-pooling between), a quarter tile for
    other networks, and never less than the tile overlap margin."""
    arch = lm.config.arch
    if arch.get("name") == "unet":
        d = int(arch["depth"])
        radius = 2 + 2 * (2 ** (d + 1) - 2) + 2 * (2**d - 1) + 2 ** (d - 1)
    else:
        radius = lm.config.tile_px // 4
    return int(radius)


def cascade_key(screen: ScreenModel, context: int) -> dict[str, Any]:
    """What a cascade map depends on besides the single pass's key (part of the store key)."""
    return {"screen": screen.model.sha256, "threshold": screen.threshold, "context_px": context,
            "lut": _lut_bytes(screen).tobytes().hex()}


def _lut_bytes(screen: ScreenModel) -> npt.NDArray[np.uint8]:
    """Stored screen byte → calibrated probability byte (identity without a calibration table)."""
    lut = screen.section.get("probability_lut")
    if not isinstance(lut, list) or len(lut) != 256:
        return np.arange(256, dtype=np.uint8)
    return np.clip(np.round(np.asarray(lut, np.float64) * 255), 0, 255).astype(np.uint8)


@dataclass
class ScreenPass:
    """The screen's map of one slide: its ``store`` and ``plan`` (at the screen's pixel size), the
    tiles it computed (``active``), its inference stats and the seconds it took."""

    store: ChunkStore
    plan: TilePlan
    active: npt.NDArray[np.bool_]
    stats: InferenceStats
    seconds: float


def run_screen(slide_path: Path, dims: tuple[int, int], slide_mpp: float, screen: ScreenModel,
               fractions: TissueFractions, mask: TissueMask | None, roi: BaseGeometry | None, folder: Path,
               opts: PredictOptions, *, image: str = "") -> ScreenPass:
    """Screen every tissue tile (``fractions``: tissue fraction of level-0 boxes) of the slide
    (``dims`` level-0 px at ``slide_mpp`` µm/px) into the chunk store ``folder`` (resumed when its
    key matches; probabilities zeroed off ``mask`` when given, as the full pass does)."""
    t0 = time.perf_counter()
    cfg = screen.model.config
    plan = TilePlan.create(dims, slide_mpp, cfg.mpp, tile_px=cfg.tile_px, overlap=opts.overlap,
                           chunk_px=opts.chunk_px, stripe_chunks=opts.stripe_chunks)
    active = active_tiles(plan, fractions, roi, opts.min_tissue)
    stat = slide_path.stat()
    key = {"screen": screen.model.sha256, "slide": [str(slide_path.resolve()), stat.st_size, int(stat.st_mtime)],
           "slide_mpp": slide_mpp, "roi": roi.wkb_hex if roi is not None else None, "min_tissue": opts.min_tissue,
           "tissue_mask_mpp": opts.tissue_mask_mpp, "tissue_mask_max_px": opts.tissue_mask_max_px}
    store = ChunkStore(folder, plan, len(cfg.classes), key, overwrite=opts.overwrite)
    workers = opts.workers or 4
    stats = run_inference(slide_path, opts.slide_mpp, plan, active, store, screen.model, roi,
                          batch_size=max(opts.batch_size, 16), workers=workers, image=image, readers=opts.readers,
                          tissue=mask)
    return ScreenPass(store, plan, active, stats, time.perf_counter() - t0)


def examined_tiles(screen: ScreenPass, plan: TilePlan, active: npt.NDArray[np.bool_], threshold_q: int,
                   context: int) -> npt.NDArray[np.bool_]:
    """``bool (ny, nx)``: the tiles of ``active`` (the full model's plan) that touch a screened
    pixel whose foreground probability byte is at least ``threshold_q``, grown by ``context``
    full-map px. Memory: the tile grid, never the screen's whole map."""
    ny, nx = plan.grid_shape
    diff = np.zeros((ny + 1) * (nx + 1), np.int64)
    r = screen.plan.ds / plan.ds  # full-map px per screen px
    t, s, off = plan.tile_px, plan.stride_px, plan.offset_px

    def first_last(lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64], n: int) -> tuple[Any, Any]:
        """Tiles ``[a, b)`` whose span ``[k·s − off, k·s − off + t)`` meets ``[lo, hi)``."""
        a = np.clip(np.floor((lo + off - t) / s).astype(np.int64) + 1, 0, n)
        b = np.clip(np.ceil((hi + off) / s).astype(np.int64), 0, n)
        return a, np.maximum(a, b)

    w1 = nx + 1
    for row, col, data in screen.store.iter_chunks():
        fg = _foreground(data) >= threshold_q
        if not fg.any():
            continue
        cx, cy, w, h = screen.plan.chunk_box(row, col)
        ys, xs = cy + np.arange(h, dtype=np.float64), cx + np.arange(w, dtype=np.float64)
        ya, yb = first_last(ys * r - context, (ys + 1) * r + context, ny)  # per screen row
        xa, xb = first_last(xs * r - context, (xs + 1) * r + context, nx)  # per screen column
        ii, jj = np.nonzero(fg)
        rects = np.unique(np.column_stack([ya[ii], yb[ii], xa[jj], xb[jj]]), axis=0)
        rects = rects[(rects[:, 0] < rects[:, 1]) & (rects[:, 2] < rects[:, 3])]
        for (a, b), sign in (((0, 2), 1), ((0, 3), -1), ((1, 2), -1), ((1, 3), 1)):
            diff += sign * np.bincount(rects[:, a] * w1 + rects[:, b], minlength=len(diff))
    marked = np.cumsum(np.cumsum(diff.reshape(ny + 1, nx + 1), axis=0), axis=1)[:ny, :nx] > 0
    return marked & active


def _foreground(data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The foreground probability byte of a chunk ``(n, h, w)``: the class's own, or the sum of all."""
    if data.shape[0] == 1:
        return data[0]
    return np.minimum(data.sum(axis=0, dtype=np.int32), 255).astype(np.uint8)


@dataclass
class Cascade:
    """One slide's cascade: the screen pass, the full-model tiles to compute (``active``, a subset
    of the single pass's ``single``), the full model's ``plan`` and the screen's byte LUT."""

    screen: ScreenPass
    plan: TilePlan
    single: npt.NDArray[np.bool_]
    active: npt.NDArray[np.bool_]
    lut: npt.NDArray[np.uint8]
    threshold: float
    context: int
    screen_mpp: float

    def screen_chunk(self, row: int, col: int) -> npt.NDArray[np.uint8]:
        """Full-map chunk ``(row, col)`` filled from the screen (nearest screen pixel of each map
        pixel's centre), calibrated: ``uint8 (n, h, w)``."""
        x, y, w, h = self.plan.chunk_box(row, col)
        f = self.plan.ds / self.screen.plan.ds  # screen px per full-map px
        cols = np.floor((x + np.arange(w) + 0.5) * f).astype(np.int64)
        rows = np.floor((y + np.arange(h) + 0.5) * f).astype(np.int64)
        box = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        out = np.zeros((self.screen.store.n_channels, h, w), np.uint8)
        for k in range(self.screen.store.n_channels):
            region = self.screen.store.read_region(box, channel=k)
            rr = np.minimum(rows - box[1], region.shape[0] - 1)
            cc = np.minimum(cols - box[0], region.shape[1] - 1)
            if region.size:
                out[k] = self.lut[region[rr[:, None], cc[None, :]]]
        return out

    def covered(self, row: int, col: int) -> npt.NDArray[np.bool_]:
        """``bool (h, w)``: pixels of full-map chunk ``(row, col)`` inside at least one computed tile."""
        x, y, w, h = self.plan.chunk_box(row, col)
        out = np.zeros((h, w), bool)
        t, (ny, nx) = self.plan.tile_px, self.active.shape
        rows, cols = self.plan.tiles_overlapping(y, y + h), self.plan.tiles_overlapping(x, x + w)
        for ty in range(rows.start, min(rows.stop, ny)):  # (the ranges may run past the grid)
            for tx in range(cols.start, min(cols.stop, nx)):
                if self.active[ty, tx]:
                    oy, ox = self.plan.tile_origin(ty) - y, self.plan.tile_origin(tx) - x
                    out[max(0, oy):max(0, oy + t), max(0, ox):max(0, ox + t)] = True
        return out

    def fill(self, row: int, col: int, data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """A chunk the full model computed in part: its pixels outside every computed tile take
        the screen's calibrated probability (the band writer calls this before the ROI mask)."""
        cov = self.covered(row, col)
        if cov.all():
            return data
        return np.where(cov[None], data, self.screen_chunk(row, col))

    def write_screen_only(self, store: ChunkStore, roi: BaseGeometry | None, tissue: TissueMask | None,
                          on_chunk: Any = None) -> int:
        """Write the chunks the single pass would compute but no examined tile touches, from the
        screen alone (ROI and tissue masks applied as the band writer does); returns how many."""
        todo = self.plan.needed_chunks(self.single) & ~self.plan.needed_chunks(self.active)
        n = 0
        for r, c in np.argwhere(todo):
            if store.has(r, c):
                continue
            data = self.screen_chunk(int(r), int(c))
            box = self.plan.chunk_box(int(r), int(c))
            if roi is not None:
                data = _mask_roi(data, roi, box, self.plan.ds)
            if tissue is not None:
                data = _mask_tissue(data, tissue, box, self.plan.ds)
            store.write(int(r), int(c), np.ascontiguousarray(data))
            n += 1
            if on_chunk is not None:
                on_chunk(int(r), int(c))
        return n

    def report(self, tissue: TissueMask, seconds_full: float) -> dict[str, Any]:
        """The report's ``cascade`` section: what was screened, what the full model examined."""
        return {"on": True, "screen_mpp": self.screen_mpp, "threshold": self.threshold, "context_px": self.context,
                "tiles_screen": int(self.screen.active.sum()), "tiles_full": int(self.active.sum()),
                "tiles_single_pass": int(self.single.sum()),
                "tissue_examined_fraction": self.examined_fraction(tissue),
                "timings_s": {"screen": self.screen.seconds, "full": seconds_full}}

    def examined_fraction(self, tissue: TissueMask) -> float:
        """Share of the tissue mask's pixels inside at least one computed full-model tile."""
        mask, md = tissue.mask, float(tissue.downsample)
        covered = np.zeros_like(mask)
        size = self.plan.tile_px * self.plan.ds / md
        for ty, tx in np.argwhere(self.active):
            y0 = self.plan.tile_origin(int(ty)) * self.plan.ds / md
            x0 = self.plan.tile_origin(int(tx)) * self.plan.ds / md
            covered[max(0, math.floor(y0)):max(0, math.ceil(y0 + size)),
                    max(0, math.floor(x0)):max(0, math.ceil(x0 + size))] = True
        total = int(mask.sum())
        return float((covered & mask).sum()) / total if total else 0.0


def plan_cascade(slide_path: Path, dims: tuple[int, int], slide_mpp: float, lm: LoadedModel, screen: ScreenModel,
                 plan: TilePlan, single: npt.NDArray[np.bool_], fractions: TissueFractions, mask: TissueMask | None,
                 roi: BaseGeometry | None, folder: Path, opts: PredictOptions, *, image: str = "") -> Cascade:
    """Screen the slide, then choose the full model's tiles (see the module docstring)."""
    sp = run_screen(slide_path, dims, slide_mpp, screen, fractions, mask, roi, folder, opts, image=image)
    ctx = context_px(lm)
    threshold = float(screen.threshold if screen.threshold is not None else 0.0)
    active = examined_tiles(sp, plan, single, math.ceil(threshold * 255 - 1e-9), ctx)
    return Cascade(sp, plan, single, active, _lut_bytes(screen), threshold, ctx, screen.model.config.mpp)
