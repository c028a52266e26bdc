"""Choosing the screen's threshold on the validation slides (issue 18).

:func:`calibrate_screen` runs the screen over each validation slide exactly as a cascade
prediction does (:func:`~qupath_camseg.predict.cascade.run_screen`: tissue tiles, blending,
tissue mask), paints the slide's annotations at the screen's pixel size chunk by chunk, and counts
the stored foreground-probability bytes (0–255) of the tumour pixels and of all tissue pixels
(``Ignore*`` regions left out) in two histograms, so memory does not grow with the slides.
:func:`choose_threshold` then takes the highest byte that keeps at least ``target_recall`` of the
tumour pixels, and reports the recall reached, the share of tissue the screen keeps, and a
calibration table (``probability_lut``: the tumour share of the tissue pixels at each byte, made
monotone by isotonic regression) that turns the screen's output into a probability for the parts
of the map the full model never looks at; given the full model's context, the table is fitted on
exactly such pixels (farther than the context from every screened-positive pixel).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import rasterize
from qupath_camseg.model import ScreenModel
from qupath_camseg.predict.blending import _mask_tissue
from qupath_camseg.predict.cascade import _foreground, run_screen
from qupath_camseg.predict.options import PredictOptions
from qupath_camseg.wsi import TissueFractions, TissueMask, detect_tissue, open_slide

__all__ = ["CalibrationSlide", "calibrate_screen", "choose_threshold"]


@dataclass
class CalibrationSlide:
    """A validation slide and its truth: level-0 ``shapes`` labelled 1… (target classes) or 255
    (left out), ``fill`` the label of unannotated pixels (0: normal, 255: left out), ``slide_mpp``
    an override of the slide's pixel size (µm/px) or ``None``."""

    name: str
    path: Path
    slide_mpp: float | None
    shapes: list[tuple[BaseGeometry, int]]
    fill: int = 0


def calibrate_screen(screen: ScreenModel, slides: Sequence[CalibrationSlide], *, target_recall: float = 0.99,
                     options: PredictOptions | None = None, work_dir: Path | None = None,
                     note: Callable[[str], None] | None = None, context_um: float = 0.0) -> dict[str, Any]:
    """The screen's ``model.json`` calibration fields (see :func:`choose_threshold`), with
    ``calibrated_on`` (the slides' names). Screen maps go to ``work_dir`` (default: a temporary
    folder, deleted after).

    ``context_um`` (µm; the full model's context, :func:`~qupath_camseg.predict.cascade.context_px`
    times its µm/px): when > 0 and a threshold was found, the calibration table is fitted on the
    pixels a cascade leaves to the screen, those farther than ``context_um`` from every screened-
    positive pixel (``lut_population: "beyond_context"``): their tumour share is what the filled
    map should say, and it is far lower than that of all low-scoring pixels, many of which border
    a tumour. Otherwise (or when no such tissue exists) on every tissue pixel (``"all_tissue"``)."""
    opts = options or PredictOptions(overwrite=True)
    reach = math.ceil(context_um / screen.model.config.mpp) if context_um > 0 else 0
    hist_t = np.zeros((256, 256), np.int64)  # [screen byte, highest byte within reach] of tumour pixels
    hist_v = np.zeros((256, 256), np.int64)  # ... of all tissue pixels
    with tempfile.TemporaryDirectory(prefix="qcamseg-calib-") as tmp:
        base = Path(work_dir) if work_dir is not None else Path(tmp)
        for i, s in enumerate(slides):
            if note is not None:
                note(f"calibrating the screen on {s.name} ({i + 1}/{len(slides)})")
            sp, grown = _screen_slide(screen, s, base / f"{i:04d}", opts)
            t, v = _histograms(sp, grown, s, reach)
            hist_t += t
            hist_v += v
    out = {**choose_threshold(hist_t.sum(axis=1), hist_v.sum(axis=1), target_recall), "lut_population": "all_tissue"}
    if reach > 0 and out["threshold"] is not None:
        b = round(out["threshold"] * 255)  # beyond the context of every pixel >= b: the highest byte near it is < b
        far_t, far_v = hist_t[:, :b].sum(axis=1), hist_v[:, :b].sum(axis=1)
        if far_v.sum() > 0:
            out.update(probability_lut=_isotonic_lut(far_t.astype(np.float64), far_v.astype(np.float64)),
                       lut_population="beyond_context", context_um=round(float(context_um), 3))
    return {**out, "calibrated_on": [s.name for s in slides]}


def _screen_slide(screen: ScreenModel, s: CalibrationSlide, folder: Path, opts: PredictOptions) -> tuple[Any, TissueMask]:
    """Run the screen over one slide as a cascade would: ``(ScreenPass, tissue mask grown by one pixel)``."""
    with open_slide(s.path, mpp=s.slide_mpp) as slide:
        slide_mpp = float(slide.mpp)
        dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
        mask_mpp = max(opts.tissue_mask_mpp, slide_mpp * math.sqrt(dims[0] * dims[1] / opts.tissue_mask_max_px))
        tissue = detect_tissue(slide, mask_mpp=mask_mpp)
    grown = TissueMask(ndimage.binary_dilation(tissue.mask, np.ones((3, 3), bool)), tissue.downsample)
    sp = run_screen(s.path, dims, slide_mpp, screen, TissueFractions(tissue), grown, None, folder,
                    dataclasses.replace(opts, slide_mpp=s.slide_mpp), image=s.name)
    return sp, grown


