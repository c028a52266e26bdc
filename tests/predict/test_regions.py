"""The region-polygon stage on the raster (issue 18): specks and pinholes dropped before any
geometry, regions cut by chunk seams judged by their whole area, and the same regions as the old
trace-everything-then-merge stage (``benchmarks/reference_regions.py``) up to the specks that
stage's buffer merged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import shapely
from scipy import ndimage

from qupath_camseg.predict import ChunkStore, ChunkSummaries, TilePlan, build_objects
from qupath_camseg.predict.regions import chunk_regions, resolve_seams

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from reference_regions import reference_pieces, reference_regions

CHUNK = 64
DS = 4.0  # level-0 px per map px; slide 0.25 µm/px → a map px is 1 µm, 1 µm² per map px
SLIDE_MPP = 0.25


def _store(tmp_path: Path, full: np.ndarray, name: str = "s") -> tuple[ChunkStore, TilePlan]:
    h, w = full.shape[-2:]
    plan = TilePlan.create((int(w * DS), int(h * DS)), SLIDE_MPP, 1.0, tile_px=32, chunk_px=CHUNK)
    store = ChunkStore(tmp_path / name, plan, full.shape[0], {"test": name})
    rows, cols = plan.chunk_shape
    for r in range(rows):
        for c in range(cols):
            x, y, cw, ch = plan.chunk_box(r, c)
            store.write(r, c, np.ascontiguousarray(full[:, y:y + ch, x:x + cw]))
    return store, plan


def _new(store: ChunkStore, plan: TilePlan, *, min_area: float, min_hole: float, processes: int = 1) -> list:
    """The regions ``predict_slide`` writes (level-0 polygons), with areas in µm² = map px²."""
    n = plan.chunk_shape[0] * plan.chunk_shape[1]
    with ChunkSummaries(store, measure_px=32, threshold_q=128, processes=processes, expected=n,
                        min_area_px=min_area, min_hole_px=min_hole) as s:
        summaries = s.finish()
    objs, _ = build_objects(summaries, plan, lambda b: np.ones(len(b)), None, class_names=["Tumor"],
                            colors=[(200, 0, 0)], measure_px=32, min_tile_tissue=0.5, slide_mpp=SLIDE_MPP,
                            min_area_um2=min_area, min_hole_um2=min_hole, simplify_um=None, tumor_index=0)
    return [o.geometry for o in objs if o.object_type == "annotation"]


def _old(store: ChunkStore, *, min_area: float, min_hole: float) -> list:
    um2 = 1 / SLIDE_MPP**2
    return reference_regions(reference_pieces(store, 128), close_px=0.3 * DS, simplify_px=0.5 * DS,
                             min_area_px=min_area * um2, min_hole_px=min_hole * um2)


def _speckled(size: tuple[int, int], seed: int) -> np.ndarray:
    """``uint8 (1, h, w)``: an early model's map - smooth noise whose peaks make thousands of
    specks, plus discs and a ring that cross chunk seams."""
    w, h = size
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), 1.2)
    noise /= noise.std()
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    big = ((xx - 130) ** 2 + (yy - 128) ** 2 <= 60**2) | ((xx - 300) ** 2 + (yy - 190) ** 2 <= 25**2)
    r = np.hypot(xx - 380, yy - 70)
    big |= (r >= 18) & (r <= 40)
    p = 1 / (1 + np.exp(-(noise - 2.0) * 3))  # ≈ 2 % of pixels above 0.5, in specks
    p = np.where(big, np.maximum(p, 0.6 + 0.3 * (noise > -1.5)), p)  # tumour, with a few pinholes
    return (np.clip(p, 0, 1) * 255).round().astype(np.uint8)[None]


def test_speckled_map_gives_the_old_regions(tmp_path):
    full = _speckled((448, 320), seed=5)
    store, plan = _store(tmp_path, full)
    ref = _old(store, min_area=200, min_hole=100)
    got = _new(store, plan, min_area=200, min_hole=100)
    n_specks = ndimage.label(full[0] >= 128)[1]
    assert n_specks > 300 and len(ref) >= 3  # a speckled map, with regions kept
    ref_u, got_u = shapely.union_all(ref), shapely.union_all(got)
    assert got_u.area >= 0.99 * ref_u.area
    assert ref_u.symmetric_difference(got_u).area <= 0.01 * ref_u.area
    for region in ref:  # every old region is one new region
        match = [g for g in got if g.intersects(region)]
        assert len(match) == 1 and match[0].symmetric_difference(region).area <= 0.02 * region.area


def test_pieces_of_a_region_below_the_minimum_are_kept_when_the_whole_is_not(tmp_path):
    """A disc on the corner of four chunks, each quarter below the minimum area, the whole above
    it; a speck on another corner, below it as a whole; a snake through six chunks."""
    w, h = 4 * CHUNK, 3 * CHUNK
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    disc = (xx - CHUNK) ** 2 + (yy - CHUNK) ** 2 <= 11**2  # ≈ 380 px, quarters ≈ 95 px
    speck = (xx - 3 * CHUNK) ** 2 + (yy - CHUNK) ** 2 <= 6**2  # ≈ 113 px
    snake = (np.abs(yy - (2 * CHUNK + 10 + 8 * np.sin(xx / 9))) <= 1.2) & (xx > 20)  # ≈ 700 px, ≤ 200 per chunk
    full = (np.where(disc | speck | snake, 220, 10).astype(np.uint8))[None]
    store, plan = _store(tmp_path, full, "corner")
    got = _new(store, plan, min_area=250, min_hole=10)
    assert len(got) == 2
    assert any(g.contains(shapely.Point(CHUNK * DS, CHUNK * DS)) for g in got)  # the disc
    assert not any(g.distance(shapely.Point(3 * CHUNK * DS, CHUNK * DS)) < 20 * DS for g in got)  # no speck
    snake_poly = next(g for g in got if g.bounds[2] - g.bounds[0] > 2 * CHUNK * DS)
    assert snake_poly.area / DS**2 == pytest.approx(snake.sum(), rel=0.1)
    ref = _old(store, min_area=250, min_hole=10)
    assert len(ref) == 2 and abs(shapely.union_all(ref).area - shapely.union_all(got).area) < 0.01 * snake_poly.area


def test_pinholes_are_filled_and_holes_kept_also_across_seams():
    """On the raster: an interior pinhole is filled, a large hole and one on the chunk's edge stay."""
    fg = np.ones((64, 64), bool)
    fg[0:2, :] = False  # open the top so the region is not the whole chunk
    fg[10:13, 10:13] = False  # 9 px: filled
    fg[30:45, 30:45] = False  # 225 px: a hole kept
    fg[50:53, 61:64] = False  # 9 px on the right edge: it may be part of a larger hole next door
    cr = chunk_regions(fg, origin_px=(0.0, 0.0), ds=1.0, min_area_px=100, min_hole_px=50)
    assert cr.closed == [] and len(cr.open) == 1  # touches the chunk's edge
    (region,) = cr.open
    assert len(region.interiors) == 1  # the 15×15 hole; the edge notch is part of the outline
    assert region.area == pytest.approx(64 * 62 - 225 - 9, abs=3)
    assert cr.seam is not None and cr.seam.counts.tolist() == [64 * 62 - 225 - 9] and cr.seam.traced.all()


