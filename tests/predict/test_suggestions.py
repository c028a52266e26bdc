""""Review here" suggestions: they land where the probability is uncertain, spread out, ranked, and
are valid QuPath GeoJSON; ``predict_slide`` writes them (and none with ``suggest=0``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    TISSUE_CLASS,
    QPObject,
    is_ours,
    objects_to_geojson,
    read_geojson,
    validate_qupath_geojson,
    write_geojson,
)
from qupath_camseg.predict import (
    RANK_KEY,
    REVIEW_CLASS,
    UNCERTAINTY_KEY,
    ChunkStore,
    ChunkSummaries,
    TilePlan,
    chunk_uncertainty,
    predict_slide,
    review_objects,
)
from qupath_camseg.predict.suggestions import reviewed_ground, suggestion_cell_px, uncertainty_lut

CHUNK, DS = 64, 2.0  # map px per chunk, level-0 px per map px


def _synthetic_map(size: tuple[int, int]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """``uint8 (1, h, w)``: confident background (2/255) with a confident tumour disc (253/255),
    and three unsure patches (p ≈ 0.5, 0.45, 0.6) of different size; returns the map and the
    patches' map-px boxes, most uncertain area first."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    p = np.full((h, w), 2, np.uint8)
    p[(xx - 100) ** 2 + (yy - 100) ** 2 <= 40**2] = 253
    patches = [(296, 64, 48, 48, 128), (120, 248, 40, 40, 115), (328, 256, 24, 24, 153)]  # on the 8-px cells
    for x, y, pw, ph, v in patches:
        p[y:y + ph, x:x + pw] = v
    return p[None], [b[:4] for b in patches]


def _summaries(tmp_path, size=(448, 320), *, cell_px: int):
    plan = TilePlan.create((int(size[0] * DS), int(size[1] * DS)), 0.5, 1.0, tile_px=32, chunk_px=CHUNK)
    store = ChunkStore(tmp_path / "store", plan, 1, {"test": 1})
    full, patches = _synthetic_map(size)
    rows, cols = plan.chunk_shape
    for r in range(rows):
        for c in range(cols):
            x, y, w, h = plan.chunk_box(r, c)
            store.write(r, c, np.ascontiguousarray(full[:, y:y + h, x:x + w]))
    with ChunkSummaries(store, measure_px=32, threshold_q=128, uncertainty_px=cell_px) as s:
        return s.finish(), plan, full, patches


def test_uncertainty_is_one_at_the_threshold_and_zero_at_certainty():
    lut = uncertainty_lut(128)
    assert lut[128] == pytest.approx(1.0, abs=1e-3) and lut[0] == 0 and lut[255] == 0
    assert np.all(np.diff(lut[:128]) >= 0) and np.all(np.diff(lut[128:]) <= 0)
    lut = uncertainty_lut(round(0.3 * 255))  # an asymmetric threshold: 0 at both ends still
    assert lut[0] == 0 and lut[255] == 0 and lut[round(0.3 * 255)] == pytest.approx(1.0, abs=1e-3)


def test_chunk_uncertainty_sums_cells_including_partial_ones():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (2, 40, 52), dtype=np.uint8)
    grid = chunk_uncertainty(data, 16, 128)
    u = uncertainty_lut(128)[data].max(axis=0)
    assert grid.shape == (3, 4)
    byte = 0.5 / 255  # u is looked up as a byte
    assert grid[0, 0] == pytest.approx(u[:16, :16].sum(), abs=256 * byte)
    assert grid[2, 3] == pytest.approx(u[32:, 48:].sum(), abs=32 * byte)  # the partial corner cell (8 x 4)
    assert grid.sum() == pytest.approx(u.sum(), abs=u.size * byte)
    assert grid.dtype == np.float32


