"""Tissue detection: synthetic truth, pen marks and black borders, the real Camelyon16 node."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from shapely.geometry import box

from qupath_camseg.wsi import (
    TissueMask,
    detect_tissue,
    open_slide,
    tissue_mask_from_rgb,
)


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_detects_the_synthetic_section(synthetic_slide):
    path, truth = synthetic_slide
    with open_slide(path) as slide:
        tissue = detect_tissue(slide, mask_mpp=8.0)
    assert tissue.mask.shape == (96, 128) and tissue.downsample == pytest.approx(32.0)
    assert _iou(tissue.to_polygons(), truth.tissue) > 0.9
    inside = truth.tissue.buffer(-300)
    c = inside.representative_point()
    assert tissue.fraction((c.x - 128, c.y - 128, 256, 256)) == 1.0
    glass = box(0, 0, 4096, 3072).difference(truth.tissue.buffer(300))
    g = glass.representative_point()
    assert tissue.fraction((g.x - 100, g.y - 100, 200, 200)) == 0.0
    assert tissue.fraction((-5000, -5000, 1000, 1000)) == 0.0  # outside the slide


def _paint_artifacts(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw pen strokes and black borders like those on real slides; return (image, artefact mask).

    The image is at 8 µm/px, so the strokes are 4 px = 32 µm wide: thinner than any real marker
    (0.3–1 mm; see test_tissue_real.py for those), just above the 24 µm core the ink rule needs."""
    img = Image.fromarray(rgb.copy())
    marks = Image.new("L", img.size, 0)
    w, h = img.size
    for draw, fill in ((ImageDraw.Draw(img), None), (ImageDraw.Draw(marks), 1)):
        draw.line([(5, 10), (w - 5, 14)], fill=fill or (35, 60, 160), width=4)  # blue marker across
        draw.ellipse([w - 40, h - 40, w - 8, h - 8], outline=fill or (40, 140, 70), width=4)  # green circle
        draw.line([(w // 3, h - 12), (w // 2, h - 6)], fill=fill or (25, 25, 30), width=4)  # black pen
        draw.rectangle([0, 0, w - 1, 3], fill=fill or (10, 10, 10))  # black slide edge
        draw.rectangle([0, 0, 2, h - 1], fill=fill or (0, 0, 0))  # scanner border
    return np.asarray(img), np.asarray(marks, bool)


def test_ignores_pen_marks_and_black_borders(synthetic_slide):
    path, truth = synthetic_slide
    with open_slide(path) as slide:
        rgb, ds = slide.read_thumbnail_mpp(8.0)
    painted, marks = _paint_artifacts(rgb)
    mask = tissue_mask_from_rgb(painted, mask_mpp=8.0)
    clean = tissue_mask_from_rgb(rgb, mask_mpp=8.0)
    assert not (mask & marks).any()  # no ink, no border counted as tissue
    tissue_px = TissueMask(clean, ds).to_polygons()
    assert _iou(tissue_px, truth.tissue) > 0.9
    # away from the marks the two masks agree
    from scipy import ndimage

    near = ndimage.binary_dilation(marks, np.ones((3, 3), bool), iterations=3)  # the ink fringe (2 px) + 1 px
    assert (mask[~near] == clean[~near]).mean() > 0.99


def test_blank_and_tiny_inputs():
    glass = np.full((200, 300, 3), 238, np.uint8)
    rng = np.random.default_rng(0)
    noisy = np.clip(glass + rng.normal(0, 2, glass.shape), 0, 255).astype(np.uint8)
    assert not tissue_mask_from_rgb(glass).any()
    assert not tissue_mask_from_rgb(noisy).any()
    assert tissue_mask_from_rgb(np.zeros((0, 5, 3), np.uint8)).shape == (0, 5)
    with pytest.raises(ValueError):
        tissue_mask_from_rgb(np.zeros((10, 10), np.uint8))


def test_to_polygons_keeps_holes_in_level0_coordinates():
    m = np.zeros((40, 40), bool)
    m[5:35, 5:35] = True
    m[15:25, 15:25] = False  # a hole
    m[37:39, 37:39] = True
    tm = TissueMask(m, 4.0)
    polys = tm.to_polygons(simplify_px=0)
    assert sum(len(p.interiors) for p in polys.geoms) == 1
    assert polys.area == pytest.approx(m.sum() * 16, rel=0.1)
    assert polys.bounds[0] == pytest.approx(5 * 4, abs=4) and polys.bounds[2] == pytest.approx(39 * 4, abs=4)
    assert tm.fraction((20 * 4, 20 * 4, 8, 8)) == 0.0 and tm.fraction((6 * 4, 6 * 4, 16, 16)) == 1.0
    assert tm.fraction((0, 0, 40 * 4, 40 * 4)) == pytest.approx(m.mean())


def test_camelyon16_finds_the_node_not_the_background(shared_data):
    path = shared_data / "camelyon16" / "tumor_001_level5.tif"
    with open_slide(path, mpp=0.243 * 32) as slide:
        tissue = detect_tissue(slide, mask_mpp=24.0)
        rgb, _ = slide.read_thumbnail_mpp(24.0)
    mask = tissue.mask
    assert mask.shape == rgb.shape[:2]
    # strongly stained purple pixels (the node: H&E, not grey edges or black marks) are found ...
    px = rgb.astype(float)
    od = -np.log(np.clip(px, 1, 255) / 255)
    saturation = (px.max(-1) - px.min(-1)) / px.max(-1)
    node = (od.mean(-1) > 0.5) & (od[..., 1] > 1.05 * od[..., 0]) & (od[..., 2] < od[..., 1]) & (saturation > 0.15)
    assert node.sum() > 500
    assert mask[node].mean() > 0.9
    # ... and the glass is not: the bottom quarter of this slide and its label strip are empty
    h = mask.shape[0]
    assert mask[int(0.75 * h):].mean() < 0.005
    assert mask[: int(0.06 * h)].mean() < 0.005
    assert 0.02 < mask.mean() < 0.3
