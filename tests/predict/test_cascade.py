"""Cascade prediction (issue 18): the screen decides where the full model looks; where it looks the
map is the single pass's, elsewhere the screen's calibrated probability; the report says how much
tissue the full model examined; resume and the settings key know the cascade.

The networks are test doubles (``DarknessNet`` of ``test_predict.py``: tumour from local darkness),
the full model at 4 µm/px and the screen at 8 µm/px, on synthetic slides at 1 µm/px."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_predict import DarknessNet, _store_map

from qupath_camseg.model import LoadedModel, ModelConfig, ScreenModel
from qupath_camseg.predict import (
    ChunkStore,
    PredictOptions,
    TilePlan,
    examined_tiles,
    predict_slide,
)
from qupath_camseg.predict.cascade import ScreenPass
from qupath_camseg.predict.roi import active_tiles
from qupath_camseg.synthetic import write_synthetic_slide
from qupath_camseg.wsi import detect_tissue, open_slide

SCREEN_MPP = 8.0
LUT = [round(min(1.0, i / 255 * 0.5), 4) for i in range(256)]  # a calibration that halves the screen


def _net(mpp: float, tile: int, sha: str) -> LoadedModel:
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=mpp, tile_px=tile,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    return LoadedModel(DarknessNet().eval(), cfg, None, sha, "cpu")


def _model(threshold: float | None = 0.5) -> LoadedModel:
    lm = _net(4.0, 32, "full-darkness")
    lm.screen = ScreenModel(_net(SCREEN_MPP, 32, "screen-darkness"),
                            {"threshold": threshold, "recall": 0.99, "probability_lut": LUT})
    return lm


def _opts(**kw) -> PredictOptions:
    return PredictOptions(**{"chunk_px": 32, "stripe_chunks": 3, "workers": 2, "batch_size": 8, **kw})


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("cascade")
    tumour, normal = d / "tumour.tif", d / "normal.tif"
    write_synthetic_slide(tumour, width=3072, height=2048, seed=11, mpp=1.0, tile_px=256)
    write_synthetic_slide(normal, width=2048, height=2048, seed=12, mpp=1.0, tile_px=256, tumor=False)
    return tumour, normal


@pytest.fixture(scope="module")
def both(slides, tmp_path_factory):
    """The tumour slide predicted with the cascade and in a single pass."""
    out = tmp_path_factory.mktemp("both")
    casc = predict_slide(slides[0], _model(), out / "cascade", options=_opts())
    single = predict_slide(slides[0], _model(), out / "single", options=_opts(cascade="off"))
    return out, casc, single


def test_report_says_what_the_full_model_examined(both):
    _, casc, single = both
    c = casc.report["cascade"]
    assert single.report["cascade"] == {"on": False}
    assert c["on"] and c["screen_mpp"] == SCREEN_MPP and c["threshold"] == 0.5
    assert c["tiles_single_pass"] == single.report["tiles"]["active"]
    assert 0 < c["tiles_full"] < c["tiles_single_pass"] and c["tiles_screen"] > 0
    assert 0 < c["tissue_examined_fraction"] < 1
    # (tiles on a stripe edge are computed by both stripes, so compare runs, not the grid)
    assert casc.report["tiles"]["computed_this_run"] < single.report["tiles"]["computed_this_run"]
    assert set(c["timings_s"]) == {"screen", "full"} and "screen" in casc.report["timings_s"]
    for name in ("geojson", "heatmap", "report"):
        assert casc.outputs[name].is_file()


def test_map_is_the_single_pass_where_examined_and_the_screen_elsewhere(both, slides):
    out, casc, single = both
    full, ref = _store_map(out / "cascade", "tumour"), _store_map(out / "single", "tumour")
    meta = json.loads((out / "cascade" / "probability" / "tumour" / "meta.json").read_text())
    plan = TilePlan(**{**meta["plan"], "map_size": tuple(meta["plan"]["map_size"])})
    with open_slide(slides[0]) as s:
        single_active = active_tiles(plan, detect_tissue(s), None, PredictOptions().min_tissue)
    assert int(single_active.sum()) == single.report["tiles"]["active"]
    # which tiles ran: a map pixel is the single pass's when every tile over it ran
    screen_dir = out / "cascade" / "probability" / "tumour" / "screen"
    smeta = json.loads((screen_dir / "meta.json").read_text())
    splan = TilePlan(**{**smeta["plan"], "map_size": tuple(smeta["plan"]["map_size"])})
    sp = ScreenPass(ChunkStore(screen_dir, splan, 1, smeta["key"]), splan, np.ones(splan.grid_shape, bool), {}, 0.0)
    active = examined_tiles(sp, plan, single_active, 128, _context())
    assert int(active.sum()) == casc.report["cascade"]["tiles_full"]
    all_run, none_run = _coverage(plan, active, single_active)
    assert all_run.any() and none_run.any()
    np.testing.assert_array_equal(full[all_run], ref[all_run])
    screen = sp.store.read_region((0, 0, *splan.map_size))
    f = plan.ds / splan.ds
    rows = np.minimum(((np.arange(plan.map_size[1]) + 0.5) * f).astype(int), screen.shape[0] - 1)
    cols = np.minimum(((np.arange(plan.map_size[0]) + 0.5) * f).astype(int), screen.shape[1] - 1)
    lut = np.round(np.asarray(LUT) * 255).astype(np.uint8)
    expect = lut[screen[rows[:, None], cols[None, :]]]
    on = none_run & (ref > 0)  # on the tissue (off it both are 0)
    np.testing.assert_array_equal(full[on], expect[on])
    assert (full[none_run] < 128).all()  # the screen's probability there is below its threshold, halved


def _context() -> int:
    from qupath_camseg.predict import context_px

    return context_px(_net(4.0, 32, "x"))


def _coverage(plan: TilePlan, active: np.ndarray, single: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map pixels under single-pass tiles that all ran, and under single-pass tiles none of which ran."""
    w, h = plan.map_size
    n_all, n_run = np.zeros((h, w), int), np.zeros((h, w), int)
    t = plan.tile_px
    for (ty, tx), ran in zip(np.argwhere(single), active[single]):
        y, x = plan.tile_origin(int(ty)), plan.tile_origin(int(tx))
        sl = (slice(max(0, y), max(0, y + t)), slice(max(0, x), max(0, x + t)))
        n_all[sl] += 1
        n_run[sl] += int(ran)
    return (n_all > 0) & (n_run == n_all), (n_all > 0) & (n_run == 0)