def _histograms(sp: Any, grown: TissueMask, s: CalibrationSlide,
                reach: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Joint histograms ``(256, 256)`` over the tumour and the tissue pixels of one slide's screen
    map: ``[screen byte, highest screen byte within reach px]`` (a square, as the cascade grows; 0
    with ``reach`` 0), so that for any threshold the pixels beyond the cascade's reach are a slice.
    One chunk at a time (with a ``reach`` halo): memory flat in slide size."""
    hist_t = np.zeros(256 * 256, np.int64)
    hist_v = np.zeros(256 * 256, np.int64)
    ds = sp.plan.ds
    for row, col, data in sp.store.iter_chunks():
        x, y, w, h = sp.plan.chunk_box(row, col)
        q = _foreground(data).astype(np.int64)
        on_tissue = _mask_tissue(np.ones((1, h, w), np.uint8), grown, (x, y, w, h), ds)[0] > 0
        labels = rasterize(s.shapes, (x * ds, y * ds, w * ds, h * ds), (w, h), fill=s.fill)
        valid = on_tissue & (labels != 255)
        pair = q * 256 + (_highest_near(sp.store, (x, y, w, h), reach) if reach > 0 else 0)
        hist_t += np.bincount(pair[valid & (labels >= 1)], minlength=256 * 256)
        hist_v += np.bincount(pair[valid], minlength=256 * 256)
    return hist_t.reshape(256, 256), hist_v.reshape(256, 256)


def _highest_near(store: Any, box: tuple[int, int, int, int], reach: int) -> npt.NDArray[np.int64]:
    """``int64 (h, w)`` for the map-px ``box``: the highest foreground byte within ``reach`` px
    (Chebyshev) of each pixel (read with a halo of ``reach`` px; 0 beyond the map)."""
    x, y, w, h = box
    x0, y0 = max(0, x - reach), max(0, y - reach)
    halo = (x0, y0, x + w + reach - x0, y + h + reach - y0)
    fg = _foreground(np.stack([store.read_region(halo, channel=k) for k in range(store.n_channels)]))
    high = ndimage.maximum_filter(fg, size=2 * reach + 1, mode="constant", cval=0)
    return high[y - y0:y - y0 + h, x - x0:x - x0 + w].astype(np.int64)


def choose_threshold(hist_tumour: npt.NDArray[np.int64], hist_tissue: npt.NDArray[np.int64],
                     target_recall: float = 0.99) -> dict[str, Any]:
    """The highest byte ``b`` (threshold ``b / 255``) whose tumour pixels at or above it are at
    least ``target_recall`` of all; with ``recall``, ``kept_tissue_fraction`` (tissue pixels at or
    above ``b``), the pixel counts and ``probability_lut``. No tumour pixels: ``threshold`` and
    ``recall`` are ``None`` (the screen cannot be trusted to rule anything out)."""
    t = np.asarray(hist_tumour, np.float64)
    v = np.asarray(hist_tissue, np.float64)
    n_t, n_v = float(t.sum()), float(v.sum())
    out: dict[str, Any] = {"target_recall": target_recall, "tumour_px": int(n_t), "tissue_px": int(n_v),
                           "probability_lut": _isotonic_lut(t, v)}
    if n_t == 0:
        return {**out, "threshold": None, "recall": None, "kept_tissue_fraction": None}
    above = np.cumsum(t[::-1])[::-1]  # tumour px at or above each byte
    b = int(np.flatnonzero(above >= target_recall * n_t).max())
    kept = float(np.cumsum(v[::-1])[::-1][b]) / n_v if n_v else 1.0
    return {**out, "threshold": round(b / 255, 6), "recall": round(float(above[b]) / n_t, 6),
            "kept_tissue_fraction": round(kept, 6)}


def _isotonic_lut(tumour: npt.NDArray[np.float64], tissue: npt.NDArray[np.float64]) -> list[float]:
    """P(tumour | byte) for bytes 0–255, non-decreasing (pool-adjacent-violators, weighted by the
    tissue pixels; bytes never seen take their neighbour's value), rounded to 4 decimals."""
    seen = np.flatnonzero(tissue > 0)
    if len(seen) == 0:
        return [round(i / 255, 4) for i in range(256)]
    blocks: list[list[float]] = []  # [weighted sum, weight, first byte]
    for i in seen:
        blocks.append([float(tumour[i]), float(tissue[i]), float(i)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, w, _ = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w
    starts = np.array([b[2] for b in blocks])
    values = np.array([min(1.0, b[0] / b[1]) for b in blocks])
    idx = np.clip(np.searchsorted(starts, np.arange(256), side="right") - 1, 0, len(blocks) - 1)
    return [round(float(x), 4) for x in values[idx]]
