"""Figures: sizes, what each panel holds, and the training-history reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box

from qupath_camseg.errors import CamsegError
from qupath_camseg.evaluate import (
    PREDICTION_COLOR,
    TRUTH_COLOR,
    evaluation_mask,
    froc,
    froc_figure,
    match_detections,
    read_history,
    save_figure,
    seed_figure,
    training_curve_figure,
)


def _rgb() -> np.ndarray:
    img = np.full((200, 300, 3), 240, np.uint8)
    img[50:150, 50:250] = (170, 110, 180)
    return img


def test_seed_figure_with_heatmap_has_colorbar_and_blue_truth(tmp_path) -> None:
    prob = np.zeros((20, 30), np.float32)
    prob[5:10, 5:12] = 0.9
    fig = seed_figure(_rgb(), box_px=(0, 0, 3000, 2000), truth=[box(500, 500, 1200, 1000)],
                      probability=prob, mpp=0.5, title="slide — Dice 0.50")
    axes = fig.get_axes()
    assert len(axes) == 3  # left, right, colour bar
    assert axes[2].get_ylabel() == "tumour probability"
    left_lines = [line for line in axes[0].get_lines() if line.get_color() == TRUTH_COLOR]
    assert len(left_lines) == 1 and left_lines[0].get_linestyle() == "-"
    assert any(line.get_color() == TRUTH_COLOR and line.get_linestyle() == "--" for line in axes[1].get_lines())
    assert fig._suptitle.get_text() == "slide — Dice 0.50"
    assert axes[0].get_xlim() == (0, 3000) and axes[0].get_ylim() == (2000, 0)  # image orientation
    out = save_figure(fig, tmp_path / "a" / "seed.png")
    assert Image.open(out).size == (1800, 900)


def test_seed_figure_with_prediction_polygons(tmp_path) -> None:
    donut = box(100, 100, 900, 900).difference(box(400, 400, 600, 600))
    fig = seed_figure(_rgb(), box_px=(0, 0, 3000, 2000), truth=[donut], prediction=[donut, box(2000, 100, 2500, 600)])
    left, right = fig.get_axes()
    assert len(left.get_lines()) == 2  # exterior + hole of the truth outline
    assert len(right.patches) == 2  # the two predicted regions, filled
    assert right.patches[0].get_facecolor()[:3] == pytest.approx(tuple(int(PREDICTION_COLOR[i:i + 2], 16) / 255
                                                                      for i in (1, 3, 5)))
    assert "Prediction" in right.get_title()


def test_froc_figure_marks_the_six_points(tmp_path) -> None:
    t = np.zeros((100, 100), bool)
    t[10:60, 10:60] = True
    m = evaluation_mask(t, mpp=0.25, downsample=32)
    r = froc([match_detections([(0.9, 1000.0, 1000.0), (0.4, 3000.0, 3000.0)], m)])
    fig = froc_figure(r.fps_per_slide, r.sensitivity, sensitivity_at=r.sensitivity_at, score=r.score)
    ax = fig.get_axes()[0]
    points = [line for line in ax.get_lines() if line.get_marker() == "o"][0]
    assert list(points.get_xdata()) == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert list(points.get_ydata()) == list(r.sensitivity_at)
    assert f"{r.score:.3f}" in ax.get_title()
    assert Image.open(save_figure(fig, tmp_path / "froc.png")).size == (975, 750)


def test_training_curve_and_history(tmp_path) -> None:
    hist = [{"epoch": 1, "train_loss": 0.8, "val_loss": 0.9, "val_dice": 0.4},
            {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7, "val_dice": 0.7},
            {"epoch": 3, "train_loss": 0.4, "val_dice": 0.6}]  # no val_loss this epoch
    f = tmp_path / "metrics.json"
    f.write_text(json.dumps({"history": hist}))
    assert read_history(f) == hist
    fig = training_curve_figure(read_history(f))
    loss_ax, dice_ax = fig.get_axes()[:2]
    assert [len(line.get_xdata()) for line in loss_ax.get_lines()] == [3, 2]
    best = [line for line in dice_ax.get_lines() if line.get_marker() == "*"][0]
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (2.0, 0.7)
    save_figure(fig, tmp_path / "curve.png")
    bad = tmp_path / "bad.json"
    bad.write_text('{"loss": 1}')
    with pytest.raises(CamsegError, match="not a training history"):
        read_history(bad)
    with pytest.raises(CamsegError, match="cannot read"):
        read_history(tmp_path / "missing.json")
