"""Tissue detection on the real slides of ../shared/data (skipped when absent), issue 15.

Every real slide is read at the mask resolutions the tool uses (8 µm/px: training's default; the
prediction's ≤ 1 Mpx mask, ≈ 36 µm/px for the Camelyon16 node; 16 µm/px in between) and held
against the field's standard rule (saturation Otsu, holes filled:
:func:`~qupath_camseg.wsi.tissue_reference.standard_tissue_mask`):

* retention: the mask keeps ≥ 98 % of the standard rule's tissue (its objects lying on ink marks,
  such as the Camelyon slide's black registration crosses, are not tissue and are left out);
* solidity: no hole in the mask where the standard rule sees solid tissue (the old detector
  punched hundreds of thousands into the dense node);
* ink: nothing inside the sections is taken for ink (haematoxylin-dense epithelium and dense
  lymphoid tissue are not marker), and blue, green and black marker strokes drawn over each
  slide's thumbnail are excluded while the tissue around them stays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qupath_camseg.wsi import (
    ink_mask,
    open_slide,
    reference_marks,
    reference_retention,
    standard_tissue_mask,
    tissue_mask_from_rgb,
)
from qupath_camseg.wsi.tissue_ink import FRINGE_UM, dilate_square, erode_square

#: (file under the data folder, level-0 µm/px to assume or None, mask resolutions in µm/px)
SLIDES = {
    "cmu": ("svs/cmu-1-small-region.svs", None, (8.0,)),
    "tcga": ("svs/tcga-cr-7395-01a-01-ts1.svs", 0.5, (8.0,)),  # no MPP in the file
    "camelyon": ("camelyon16/tumor_001_level5.tif", 0.243 * 32, (16.0, 36.0)),
}
CASES = [(name, mpp) for name, (_, _, mpps) in SLIDES.items() for mpp in mpps]
#: Marker colours as transmitted RGB (dense ink: transmissions multiply with the slide's).
INKS = {"blue": (35, 70, 175), "green": (40, 150, 80), "black": (30, 30, 35)}
STROKE_UM = 300.0  # the finest marker tips


@pytest.fixture(scope="module")
def thumbs(shared_data: Path) -> dict[tuple[str, float], dict[str, np.ndarray]]:
    """Per (slide, µm/px): the thumbnail, our mask, the ink and the standard rule's mask."""
    out = {}
    for name, mask_mpp in CASES:
        rel, mpp, _ = SLIDES[name]
        with open_slide(shared_data / rel, mpp=mpp) as slide:
            rgb, _ = slide.read_thumbnail_mpp(mask_mpp)
        out[(name, mask_mpp)] = {"rgb": rgb, "ours": tissue_mask_from_rgb(rgb, mask_mpp=mask_mpp),
                                 "ink": ink_mask(rgb, mask_mpp=mask_mpp),
                                 "reference": standard_tissue_mask(rgb, mask_mpp=mask_mpp)}
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{m:g}um" for n, m in CASES])
def test_keeps_the_standard_rules_tissue(thumbs, case) -> None:
    t = thumbs[case]
    r = reference_retention(t["ours"], t["reference"], t["ink"])
    assert r["marks_share"] < 0.06, r  # only the marks are left out, not tissue
    assert r["retention"] >= 0.98, r


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{m:g}um" for n, m in CASES])
def test_solid_where_the_standard_rule_is_solid(thumbs, case) -> None:
    from scipy import ndimage

    t = thumbs[case]
    solid = erode_square(t["reference"], 2) & ~dilate_square(t["ink"], 2)
    assert solid.sum() > 1000
    labels, n = ndimage.label(solid & ~t["ours"])
    sizes = np.bincount(labels.ravel())[1:]
    assert n == 0 or sizes.max() <= 4, f"{n} holes, largest {sizes.max()} px"


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{m:g}um" for n, m in CASES])
def test_nothing_inside_the_sections_is_taken_for_ink(thumbs, case) -> None:
    """Dense haematoxylin (CMU-1's epidermis, the node's lymphoid tissue) is stain, not marker."""
    t = thumbs[case]
    section = t["reference"] & ~reference_marks(t["reference"], t["ink"])
    assert (t["ink"] & section).sum() <= 0.002 * section.sum()


def _stroke(shape: tuple[int, ...], start: tuple[float, float], end: tuple[float, float], width: int) -> np.ndarray:
    img = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).line([start, end], fill=1, width=width)
    return np.asarray(img, bool)


@pytest.mark.parametrize("ink", list(INKS))
@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{m:g}um" for n, m in CASES])
def test_marker_strokes_are_excluded_and_the_tissue_around_stays(thumbs, case, ink) -> None:
    """A 0.3 mm stroke from the glass through the middle of the tissue, painted by multiplying
    transmissions (a translucent dense marker), is left out; the tissue beyond its fringe stays."""
    t = thumbs[case]
    rgb, clean = t["rgb"], t["ours"]
    h, w = clean.shape
    rows, cols = np.nonzero(clean)
    cy, cx = rows.mean(), cols.mean()
    angle = {"blue": 0.3, "green": 1.4, "black": 2.5}[ink]
    reach = max(h, w)
    start = (cx - np.cos(angle) * reach, cy - np.sin(angle) * reach)  # well off the tissue, on glass
    end = (cx + np.cos(angle) * 0.3 * reach, cy + np.sin(angle) * 0.3 * reach)
    stroke = _stroke(rgb.shape, start, end, max(3, round(STROKE_UM / case[1])))
    painted = rgb.astype(np.float32)
    painted[stroke] *= np.asarray(INKS[ink], np.float32) / 255
    mask = tissue_mask_from_rgb(painted.astype(np.uint8), mask_mpp=case[1])
    assert (stroke & clean).sum() > 0, "the stroke should cross tissue"
    assert (mask & stroke).sum() <= 0.01 * stroke.sum()
    near = dilate_square(stroke, max(1, round(FRINGE_UM / case[1])) + 1)
    assert (mask & clean & ~near).sum() >= 0.98 * (clean & ~near).sum()
    # by design, pockets that the tissue and the stroke enclose together are filled (they may be
    # fat or glass); nothing else is added
    assert (mask & ~clean & ~near).sum() <= 0.03 * clean.sum()


@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{m:g}um" for n, m in CASES])
def test_a_pen_circle_on_the_glass_keeps_the_glass_inside(thumbs, case) -> None:
    """Glass ringed by marker (as around a region of interest) is neither ink nor tissue."""
    from scipy import ndimage

    t = thumbs[case]
    glass = ~dilate_square(t["ours"] | t["reference"] | t["ink"], 2)
    distance = ndimage.distance_transform_edt(np.pad(glass, 1))[1:-1, 1:-1]  # the border is no glass
    cy, cx = np.unravel_index(int(np.argmax(distance)), distance.shape)
    radius = min(0.8 * distance[cy, cx], 1000.0 / case[1])  # up to a 2 mm circle
    width = max(3, min(round(STROKE_UM / case[1]), int(radius / 4)))
    assert radius >= 12, "no room for a circle on the glass"
    img = Image.new("L", (glass.shape[1], glass.shape[0]), 0)
    ImageDraw.Draw(img).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=1, width=width)
    ring = np.asarray(img, bool)
    painted = t["rgb"].astype(np.float32)
    painted[ring] *= np.asarray(INKS["blue"], np.float32) / 255
    mask = tissue_mask_from_rgb(painted.astype(np.uint8), mask_mpp=case[1])
    inside = ndimage.binary_fill_holes(ring) & ~ring
    assert inside.sum() > 0 and not (mask & (inside | ring)).any()
