"""Polygons ↔ masks: exact pixel-centre rasterisation, priorities, ignore class, vectorising."""

from __future__ import annotations

import time

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from qupath_camseg.annotations import (
    IGNORE_LABEL,
    QPObject,
    is_ignore_class,
    label_mask,
    rasterize,
    vectorize,
)
from qupath_camseg.errors import InvalidAnnotationError


def centre_oracle(geom, box_px, out_size):
    """Independent reference: shapely point-in-polygon at every pixel centre."""
    x, y, bw, bh = box_px
    w, h = out_size
    xs = x + (np.arange(w) + 0.5) * bw / w
    ys = y + (np.arange(h) + 0.5) * bh / h
    gx, gy = np.meshgrid(xs, ys)
    return shapely.contains_xy(geom, gx, gy)


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_pixel_aligned_rectangle_is_exact():
    m = rasterize([(box(12, 8, 20, 30), 3)], (10, 0, 40, 40), (40, 40))
    expected = np.zeros((40, 40), np.uint8)
    expected[8:30, 2:10] = 3
    np.testing.assert_array_equal(m, expected)


def test_downsampled_box_and_offset():
    # level-0 box (1000, 2000, 400, 400) at downsample 4 → 100x100; square 1040..1080 → cols 10..19
    m = rasterize([(box(1040, 2100, 1080, 2200), 1)], (1000, 2000, 400, 400), (100, 100))
    assert m.sum() == 10 * 25
    assert m[25:50, 10:20].all()


@pytest.mark.parametrize("seed", range(5))
def test_matches_point_in_polygon_at_pixel_centres(seed):
    rng = np.random.default_rng(seed)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 40))
    radii = rng.uniform(20, 60, 40)
    poly = Polygon(np.column_stack((70 + radii * np.cos(angles), 65 + radii * np.sin(angles))))
    hole = Point(70, 65).buffer(10)
    geom = poly.difference(hole)
    for box_px, size in [((0, 0, 140, 130), (140, 130)), ((3.3, -7.1, 140, 130), (53, 61))]:
        m = rasterize([(geom, 1)], box_px, size)
        np.testing.assert_array_equal(m.astype(bool), centre_oracle(geom, box_px, size))


def test_shared_edge_no_gap_no_overlap():
    left, right = box(0, 0, 10.5, 20), box(10.5, 0, 30, 20)
    m = rasterize([(left, 1), (right, 2)], (0, 0, 30, 20), (30, 20))
    assert (m == 0).sum() == 0
    # the centres at x = 10.5 lie on the shared edge: half-open, so they belong to the right box
    assert (m == 1).sum() == 10 * 20 and (m == 2).sum() == 20 * 20
    alone = [rasterize([(g, 1)], (0, 0, 30, 20), (30, 20)) for g in (left, right)]
    assert (alone[0] & alone[1]).sum() == 0 and (alone[0] | alone[1]).all()


def test_holes_restore_what_was_under_them_and_later_wins():
    donut = box(0, 0, 30, 30).difference(box(10, 10, 20, 20))
    m = rasterize([(box(0, 0, 30, 30), 5), (donut, 7)], (0, 0, 30, 30), (30, 30))
    assert (m[10:20, 10:20] == 5).all() and (m == 7).sum() == 800
    m2 = rasterize([(donut, 7), (box(0, 0, 30, 30), 5)], (0, 0, 30, 30), (30, 30))
    assert (m2 == 5).all()


def test_points_lines_empty_ignored_and_fill():
    m = rasterize([(Point(3, 3), 1), (LineString([(0, 0), (9, 9)]), 1), (Polygon(), 1)],
                  (0, 0, 10, 10), (10, 10), fill=9)
    assert (m == 9).all()


def test_nan_geometry_is_a_clear_error():
    with pytest.raises(InvalidAnnotationError, match="NaN"):
        rasterize([(Polygon([(0, 0), (np.nan, 1), (5, 5)]), 1)], (0, 0, 10, 10), (10, 10))


def test_bad_box_raises():
    with pytest.raises(ValueError, match="positive"):
        rasterize([], (0, 0, 0, 10), (10, 10))


