"""Reliability bins and the expected calibration error, worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qupath_camseg.evaluate import (
    HeatmapCalibration,
    ReliabilityBins,
    heatmap_calibration,
    reliability_bins,
)


def test_ece_by_hand() -> None:
    # 10 bins: p .05 (4 px, 1 true), .55 (4 px, 2 true), .95 (2 px, 2 true) and p = 1.0 (1 px, true)
    p = np.array([0.05] * 4 + [0.55] * 4 + [0.95] * 2 + [1.0])
    t = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1])
    b = reliability_bins(p, t, n_bins=10)
    assert b.count.tolist() == [4, 0, 0, 0, 0, 4, 0, 0, 0, 3]  # 1.0 falls into the last bin
    # gaps: |.2 - 1| = .8, |2.2 - 2| = .2, |2.9 - 3| = .1 -> (0.8 + 0.2 + 0.1) / 11
    assert b.ece == pytest.approx(1.1 / 11)
    assert b.confidence[0] == pytest.approx(0.05) and b.accuracy[0] == pytest.approx(0.25)
    assert math.isnan(b.confidence[1]) and b.n_pixels == 11
    d = b.to_dict()
    assert d["ece"] == pytest.approx(0.1) and d["bins"]["confidence"][1] is None


def test_perfectly_calibrated_pixels_have_ece_near_zero_and_overconfident_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    truth = rng.uniform(0, 1, p.size) < p  # true with probability p
    assert reliability_bins(p, truth).ece < 0.01
    sharp = np.clip((p - 0.5) * 3 + 0.5, 0, 1)  # overconfident
    assert reliability_bins(sharp, truth).ece > 0.1


def test_bins_add_up_over_slides_and_valid_masks_pixels() -> None:
    rng = np.random.default_rng(1)
    p, t = rng.uniform(0, 1, (2, 50, 60)), rng.uniform(0, 1, (2, 50, 60)) < 0.3
    whole = reliability_bins(p, t)
    parts = reliability_bins(p[0], t[0]) + reliability_bins(p[1], t[1])
    assert np.array_equal(whole.count, parts.count) and whole.ece == pytest.approx(parts.ece)
    valid = np.zeros_like(t)
    valid[:, :10] = True
    assert reliability_bins(p, t, valid=valid).n_pixels == 2 * 10 * 60  # 10 rows of 60
    assert math.isnan(ReliabilityBins.empty().ece)


def test_heatmap_calibration_on_tissue() -> None:
    prob = np.array([[0.1, 0.2, 0.9], [0.0, 0.4, 0.8]], np.float32)
    truth = np.array([[0, 0, 1], [0, 0, 1]], np.uint8)
    tissue = np.array([[True, True, True], [False, True, True]])
    c = heatmap_calibration(prob, truth, tissue)
    assert c.normal_pixels == 3 and c.mean_normal_prob == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert c.bins.n_pixels == 5
    both = c + HeatmapCalibration.empty()
    assert both.normal_pixels == 3 and both.bins.n_pixels == 5
    assert c.to_dict()["mean_prob_normal_tissue"] == pytest.approx(0.7 / 3)