def test_specks_crossing_a_seam_join_before_the_area_test():
    """Two chunks side by side: a speck cut in two (dropped), a region cut in two small halves (kept)."""
    left = np.zeros((32, 32), bool)
    right = np.zeros((32, 32), bool)
    left[2:6, 28:32], right[2:6, 0:4] = True, True  # 16 + 16 px
    left[10:30, 22:32], right[10:30, 0:10] = True, True  # 200 + 200 px
    a = chunk_regions(left, origin_px=(0, 0), ds=1.0, min_area_px=300)
    b = chunk_regions(right, origin_px=(32, 0), ds=1.0, min_area_px=300)
    assert a.open == [] and b.open == []  # nothing large enough alone
    todo = resolve_seams({(0, 0): a.seam, (0, 1): b.seam}, 300)
    assert {k: v.tolist() for k, v in todo.items()} == {(0, 0): [2], (0, 1): [2]}  # the 400 px region only


def test_pooled_and_in_process_regions_agree(tmp_path):
    full = _speckled((448, 320), seed=9)
    store, plan = _store(tmp_path, full, "pool")
    one = _new(store, plan, min_area=200, min_hole=100)
    two = _new(store, plan, min_area=200, min_hole=100, processes=2)
    assert [g.wkb for g in one] == [g.wkb for g in two]


def test_an_island_inside_a_filled_pinhole_goes_with_it():
    """A pinhole that holds an island big enough to be looked at: filling the hole swallows the
    island's label, which must then be skipped (it crashed the speckled benchmark map)."""
    fg = np.zeros((40, 40), bool)
    fg[5:35, 5:35] = True
    fg[17:22, 17:22] = False  # a 5 x 5 pinhole ...
    fg[18:21, 18:21] = True  # ... with a 3 x 3 island in it
    got = chunk_regions(fg, origin_px=(0.0, 0.0), ds=1.0, min_area_px=5, min_hole_px=30)
    assert len(got.closed) == 1 and not got.open
    assert got.closed[0].area == pytest.approx(30 * 30, abs=2) and not got.closed[0].interiors


def test_default_fills_subcellular_pinholes_and_keeps_holes_the_model_saw(tmp_path):
    """``predict``'s defaults: a pinhole smaller than a cell (16 µm²) is map noise and is filled; a
    hole of 400 µm² (20 µm across: a lumen, a normal island - the demo's truth has one of 587 µm²)
    is kept, as QuPath's Create objects keeps holes by default."""
    from qupath_camseg.predict import PredictOptions

    opts = PredictOptions()
    full = np.zeros((1, 192, 192), np.uint8)
    yy, xx = np.mgrid[0:192, 0:192] + 0.5
    full[0][(xx - 96) ** 2 + (yy - 96) ** 2 <= 70**2] = 230  # 1 map px = 1 µm²
    full[0, 60:80, 60:80] = 10  # 400 µm² hole
    full[0, 120:124, 120:124] = 10  # 16 µm² pinhole
    store, plan = _store(tmp_path, full)
    (region,) = _new(store, plan, min_area=opts.min_area_um2, min_hole=opts.min_hole_um2)
    holes = [shapely.Polygon(h) for h in region.interiors]
    assert len(holes) == 1 and holes[0].area / DS**2 == pytest.approx(400, rel=0.15)
    assert holes[0].contains(shapely.Point(70 * DS, 70 * DS))
