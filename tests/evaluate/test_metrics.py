"""Pixel Dice/IoU and slide-level ROC AUC on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from qupath_camseg.evaluate import (
    PixelCounts,
    evaluation_mask_from_polygons,
    match_detections,
    pixel_counts,
    polygon_pixel_counts,
    pooled_counts,
    roc_auc,
)


def test_dice_iou_on_hand_masks() -> None:
    t = np.zeros((4, 4), bool)
    t[0, :] = True  # 4 truth pixels
    p = np.zeros((4, 4), bool)
    p[0, :2] = True
    p[1, :2] = True  # 4 predicted, 2 of them on truth
    c = pixel_counts(t, p)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 2, 2, 10)
    assert c.dice == pytest.approx(2 * 2 / (4 + 4))  # 0.5
    assert c.iou == pytest.approx(2 / 6)
    assert c.precision == 0.5 and c.recall == 0.5
    # a perfect prediction, and a prediction with no overlap
    assert pixel_counts(t, t).dice == 1.0 and pixel_counts(t, t).iou == 1.0
    assert pixel_counts(t, ~t).dice == 0.0
    # nothing on either side: undefined, not 1 or 0
    e = pixel_counts(np.zeros((3, 3)), np.zeros((3, 3)))
    assert math.isnan(e.dice) and math.isnan(e.iou) and e.tn == 9
    # the valid mask drops pixels (e.g. an ignore label)
    valid = np.ones((4, 4), bool)
    valid[1, :] = False
    assert pixel_counts(t, p, valid=valid).dice == pytest.approx(2 * 2 / (4 + 2))
    with pytest.raises(ValueError):
        pixel_counts(t, p[:2])


def test_pooled_is_micro_average() -> None:
    a = PixelCounts(tp=1, fp=0, fn=0, tn=5)  # Dice 1
    b = PixelCounts(tp=1, fp=3, fn=4, tn=0)  # Dice 2/9
    pooled = pooled_counts([a, b])
    assert pooled == PixelCounts(2, 3, 4, 5)
    assert pooled.dice == pytest.approx(4 / 11)  # not the mean of 1 and 2/9
    assert pooled_counts([]).tp == 0 and set(pooled.scores()) == {"dice", "iou", "precision", "recall"}


def test_polygon_pixel_counts_at_eval_mpp() -> None:
    # slide 1000x1000 px at 0.5 µm/px, evaluated at 5 µm/px: 10 px per mask pixel, 100x100 mask
    truth = [box(0, 0, 400, 200)]  # 40x20 = 800 mask pixels
    pred = [box(200, 0, 600, 200)]  # 40x20, overlapping 20x20 = 400
    c = polygon_pixel_counts(truth, pred, box_px=(0, 0, 1000, 1000), mpp=0.5, eval_mpp=5.0)
    assert (c.tp, c.fp, c.fn) == (400, 400, 400)
    assert c.tn == 100 * 100 - 1200
    assert c.dice == pytest.approx(0.5)
    # no prediction at all on a tumour slide: Dice 0; on a normal slide: undefined
    assert polygon_pixel_counts(truth, [], box_px=(0, 0, 1000, 1000), mpp=0.5, eval_mpp=5.0).dice == 0.0
    assert math.isnan(polygon_pixel_counts([], [], box_px=(0, 0, 1000, 1000), mpp=0.5, eval_mpp=5.0).dice)


def test_evaluation_mask_from_polygons_and_hit() -> None:
    # 0.25 µm/px slide 32768x16384 -> default downsample 32 -> mask 1024x512 at 8 µm/px
    lesion = Polygon([(3200, 3200), (6400, 3200), (6400, 6400), (3200, 6400)])  # 800 µm square
    tiny = box(20000, 8000, 20010, 8010)  # 2.5 µm: covers no pixel centre, must not vanish
    m = evaluation_mask_from_polygons([lesion, tiny], (32768, 16384), mpp=0.25)
    assert m.downsample == 32 and m.labels.shape == (512, 1024)
    assert m.n_regions == 2 and m.n_lesions == 1 and len(m.itc_labels) == 1
    s = match_detections([(0.9, 4800, 4800), (0.8, 20005, 8005), (0.7, 30000, 1000)], m)
    assert s.outcomes == ("tp", "itc", "fp")


def test_roc_auc_hand_cases_with_ties() -> None:
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    # pairs (pos, neg): (.9,.1)=1 (.9,.8)=1 (.8,.1)=1 (.8,.8)=1/2 -> 3.5/4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.8]) == pytest.approx(0.875)
    # all scores equal: every pair ties
    assert roc_auc([1, 0, 1, 0, 0], [0.5] * 5) == pytest.approx(0.5)
    # 3 pos, 2 neg: pos .7 .4 .4, neg .4 .1 -> 1 + 1 + 1/2 + 1 + 1/2 + 1 = 5/6 (ties count 1/2)
    assert roc_auc([True, False, True, True, False], [0.7, 0.4, 0.4, 0.4, 0.1]) == pytest.approx(5 / 6)
    assert math.isnan(roc_auc([1, 1], [0.3, 0.4]))
    with pytest.raises(ValueError):
        roc_auc([1, 0], [0.5])