def test_label_mask_classes_priority_and_ignore():
    objs = [
        QPObject(geometry=box(0, 0, 40, 40), classification="Tumor"),
        QPObject(geometry=box(5, 5, 15, 15), classification="Stroma"),  # smaller: drawn on top
        QPObject(geometry=box(30, 30, 40, 40), classification="Ignore*"),  # ignore wins
        QPObject(geometry=box(20, 0, 25, 5), classification="Other"),  # not in map: not drawn
        QPObject(geometry=Point(1, 1)),
    ]
    # the Tumor object is listed first but is the largest: order in the file does not matter
    m = label_mask(objs[::-1], {"Tumor": 1, "Stroma": 2}, (0, 0, 50, 50), (50, 50))
    assert (m[5:15, 5:15] == 2).all()
    assert (m[30:40, 30:40] == IGNORE_LABEL).all()
    assert (m[0:5, 20:25] == 1).all()  # Other lies inside Tumor and is not drawn
    assert (m[40:, :] == 0).all()
    assert (m == 1).sum() == 1600 - 100 - 100
    assert is_ignore_class("Ignore*") and is_ignore_class("ignore") and not is_ignore_class("Tumor")


def test_label_mask_includes_children():
    parent = QPObject(geometry=box(0, 0, 10, 10), classification="Region*",
                      children=[QPObject(geometry=box(2, 2, 4, 4), classification="Tumor")])
    m = label_mask([parent], {"Tumor": 1}, (0, 0, 10, 10), (10, 10))
    assert m.sum() == 4


# ---------------------------------------------------------------------------------- vectorize
def test_vectorize_square_exact_in_level0():
    m = np.zeros((20, 30), bool)
    m[5:10, 10:20] = True
    (p,) = vectorize(m, origin_px=(1000, 500), downsample=4)
    # marching squares cuts the four corners by half a pixel each: area = 50 - 4 * 1/8 mask px²
    assert p.area == pytest.approx((50 - 0.5) * 16)
    assert p.bounds == pytest.approx((1000 + 40, 500 + 20, 1000 + 80, 500 + 40))


@pytest.mark.parametrize("downsample", [1, 4, 8])
def test_round_trip_polygon_mask_polygon(downsample):
    shape = Point(600, 500).buffer(300).difference(Point(650, 480).buffer(90))
    box_px = (100, 100, 1024, 1024)
    size = (1024 // downsample, 1024 // downsample)
    m = rasterize([(shape, 1)], box_px, size)
    polys = vectorize(m, origin_px=box_px[:2], downsample=downsample)
    assert len(polys) == 1 and len(polys[0].interiors) == 1
    assert iou(polys[0], shape) > 0.98


def test_vectorize_probability_threshold_label_and_min_area():
    prob = np.zeros((50, 50), np.float32)
    prob[10:30, 10:30] = 0.9
    prob[40:42, 40:42] = 0.7  # a 4 px speck
    prob[0, 0] = np.nan
    assert len(vectorize(prob, origin_px=(0, 0), downsample=1)) == 2
    assert len(vectorize(prob, origin_px=(0, 0), downsample=1, threshold=0.8)) == 1
    assert len(vectorize(prob, origin_px=(0, 0), downsample=2, min_area_px=50)) == 1  # 4·4 < 50
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4], labels[6:9, 6:9] = 1, 2
    (two,) = vectorize(labels, origin_px=(0, 0), downsample=1, label=2)
    assert two.bounds[0] > 5
    assert vectorize(np.zeros((5, 5)), origin_px=(0, 0), downsample=1) == []


def test_vectorize_nested_islands_and_touching_border():
    m = np.zeros((40, 40), bool)
    m[:, :] = True
    m[10:30, 10:30] = False
    m[15:25, 15:25] = True  # an island inside the hole
    polys = vectorize(m, origin_px=(0, 0), downsample=1)
    assert len(polys) == 2
    assert sorted(len(p.interiors) for p in polys) == [0, 1]
    assert sum(p.area for p in polys) == pytest.approx(m.sum(), rel=0.01)


def test_simplify_reduces_vertices_keeps_shape():
    m = rasterize([(Point(200, 200).buffer(150), 1)], (0, 0, 400, 400), (400, 400))
    (raw,) = vectorize(m, origin_px=(0, 0), downsample=1)
    (simple,) = vectorize(m, origin_px=(0, 0), downsample=1, simplify_px=1.0)
    assert len(simple.exterior.coords) < len(raw.exterior.coords) / 3
    assert iou(simple, raw) > 0.99 and simple.is_valid


def test_rasterize_is_fast_on_big_polygons():
    big = Point(50_000, 50_000).buffer(40_000, quad_segs=5000)  # 20k vertices
    parts = MultiPolygon([big.difference(Point(50_000, 50_000).buffer(5000))])
    t = time.perf_counter()
    m = rasterize([(parts, 1)], (0, 0, 100_000, 100_000), (2048, 2048))
    tile = rasterize([(parts, 1)], (30_000, 30_000, 512, 512), (512, 512))
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, elapsed
    assert m.mean() == pytest.approx(parts.area / 1e10, rel=0.01)
    assert tile.all()