def test_suggestions_land_where_the_map_is_uncertain_spread_and_ranked(tmp_path):
    summaries, plan, full, patches = _summaries(tmp_path, cell_px=8)
    objs = review_objects(summaries, plan, n=20, box_px=48, cell_px=8)
    # confident background and the confident disc hold no suggestion; each unsure patch holds one
    assert 3 <= len(objs) <= 6, [o.geometry.bounds for o in objs]
    assert [o.measurements[RANK_KEY] for o in objs] == list(range(1, len(objs) + 1))
    assert all(o.classification == REVIEW_CLASS and o.name == f"camseg Review {i + 1}" and is_ours(o)
               for i, o in enumerate(objs))
    u = uncertainty_lut(128)[full[0]]
    for o, (x, y, w, h) in zip(objs[:3], patches):  # most uncertain area first
        patch = shapely.box(x * DS, y * DS, (x + w) * DS, (y + h) * DS)
        assert o.geometry.intersection(patch).area >= 0.9 * min(patch.area, o.geometry.area)
        x0, y0, x1, y1 = (round(v / DS) for v in o.geometry.bounds)
        assert o.measurements[UNCERTAINTY_KEY] == pytest.approx(u[y0:y1, x0:x1].mean(), abs=2e-3)
    scores = [o.measurements[UNCERTAINTY_KEY] * o.geometry.area for o in objs]
    assert scores == sorted(scores, reverse=True)
    for i, a in enumerate(objs):  # spread: no two boxes overlap
        for b in objs[i + 1:]:
            assert a.geometry.intersection(b.geometry).area == 0
    validate_qupath_geojson(objects_to_geojson(objs))


def test_a_confident_map_gets_no_suggestion_and_n_caps_them(tmp_path):
    summaries, plan, _, _ = _summaries(tmp_path, cell_px=8)
    assert len(review_objects(summaries, plan, n=2, box_px=48, cell_px=8)) == 2
    assert review_objects(summaries, plan, n=0, box_px=48, cell_px=8) == []
    for s in summaries:  # everything certain
        s.uncertainty = np.zeros_like(s.uncertainty)
    assert review_objects(summaries, plan, n=20, box_px=48, cell_px=8) == []


def test_cell_size_divides_the_chunk_and_bounds_the_grid():
    small = TilePlan.create((4096, 4096), 0.5, 1.0, tile_px=256, chunk_px=512)
    assert suggestion_cell_px(small, 512) == 64
    huge = TilePlan.create((200_000, 400_000), 0.25, 0.5, tile_px=512, chunk_px=512)  # a 100k x 200k map
    cell = suggestion_cell_px(huge, 64)
    assert 512 % cell == 0 and (100_000 / cell) * (200_000 / cell) <= (1 << 20)


def test_predict_slide_writes_review_suggestions(tmp_path):
    from tests.predict.test_predict import _fake_model, _opts  # the darkness test network
    from qupath_camseg.synthetic import write_synthetic_slide

    slide = tmp_path / "slide.tif"
    write_synthetic_slide(slide, width=2048, height=1536, seed=11, mpp=1.0, tile_px=256)
    res = predict_slide(slide, _fake_model(), tmp_path / "out", options=_opts(suggest=5, suggest_um=160.0))
    data = json.loads(res.outputs["geojson"].read_text())
    validate_qupath_geojson(data)
    reviews = [o for o in read_geojson(res.outputs["geojson"]) if o.classification == REVIEW_CLASS]
    assert 1 <= len(reviews) <= 5 == res.report["settings"]["suggest"]
    assert res.report["suggestions"] == len(reviews)
    assert res.report["tumor_regions"] == sum(o.classification == "Tumor" for o in res.objects
                                              if o.object_type == "annotation")
    for o in reviews:  # about 160 µm wide, inside the slide, and really unsure
        x0, y0, x1, y1 = o.geometry.bounds
        assert 0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 1536 and x1 - x0 == pytest.approx(160, rel=0.3)
        assert o.measurements[UNCERTAINTY_KEY] * (x1 - x0) >= 1.0  # at least a line of full uncertainty across
    none = predict_slide(slide, _fake_model(), tmp_path / "none", options=_opts(suggest=0))
    assert none.report["suggestions"] == 0
    assert "settings_key" in none.report and none.report["settings_key"] != res.report["settings_key"]