def test_regions_agree_with_the_single_pass(both):
    _, casc, single = both
    a, b = casc.report["tumor_area_mm2"], single.report["tumor_area_mm2"]
    assert b > 0 and abs(a - b) <= 0.05 * b


def test_tumour_free_slide_runs_no_full_tile_when_nothing_is_flagged(slides, tmp_path):
    res = predict_slide(slides[1], _model(threshold=1.0), tmp_path, options=_opts())
    c = res.report["cascade"]
    assert c["tiles_full"] == 0 and c["tissue_examined_fraction"] == 0.0 and c["tiles_single_pass"] > 0
    assert res.report["tumor_regions"] == 0 and res.outputs["heatmap"].is_file()
    assert _store_map(tmp_path, "normal").max() <= 128  # the screen's halved probability everywhere


def test_resume_and_settings_key_know_the_cascade(slides, tmp_path):
    first = predict_slide(slides[1], _model(), tmp_path, options=_opts())
    again = predict_slide(slides[1], _model(), tmp_path, options=_opts())
    assert again.skipped and again.report["settings_key"] == first.report["settings_key"]
    off = predict_slide(slides[1], _model(), tmp_path, options=_opts(cascade="off"))
    assert not off.skipped and off.report["settings_key"] != first.report["settings_key"]
    assert not off.report["tiles"]["resumed"] and off.report["tiles"]["computed_this_run"] > 0  # the old map was not reused
    # an interrupted cascade resumes: drop half the chunks, rerun, same map
    (tmp_path / "reports" / "normal.json").unlink()
    predict_slide(slides[1], _model(), tmp_path, options=_opts(overwrite=True))
    ref = _store_map(tmp_path, "normal")
    chunks = sorted((tmp_path / "probability" / "normal").glob("r*_c*.zlib"))
    for p in chunks[len(chunks) // 2:]:
        p.unlink()
    (tmp_path / "reports" / "normal.json").unlink()
    resumed = predict_slide(slides[1], _model(), tmp_path, options=_opts())
    assert resumed.report["tiles"]["resumed"]
    np.testing.assert_array_equal(_store_map(tmp_path, "normal"), ref)


def test_uncalibrated_screen_means_a_single_pass(slides, tmp_path):
    events: list[dict] = []
    res = predict_slide(slides[1], _model(threshold=None), tmp_path, options=_opts(), progress=events.append)
    assert res.report["cascade"] == {"on": False}
    assert any("never calibrated" in e.get("message", "") for e in events)


def test_examined_tiles_match_brute_force(tmp_path):
    """One positive screen pixel marks exactly the tiles within the context of its box."""
    plan = TilePlan.create((4000, 3000), 1.0, 4.0, tile_px=32, chunk_px=32)
    splan = TilePlan.create((4000, 3000), 1.0, 8.0, tile_px=32, chunk_px=32)
    store = ChunkStore(tmp_path / "s", splan, 1, {"k": 1})
    data = np.zeros((1, 32, 32), np.uint8)
    data[0, 5, 7] = 200  # screen px (37, 69): level-0 [296, 304) × [552, 560) ... in chunk (2, 1)
    store.write(2, 1, data)
    sp = ScreenPass(store, splan, np.ones(splan.grid_shape, bool), {}, 0.0)
    single = np.ones(plan.grid_shape, bool)
    for ctx in (0, 10, 40):
        got = examined_tiles(sp, plan, single, 128, ctx)
        x0, y0 = (32 + 7) * 2, (64 + 5) * 2  # the positive pixel in full-map px (2 per screen px)
        brute = np.zeros_like(single)
        for ty in range(plan.grid_shape[0]):
            for tx in range(plan.grid_shape[1]):
                ya, xa = plan.tile_origin(ty), plan.tile_origin(tx)
                brute[ty, tx] = (ya < y0 + 2 + ctx and ya + 32 > y0 - ctx and xa < x0 + 2 + ctx and xa + 32 > x0 - ctx)
        np.testing.assert_array_equal(got, brute)
    assert not examined_tiles(sp, plan, single, 201, 40).any()  # below the threshold: nothing
