"""Figures (matplotlib, Agg, no pyplot state): the slide-vs-prediction "seed" figure, the FROC
curve, the training curve and the reliability diagram. Every function returns a :class:`matplotlib.figure.Figure`;
:func:`save_figure` writes it atomically as PNG.

Colours: ground truth is **blue** outlines, predictions **red** (filled, semi-transparent), the
probability heatmap yellow → red (``YlOrRd``) over a grey copy of the slide.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath

from qupath_camseg._io import atomic_write_bytes
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.evaluate.calibration import ReliabilityBins

__all__ = [
    "PREDICTION_COLOR",
    "TRUTH_COLOR",
    "froc_figure",
    "read_history",
    "reliability_figure",
    "save_figure",
    "seed_figure",
    "training_curve_figure",
]

TRUTH_COLOR = "#1f5bff"
PREDICTION_COLOR = "#e8112d"
_HEAT_CMAP = "YlOrRd"
_SCALEBAR_UM = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def _rings(geom: Any) -> list[npt.NDArray[np.float64]]:
    """Exterior and interior rings (level-0 px) of a (Multi)Polygon / GeometryCollection."""
    if geom is None or geom.is_empty:
        return []
    if hasattr(geom, "geoms"):
        return [r for g in geom.geoms for r in _rings(g)]
    if geom.geom_type != "Polygon":
        return []
    return [np.asarray(geom.exterior.coords)] + [np.asarray(i.coords) for i in geom.interiors]


def _polygons(geom: Any) -> list[Any]:
    if geom is None or geom.is_empty:
        return []
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return [geom] if geom.geom_type == "Polygon" else []


def _draw_outlines(ax: Any, geoms: Sequence[Any], *, color: str, lw: float, ls: str = "-") -> None:
    for g in geoms:
        for ring in _rings(g):
            ax.plot(ring[:, 0], ring[:, 1], color=color, lw=lw, ls=ls, solid_joinstyle="round")


def _fill_polygons(ax: Any, geoms: Sequence[Any], *, color: str, fill: bool = True) -> None:
    for g in geoms:
        for poly in _polygons(g):
            rings = [np.asarray(poly.exterior.coords)] + [np.asarray(i.coords) for i in poly.interiors]
            path = MplPath.make_compound_path(*[MplPath(r, closed=True) for r in rings])
            if fill:
                ax.add_patch(PathPatch(path, facecolor=color, alpha=0.4, edgecolor=color, lw=1.2))
            else:  # over a heatmap: outline only, so the probabilities stay visible
                ax.add_patch(PathPatch(path, facecolor="none", edgecolor=color, lw=1.4))


def _scalebar(ax: Any, box_px: Sequence[float], mpp: float) -> None:
    x0, y0, w, h = box_px
    target_um = w * mpp / 5
    length_um = max([v for v in _SCALEBAR_UM if v <= target_um] or [_SCALEBAR_UM[0]])
    length_px = length_um / mpp
    bx, by = x0 + 0.04 * w, y0 + 0.95 * h
    ax.plot([bx, bx + length_px], [by, by], color="black", lw=4, solid_capstyle="butt")
    label = f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um} µm"
    ax.text(bx + length_px / 2, by - 0.015 * h, label, ha="center", va="bottom", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})


def _setup_ax(ax: Any, box_px: Sequence[float]) -> None:
    x0, y0, w, h = box_px
    ax.set_xlim(x0, x0 + w)
    ax.set_ylim(y0 + h, y0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def seed_figure(
    image_rgb: npt.NDArray[np.uint8],
    *,
    box_px: Sequence[float],
    truth: Sequence[Any] = (),
    prediction: Sequence[Any] = (),
    probability: npt.NDArray[Any] | None = None,
    probability_box_px: Sequence[float] | None = None,
    mpp: float | None = None,
    title: str = "",
    figsize_in: tuple[float, float] = (12.0, 6.0),
) -> Figure:
    """Slide with ground truth (left) next to the prediction (right).

    ``image_rgb``: ``(h, w, 3)`` uint8 showing level-0 ``box_px = (x, y, width, height)``;
    ``truth`` / ``prediction``: shapely polygons in level-0 px (blue outlines / red fills);
    ``probability``: optional ``(H, W)`` map (float 0–1 or uint8 0–255) covering
    ``probability_box_px`` (default ``box_px``), drawn yellow → red with a colourbar;
    ``mpp``: level-0 µm/px, for a scale bar. Ground truth is also dashed on the right panel.
    """
    fig = Figure(figsize=figsize_in, dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    x0, y0, w, h = (float(v) for v in box_px)
    extent = (x0, x0 + w, y0 + h, y0)
    left.imshow(image_rgb, extent=extent, interpolation="antialiased")
    _draw_outlines(left, truth, color=TRUTH_COLOR, lw=1.6)
    left.set_title(f"Ground truth ({len(truth)} region{'s' if len(truth) != 1 else ''})", fontsize=11)

    grey = np.asarray(image_rgb, np.float32).mean(axis=2)
    right.imshow(grey, extent=extent, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    if probability is not None:
        p = np.asarray(probability)
        p = p.astype(np.float32) / 255.0 if p.dtype == np.uint8 else np.clip(p.astype(np.float32), 0, 1)
        cmap = colormaps[_HEAT_CMAP]
        rgba = cmap(p)
        rgba[..., 3] = np.clip(p * 1.6, 0.0, 0.85)  # faint where unlikely, so the tissue shows
        px0, py0, pw, ph = (float(v) for v in (probability_box_px or box_px))
        right.imshow(rgba, extent=(px0, px0 + pw, py0 + ph, py0), interpolation="nearest")
        sm = ScalarMappable(norm=Normalize(0, 1), cmap=cmap)
        fig.colorbar(sm, ax=right, fraction=0.046, pad=0.02, label="tumour probability")
    _fill_polygons(right, prediction, color=PREDICTION_COLOR, fill=probability is None)
    _draw_outlines(right, truth, color=TRUTH_COLOR, lw=1.0, ls="--")
    what = "Probability" if probability is not None else "Prediction"
    right.set_title(f"{what} (red) vs ground truth (blue, dashed)", fontsize=11)
    for ax in (left, right):
        _setup_ax(ax, (x0, y0, w, h))
        if mpp:
            _scalebar(ax, (x0, y0, w, h), mpp)
    if title:
        fig.suptitle(title, fontsize=13)
    return fig


def froc_figure(
    fps_per_slide: Sequence[float],
    sensitivity: Sequence[float],
    *,
    fp_rates: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    sensitivity_at: Sequence[float] | None = None,
    score: float | None = None,
    title: str = "Lesion detection (Camelyon16 FROC)",
) -> Figure:
    """The FROC curve (sensitivity vs mean FPs per slide, log x) with the score's 6 points.

    Takes :class:`~qupath_camseg.evaluate.lesion_froc.FROCResult` fields:
    ``froc_figure(r.fps_per_slide, r.sensitivity, sensitivity_at=r.sensitivity_at, score=r.score)``.
    """
    fig = Figure(figsize=(6.5, 5.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    fps = np.asarray(fps_per_slide, np.float64)
    sens = np.asarray(sensitivity, np.float64)
    lo = min(fp_rates) / 2
    hi = max(max(fp_rates) * 1.5, float(fps.max()) * 1.1 if fps.size else 0.0)
    # operating points from the strictest threshold on (FP and sensitivity both rising), joined
    # as the official plotFROC does; 0 FP sits on the left edge of the log axis
    order = np.lexsort((sens, fps))
    xs, ys = np.clip(fps[order], lo, None), sens[order]
    ax.plot(xs, ys, "-", color="black", lw=1.5, label="FROC")
    if xs.size:
        # beyond its last point the score reads the last sensitivity (np.interp holds the end value)
        ax.plot([xs[-1], hi], [ys[-1], ys[-1]], ":", color="black", lw=1.2)
    if sensitivity_at is not None:
        ax.plot(fp_rates, sensitivity_at, "o", color=PREDICTION_COLOR, ms=6,
                label="sensitivity at 1/4 … 8 FP/slide")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(fp_rates), [f"{r:g}" if r >= 1 else f"1/{round(1 / r)}" for r in fp_rates])
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("Mean false positives per slide")
    ax.set_ylabel("Metastasis detection sensitivity")
    if score is not None and math.isfinite(score):
        title = f"{title}\nscore (mean of 6 points) = {score:.3f}"
    ax.set_title(title, fontsize=11)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def read_history(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Read a training history: a JSON list of per-epoch dicts, or an object whose ``history``
    (or ``epochs``) key holds that list."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ModelBundleError(f"cannot read training history {p}: {err}; point to the model's metrics.json") from err
    if isinstance(data, Mapping):
        data = data.get("history", data.get("epochs"))
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        raise ModelBundleError(f"{p} is not a training history (a list of per-epoch records); use the model's metrics.json")
    return [dict(r) for r in data]


def training_curve_figure(history: Sequence[Mapping[str, Any]], *, title: str = "Training") -> Figure:
    """Loss (train/val) and validation Dice per epoch; the best-Dice epoch is marked.

    ``history``: ``[{"epoch", "train_loss", "val_loss", "val_dice"}, …]`` (missing keys skipped).
    """
    fig = Figure(figsize=(10.0, 4.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_dice = fig.subplots(1, 2)
    epochs = [float(r.get("epoch", i + 1)) for i, r in enumerate(history)]

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(e, float(r[key])) for e, r in zip(epochs, history) if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    for key, label, style in (("train_loss", "train loss", "-"), ("val_loss", "validation loss", "--")):
        xs, ys = series(key)
        if xs:
            ax_loss.plot(xs, ys, style, marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss", fontsize=11)
    xs, ys = series("val_dice")
    if xs:
        ax_dice.plot(xs, ys, "-", marker="o", ms=3, color=PREDICTION_COLOR, label="validation Dice")
        best = int(np.nanargmax(ys))
        ax_dice.plot([xs[best]], [ys[best]], "*", ms=14, color="black",
                     label=f"best {ys[best]:.3f} (epoch {xs[best]:g})")
        ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_title("Validation Dice", fontsize=11)
    for ax in (ax_loss, ax_dice):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    fig.suptitle(title, fontsize=13)
    return fig


def reliability_figure(classes: Mapping[str, tuple[ReliabilityBins, ReliabilityBins]], *,
                       title: str = "Reliability") -> Figure:
    """The reliability diagram: per class, the fraction of true pixels against the mean predicted
    probability in each bin, before (dashed) and after (solid) calibration, beside the number of
    pixels per bin (log scale); the diagonal is perfect calibration.

    ``classes``: class name → ``(bins before, bins after)``
    (:class:`~qupath_camseg.evaluate.calibration.ReliabilityBins`, equal-width bins).
    """
    fig = Figure(figsize=(10.0, 4.4), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax_rel, ax_n = fig.subplots(1, 2)
    ax_rel.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly calibrated")
    colors = colormaps["tab10"]
    for i, (name, (before, after)) in enumerate(classes.items()):
        for bins, style, stage in ((before, "--", "before"), (after, "-", "after")):
            ok = bins.count > 0
            ax_rel.plot(bins.confidence[ok], bins.accuracy[ok], style, marker="o", ms=3, color=colors(i),
                        label=f"{name} {stage}: ECE {bins.ece:.3f}")
        n_bins = after.count.size
        centres = (np.arange(n_bins) + 0.5) / n_bins
        ax_n.bar(centres, after.count, width=0.9 / n_bins, color=colors(i), alpha=0.6,
                 label=f"{name}: pixels per bin (after)")
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_xlabel("mean predicted probability in the bin")
    ax_rel.set_ylabel("fraction of pixels truly of the class")
    ax_rel.set_title("Reliability diagram", fontsize=11)
    ax_n.set_yscale("log")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("predicted probability (after calibration)")
    ax_n.set_ylabel("pixels")
    ax_n.set_title("Pixels per bin", fontsize=11)
    for ax in (ax_rel, ax_n):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=12)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