def test_mildly_unsure_but_right_tissue_does_not_outrank_a_thin_rim_at_the_threshold(tmp_path):
    """Normal tissue the model calls p = 0.2 (right, if unsure) gets no box; a 4 px rim at p = 0.55
    around it (a false positive the model is unsure of) does."""
    size = (448, 320)
    plan = TilePlan.create((int(size[0] * DS), int(size[1] * DS)), 0.5, 1.0, tile_px=32, chunk_px=CHUNK)
    store = ChunkStore(tmp_path / "store", plan, 1, {"test": 2})
    full = np.zeros((1, size[1], size[0]), np.uint8)
    full[0, 40:280, 40:400] = 51  # p = 0.2
    full[0, 36:40, 36:404] = 140  # the rim, top edge only: p = 0.55
    rows, cols = plan.chunk_shape
    for r in range(rows):
        for c in range(cols):
            x, y, w, h = plan.chunk_box(r, c)
            store.write(r, c, np.ascontiguousarray(full[:, y:y + h, x:x + w]))
    with ChunkSummaries(store, measure_px=32, threshold_q=128, uncertainty_px=8) as s:
        objs = review_objects(s.finish(), plan, n=20, box_px=48, cell_px=8)
    assert objs and all(o.geometry.intersects(shapely.box(36 * DS, 36 * DS, 404 * DS, 40 * DS)) for o in objs)


def test_suggestions_stay_inside_the_roi_and_are_ranked_without_gaps(tmp_path):
    summaries, plan, _, _ = _summaries(tmp_path, cell_px=8)
    everywhere = review_objects(summaries, plan, n=20, box_px=48, cell_px=8)
    x0, _, x1, _ = everywhere[0].geometry.bounds
    roi = shapely.box(0, 0, (x0 + x1) / 2 + 3.5, plan.map_size[1] * plan.ds)  # cuts the top box, off the cell grid
    inside = review_objects(summaries, plan, n=20, box_px=48, cell_px=8, roi=roi)
    assert inside and len(inside) <= len(everywhere)
    assert all(roi.buffer(1e-6).contains(o.geometry) for o in inside)
    assert any(o.geometry.area < everywhere[0].geometry.area for o in inside)  # a box cut at the ROI's edge
    assert [o.measurements["review rank"] for o in inside] == list(range(1, len(inside) + 1))
    validate_qupath_geojson(objects_to_geojson(inside))


def test_a_sharp_border_under_a_pixel_wide_is_suggested_and_stray_pixels_are_not(tmp_path):
    """A calibrated model is sharp: its unsure pixels are a border a pixel wide or less (the
    correction loop's models, at temperatures of 0.15-0.2, cross the threshold within half a pixel:
    their best boxes summed 0.5-0.96 lines). A box crossed by a border half a pixel wide (mean
    uncertainty 0.5/48 here, far below 0.05 and below one whole line) is suggested; a box holding
    a few stray unsure pixels, less than a quarter of a line across it, is not."""
    summaries, plan, _, _ = _summaries(tmp_path, cell_px=8)
    for s in summaries:
        s.uncertainty = np.zeros_like(s.uncertainty)
    first = summaries[0]
    first.uncertainty[:6, 0] = 4.0  # half a map px wide, 48 px long: 4 per 8-px cell, down six cells
    (box,) = review_objects(summaries, plan, n=20, box_px=48, cell_px=8)
    assert box.measurements[UNCERTAINTY_KEY] == pytest.approx(24 / 48**2, abs=1e-4)  # stored to 4 places
    first.uncertainty[:6, 0] = 0.0
    first.uncertainty[2, 2] = 10.0  # 10 unsure pixels: less than a quarter of a line across a 48 px box
    assert review_objects(summaries, plan, n=20, box_px=48, cell_px=8) == []


def test_ground_the_pathologist_annotated_gets_no_box(tmp_path):
    """The model may stay unsure on ground it is yet to be trained on; a look there teaches nothing
    new, so that doubt does not count: the box moves to the next unsure place."""
    summaries, plan, _, patches = _summaries(tmp_path, cell_px=8)
    everywhere = review_objects(summaries, plan, n=20, box_px=48, cell_px=8)
    x, y, w, h = patches[0]
    first = shapely.box(x * DS, y * DS, (x + w) * DS, (y + h) * DS)
    assert everywhere[0].geometry.intersection(first).area > 0.9 * first.area
    labelled = first.buffer(8 * DS)  # the pathologist outlined that unsure patch and a little more
    left = review_objects(summaries, plan, n=20, box_px=48, cell_px=8, reviewed=labelled)
    assert left and all(o.geometry.intersection(first).area == 0 for o in left)
    assert len(left) < len(everywhere)
    half = shapely.box(0, 0, (x + w / 2) * DS, plan.map_size[1] * plan.ds)  # half of the patch: half its score
    (cut, *_) = review_objects(summaries, plan, n=1, box_px=48, cell_px=8, reviewed=half)
    assert cut.geometry.intersects(first)
    u0 = everywhere[0].measurements[UNCERTAINTY_KEY]
    assert cut.measurements[UNCERTAINTY_KEY] < 0.75 * u0


def test_reviewed_ground_is_what_the_pathologist_labelled():
    box = shapely.box
    mine = [QPObject(box(0, 0, 10, 10), classification="Tumor"), QPObject(box(20, 0, 30, 10), classification="Normal"),
            QPObject(box(40, 0, 50, 10), classification="Ignore*")]
    not_labels = [QPObject(box(0, 0, 99, 99), classification=TISSUE_CLASS),  # the analysed tissue, locked
                  QPObject(box(60, 0, 70, 10)),  # no class: a region of interest, not a label
                  QPObject(box(80, 0, 90, 10), classification=REVIEW_CLASS),  # a review box kept
                  QPObject(box(0, 20, 10, 30), classification="Tumor", name="camseg Tumor",
                           metadata=dict(CAMSEG_METADATA))]  # our prediction, untouched
    ground = reviewed_ground(mine + not_labels)
    assert ground is not None and ground.area == pytest.approx(300)
    assert reviewed_ground(not_labels) is None


def test_predict_project_keeps_review_boxes_off_annotated_ground(tmp_path):
    """New outlines move the review boxes: the image is predicted again (outputs only) although
    model and settings are the same; with nothing new it is skipped as before."""
    from tests.predict.test_predict import _fake_model, _opts  # the darkness test network
    from qupath_camseg.predict import predict_project
    from qupath_camseg.synthetic import write_synthetic_project

    proj = tmp_path / "p"
    write_synthetic_project(proj, slides=1, width=2048, height=1536, seed=11, door="files")
    opts = _opts(suggest=3, suggest_um=160.0)
    predictions = proj / "camseg" / "predictions" / "1.geojson"
    annotations = proj / "camseg" / "annotations" / "1.geojson"

    def run() -> tuple[bool, list[QPObject]]:
        (res,) = predict_project(proj, _fake_model(), options=opts, project_write=False)
        return res.skipped, [o for o in read_geojson(predictions) if o.classification == REVIEW_CLASS]

    skipped, before = run()
    assert not skipped and before
    assert run()[0]  # same model, settings and outlines: skipped
    looked = before[0].geometry
    write_geojson(annotations, [*read_geojson(annotations), QPObject(looked, classification="Normal")])
    skipped, after = run()
    assert not skipped and after and all(o.geometry.intersection(looked).area < 0.25 * looked.area for o in after)
    assert run()[0]


def test_an_unreadable_annotation_file_costs_a_note_not_the_run(tmp_path):
    from tests.predict.test_predict import _fake_model, _opts  # the darkness test network
    from qupath_camseg.predict import predict_project
    from qupath_camseg.synthetic import write_synthetic_project

    proj = tmp_path / "p"
    write_synthetic_project(proj, slides=1, width=2048, height=1536, seed=11, door="files")
    annotations = proj / "camseg" / "annotations" / "1.geojson"
    annotations.write_text("{not json", encoding="utf-8")
    events: list[dict] = []
    (res,) = predict_project(proj, _fake_model(), options=_opts(suggest=3, suggest_um=160.0), project_write=False,
                             progress=events.append)
    assert not res.skipped and any(o.classification == REVIEW_CLASS for o in res.objects)
    (note,) = [e for e in events if e["event"] == "note" and "annotations not read" in e["message"]]
    assert note["image"] == res.image and "\n" not in note["message"] and "1.geojson" in note["message"]
    assert annotations.read_text(encoding="utf-8") == "{not json"  # the user's file is left as it was
