"""Whole-slide inference: blending against a whole-slide reference, resume, ROI halves, outputs,
and Dice of a model trained by ``qupath_camseg.train.loop`` on a held-out synthetic slide."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import shapely
import torch
import torch.nn.functional as F
from shapely.geometry import box

from qupath_camseg.annotations import (
    TISSUE_CLASS,
    QPObject,
    is_ours,
    read_geojson,
    validate_qupath_geojson,
    write_geojson,
)
from qupath_camseg.errors import CamsegError
from qupath_camseg.model import ModelConfig
from qupath_camseg.model import LoadedModel
from qupath_camseg.predict import ChunkStore, PredictOptions, TilePlan, blend_window, predict_project, predict_slide
from qupath_camseg.predict.roi import active_tiles as _active_tiles
from qupath_camseg.synthetic import write_synthetic_slide
from qupath_camseg.wsi import detect_tissue, open_slide

MODEL_MPP, TILE = 4.0, 32


class DarknessNet(torch.nn.Module):
    """Test double for a trained network: tumour logit from local darkness (11×11 mean, edge-padded,
    so a tile's border differs from its interior, as with a real CNN - blending must hide that)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.avg_pool2d(F.pad(x.mean(1, keepdim=True), (5, 5, 5, 5), mode="replicate"), 11, stride=1)
        tumour = (170.0 - g) / 12.0
        return torch.cat([torch.zeros_like(tumour), tumour], 1)


def _fake_model(mpp: float = MODEL_MPP) -> LoadedModel:
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=mpp, tile_px=TILE,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    return LoadedModel(DarknessNet().eval(), cfg, None, f"darkness-net-{mpp}", "cpu")


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    path = d / "slide.tif"
    write_synthetic_slide(path, width=2048, height=1536, seed=11, mpp=1.0, tile_px=256)
    return path


def _opts(**kw) -> PredictOptions:
    base = {"chunk_px": 32, "stripe_chunks": 3, "workers": 2, "batch_size": 8}
    return PredictOptions(**{**base, **kw})


def _store_map(out, entry="slide") -> np.ndarray:
    meta = json.loads((out / "probability" / entry / "meta.json").read_text())
    w, h = meta["plan"]["map_size"]
    files = sorted((out / "probability" / entry).glob("r*_c*.zlib"))
    assert files, "no chunk written"
    plan = TilePlan(**{**meta["plan"], "map_size": tuple(meta["plan"]["map_size"])})
    store = ChunkStore.__new__(ChunkStore)
    store.folder, store.plan, store.n_channels = out / "probability" / entry, plan, meta["n_channels"]
    return store.read_region((0, 0, w, h))


@pytest.fixture(scope="module")
def whole(slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    events: list[dict] = []
    res = predict_slide(slide, _fake_model(), out, options=_opts(), progress=events.append)
    return out, res, events


def test_window_and_plan():
    w = blend_window(64, floor=0.01)
    assert w.shape == (64, 64) and w.min() >= 0.01 and w.max() <= 1.0
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    plan = TilePlan.create((1000, 700), 0.5, 2.0, tile_px=32, overlap=0.25, chunk_px=48)
    assert plan.map_size == (250, 175) and plan.stride_px == 24
    ny, nx = plan.grid_shape
    covered = np.zeros((175, 250), int)
    for k in range(nx):
        x = plan.tile_origin(k)
        covered[:, max(0, x):max(0, x + 32)] += 1
        # tiles_overlapping agrees with brute force for a few ranges
    for a, b in [(0, 1), (10, 60), (100, 250), (249, 250)]:
        brute = [k for k in range(nx) if plan.tile_origin(k) < b and plan.tile_origin(k) + 32 > a]
        assert list(plan.tiles_overlapping(a, b)) == brute
    assert covered.min() >= 1  # every map column lies in a tile
    assert plan.tile_origin(ny - 1) + 32 >= 175


def _reference_map(slide, lm, plan, active) -> np.ndarray:
    """The whole-slide blended map computed naively in float64 (the definition)."""
    t, (w, h) = plan.tile_px, plan.map_size
    win = blend_window(t).astype(np.float64)
    acc = np.zeros((h + 2 * t, w + 2 * t))
    wsum = np.zeros_like(acc)
    with open_slide(slide) as s, torch.no_grad():
        for ty, tx in np.argwhere(active):
            x, y = plan.tile_origin(int(tx)), plan.tile_origin(int(ty))
            rgb = s.read_region_mpp((x * plan.ds, y * plan.ds, t * plan.ds, t * plan.ds), lm.config.mpp, out_size=(t, t))
            inp = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
            p = torch.softmax(lm.model(inp), 1)[0, 1].double().numpy()
            acc[y + t:y + 2 * t, x + t:x + 2 * t] += p * win
            wsum[y + t:y + 2 * t, x + t:x + 2 * t] += win
    prob = np.where(wsum > 0, acc / np.maximum(wsum, 1e-300), 0)[t:t + h, t:t + w]
    return np.round(prob * 255).astype(np.uint8)


def _on_tissue(tissue, plan) -> np.ndarray:
    """``bool (h, w)`` map pixels whose centre falls in the tissue mask grown by one mask pixel."""
    from scipy import ndimage

    grown = ndimage.binary_dilation(tissue.mask, np.ones((3, 3), bool))
    w, h = plan.map_size
    cols = np.minimum(((np.arange(w) + 0.5) * plan.ds / tissue.downsample).astype(int), grown.shape[1] - 1)
    rows = np.minimum(((np.arange(h) + 0.5) * plan.ds / tissue.downsample).astype(int), grown.shape[0] - 1)
    return grown[rows[:, None], cols[None, :]]


def test_chunked_striped_map_equals_whole_slide_reference(slide, whole):
    """The chunked, striped, resumable map equals the naive whole-slide blend, on the tissue
    (off it, the default tissue mask sets 0)."""
    out, _, _ = whole
    lm = _fake_model()
    with open_slide(slide) as s:
        plan = TilePlan.create(s.dimensions, s.mpp, MODEL_MPP, tile_px=TILE, chunk_px=32, stripe_chunks=3)
        tissue = detect_tissue(s)
        active = _active_tiles(plan, tissue, None, PredictOptions().min_tissue)
    assert plan.chunk_shape[1] > 3 * plan.stripe_chunks  # several stripes and many bands: the hard path
    ref = _reference_map(slide, lm, plan, active)
    got = _store_map(out)
    assert got.shape == ref.shape == (plan.map_size[1], plan.map_size[0])
    on = _on_tissue(tissue, plan)
    assert 0.2 < on.mean() < 0.95
    assert np.abs(got.astype(int) - ref.astype(int))[on].max() <= 1
    assert not got[~on].any()
    assert (ref[on] > 0).mean() > 0.2  # the comparison covers real predictions, not an empty map


def test_without_tissue_mask_glass_keeps_its_prediction(slide, whole, tmp_path):
    out, res, _ = whole
    res2 = predict_slide(slide, _fake_model(), tmp_path, options=_opts(mask_to_tissue=False))
    masked, unmasked = _store_map(out), _store_map(tmp_path)
    with open_slide(slide) as s:
        plan = TilePlan.create(s.dimensions, s.mpp, MODEL_MPP, tile_px=TILE, chunk_px=32, stripe_chunks=3)
        on = _on_tissue(detect_tissue(s), plan)
    np.testing.assert_array_equal(masked[on], unmasked[on])
    assert unmasked[~on].any() and not masked[~on].any()
    assert res2.report["settings_key"] != res.report["settings_key"]  # a different map: no reuse


def test_a_calibrated_model_writes_calibrated_maps_and_a_new_key(slide, whole, tmp_path):
    """Same weights with a calibration: the stored map is softmax(logits / T + bias), and the
    settings key differs (a store of raw probabilities is never reused for calibrated ones)."""
    from qupath_camseg.model import Calibration

    out, res, _ = whole
    lm = _fake_model()
    lm.config.calibration = Calibration(0.5, (0.0, -1.0))
    res2 = predict_slide(slide, lm, tmp_path, options=_opts())
    assert res2.report["settings_key"] != res.report["settings_key"]
    raw, cal = _store_map(out).astype(np.float64) / 255, _store_map(tmp_path).astype(np.float64) / 255
    on = (raw > 0.05) & (raw < 0.95)  # where uint8 rounding leaves the logit well defined
    assert on.mean() > 0.01
    logit = np.log(raw[on] / (1 - raw[on]))
    want = 1 / (1 + np.exp(-(logit / 0.5 - 1.0)))
    # blending averages probabilities of overlapping tiles, so this holds where one tile dominates:
    # compare typical values, not every pixel
    assert np.median(np.abs(cal[on] - want)) < 0.02


def test_outputs_geojson_heatmap_report(slide, whole):
    out, res, events = whole
    kinds = [e["event"] for e in events]
    assert kinds[0] == "note" and "resampled" in events[0]["message"]  # 1 µm/px slide, 4 µm/px model
    assert kinds[1] == "start" and kinds[-1] == "done" and "progress" in kinds
    # tiles straddling a stripe edge are computed by both stripes (tiny stripes here: many)
    assert events[1]["tiles"] == res.report["tiles"]["computed_this_run"] >= res.report["tiles"]["active"] > 0
    data = json.loads(res.outputs["geojson"].read_text())
    validate_qupath_geojson(data)
    objs = read_geojson(res.outputs["geojson"])
    assert objs and all(is_ours(o) for o in objs)
    tiles = [o for o in objs if o.object_type == "tile"]
    regions = [o for o in objs if o.object_type == "annotation" and o.classification == "Tumor"]
    assert tiles and regions
    # one locked camseg Tissue annotation: the analysed tissue, its area the report's
    (tissue,) = [o for o in objs if o.classification == TISSUE_CLASS]
    assert tissue.object_type == "annotation" and tissue.locked and tissue.name == TISSUE_CLASS
    assert tissue.geometry.area * 1e-6 == pytest.approx(res.report["tissue_area_mm2"], rel=0.05)
    assert res.report["tumor_regions"] == len(regions) and res.report["tissue_source"] == "auto"
    assert {o.classification for o in tiles} <= {"Tumor", "Other"}
    prob = _store_map(out).astype(np.float64) / 255
    ds = MODEL_MPP / 1.0
    for o in tiles[:: max(1, len(tiles) // 15)]:
        x0, y0, x1, y1 = (round(v / ds) for v in o.geometry.bounds)
        mean = prob[y0:y1, x0:x1].mean()
        assert o.measurements["Tumor probability (mean)"] == pytest.approx(mean, abs=2e-3)
        assert o.classification == ("Tumor" if mean > 0.5 else "Other")
    # annotations: the thresholded map, merged across chunk seams into connected regions
    from skimage.measure import label

    fg = prob >= 0.5
    lab = label(fg, connectivity=1)
    sizes = np.bincount(lab.ravel())[1:] * (ds**2)
    keep_ids = np.flatnonzero(sizes >= PredictOptions().min_area_um2) + 1
    big = np.isin(lab, keep_ids)
    from qupath_camseg.annotations import rasterize

    h, w = prob.shape
    drawn = rasterize([(o.geometry, 1) for o in regions], (0, 0, w * ds, h * ds), (w, h)) > 0
    assert (drawn & big).sum() / (drawn | big).sum() > 0.9
    # the pieces of one region in different chunks are merged into one annotation
    assert max(o.geometry.area for o in regions) == pytest.approx(sizes.max(), rel=0.05)
    assert len(regions) <= len(keep_ids) + 2
    assert any(len(o.geometry.interiors) for o in regions)  # holes are kept
    area_px = sum(o.geometry.area for o in regions)
    assert area_px == pytest.approx(big.sum() * ds**2, rel=0.05)
    assert res.report["tumor_area_mm2"] == pytest.approx(area_px * 1e-6, rel=1e-6)
    assert 0 < res.report["tissue_area_mm2"] < 2.048 * 1.536
    # heatmap: pixels = the map, and its physical size = the slide's
    with open_slide(res.outputs["heatmap"], backend="openslide") as h, open_slide(slide) as s:
        assert h.mpp == pytest.approx(MODEL_MPP)
        assert abs(h.dimensions[0] * h.mpp - s.dimensions[0] * s.mpp) < h.mpp
        assert abs(h.dimensions[1] * h.mpp - s.dimensions[1] * s.mpp) < h.mpp
        np.testing.assert_array_equal(h.read_region((0, 0), 0, h.dimensions)[..., 0], np.round(prob * 255))
    report = json.loads(res.outputs["report"].read_text())
    for key in ("model", "slide_mpp", "map_mpp", "tiles", "tissue_area_mm2", "tumor_area_mm2", "timings_s",
                "versions", "device", "settings"):
        assert key in report


def test_resume_is_bit_identical_and_rerun_skips(slide, whole, tmp_path):
    out, res, _ = whole
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    chunks = sorted((copy / "probability" / "slide").glob("r*_c*.zlib"))
    rows = sorted({int(c.name[1:6]) for c in chunks})
    for c in chunks:  # as after a kill: the lower part of the map is missing
        if int(c.name[1:6]) >= rows[len(rows) // 2]:
            c.unlink()
    (copy / "reports" / "slide.json").unlink()  # as after a crash: not finished
    res2 = predict_slide(slide, _fake_model(), copy, options=_opts())
    assert 0 < res2.report["tiles"]["computed_this_run"] < res.report["tiles"]["computed_this_run"]
    for c in sorted((out / "probability" / "slide").glob("r*_c*.zlib")):
        assert (copy / "probability" / "slide" / c.name).read_bytes() == c.read_bytes(), c.name
    assert res2.outputs["heatmap"].read_bytes() == res.outputs["heatmap"].read_bytes()
    # finished → skipped; only a post-processing change → reuses the map; --overwrite → recomputes
    assert predict_slide(slide, _fake_model(), copy, options=_opts()).skipped
    res3 = predict_slide(slide, _fake_model(), copy, options=_opts(threshold=0.7))
    assert not res3.skipped and res3.report["tiles"]["computed_this_run"] == 0
    assert res3.report["tumor_area_mm2"] < res.report["tumor_area_mm2"]
    res4 = predict_slide(slide, _fake_model(), copy, options=_opts(overwrite=True))
    assert res4.report["tiles"]["computed_this_run"] == res.report["tiles"]["computed_this_run"]


def test_roi_halves_match_whole_slide(slide, whole, tmp_path):
    out, _, _ = whole
    full = _store_map(out).astype(int)
    with open_slide(slide) as s:
        w0, h0 = s.dimensions
    cut = 1000.0  # level-0 x of the cut (not on a tile or chunk boundary)
    ds = MODEL_MPP / 1.0
    for name, geom, cols in (("left", box(0, 0, cut, h0), slice(0, int(cut / ds) - 2)),
                             ("right", box(cut, 0, w0, h0), slice(int(cut / ds) + 2, None))):
        roi = tmp_path / f"{name}.geojson"
        write_geojson(roi, [QPObject(geom, classification="Region*")])
        res = predict_slide(slide, _fake_model(), tmp_path / name, options=_opts(roi=str(roi)))
        part = _store_map(tmp_path / name).astype(int)
        assert np.abs(part[:, cols] - full[:, cols]).max() <= 1
        other = slice(int(cut / ds) + 1, None) if name == "left" else slice(0, int(cut / ds) - 1)
        assert part[:, other].max() == 0  # nothing outside the ROI
        assert res.report["tiles"]["active"] < len(np.argwhere(full >= 0))
        for o in read_geojson(res.outputs["geojson"]):
            assert geom.buffer(1e-6).contains(o.geometry)


def test_model_finer_than_slide_is_refused(slide, tmp_path):
    with pytest.raises(CamsegError, match=r"0\.25 µm/px.*slide.*1 µm/px"):
        predict_slide(slide, _fake_model(mpp=0.25), tmp_path, options=_opts())


# --------------------------------------------------------------------------- trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic project and a small model trained on two of its slides by ``train``."""
    from qupath_camseg.synthetic import write_synthetic_project
    from qupath_camseg.train import TrainConfig, train

    d = tmp_path_factory.mktemp("trained")
    write_synthetic_project(d / "proj", slides=3, width=2048, height=2048, seed=3, mpp=1.0, door="files")
    held_out = "tumor_003.tif"
    cfg = TrainConfig(mpp=2.0, tile_px=128, steps=45, lr=3e-3, batch_size=8, tiles_per_epoch=160, max_val_tiles=32,
                      arch={"name": "unet", "width": 8, "depth": 3}, val_images=(held_out,), device="cpu",
                      workers=0, seed=0)
    train(d / "proj", d / "model", cfg)
    return d / "proj", d / "model", held_out


@pytest.mark.slow
def test_trained_model_dice_on_held_out_slide(trained):
    proj, model, held_out = trained
    ann = proj / "camseg" / "annotations"
    before = {p.name: p.read_bytes() for p in ann.glob("*.geojson")}
    events: list[dict] = []
    (res,) = predict_project(proj, model, images=[held_out], options=PredictOptions(workers=2),
                             progress=events.append)
    assert res.outputs["geojson"] == proj / "camseg" / "predictions" / f"{res.entry_id}.geojson"
    validate_qupath_geojson(json.loads(res.outputs["geojson"].read_text()))
    pred = shapely.union_all([o.geometry for o in read_geojson(res.outputs["geojson"])
                              if o.object_type == "annotation" and o.classification == "Tumor"])
    truth_objs = read_geojson(ann / f"{res.entry_id}.geojson")
    truth = shapely.union_all([o.geometry for o in truth_objs if o.classification == "Tumor"])
    dice = 2 * pred.intersection(truth).area / (pred.area + truth.area)
    assert dice >= 0.8, f"Dice {dice:.3f} on {held_out}"
    # the user's (ground-truth) annotation files are untouched; no QuPath here → a note says so
    assert {p.name: p.read_bytes() for p in ann.glob("*.geojson")} == before
    assert any(e["event"] == "note" and "not written into the QuPath project" in e["message"] for e in events)


@pytest.mark.parametrize("n_channels", [2, 3])
def test_forward_equals_softmax_of_the_logits(n_channels):
    """Two classes take the sigmoid(l1 - l0) shortcut; it must equal the softmax (and 3 classes too)."""
    from qupath_camseg.predict.inference import _forward

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, n_channels, 3, padding=1).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    got = _forward(model, rgb, torch.device("cpu"), False)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(rgb).permute(0, 3, 1, 2).float()), dim=1)[:, 1:]
    assert got.shape == (2, n_channels - 1, 32, 32)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_channels", [2, 3])
def test_forward_applies_the_calibration_and_is_unchanged_without_it(n_channels):
    """A calibrated folder: softmax(logits / T + bias); none: bit for bit the raw softmax path."""
    from qupath_camseg.model import Calibration
    from qupath_camseg.predict.inference import _forward

    torch.manual_seed(1)
    model = torch.nn.Conv2d(3, n_channels, 3, padding=1).eval()
    rgb = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    bias = [0.3, -1.7, 0.5][:n_channels]
    cal = Calibration(0.4, bias)
    got = _forward(model, rgb, torch.device("cpu"), False, calibration=cal)
    with torch.no_grad():
        logits = model(torch.from_numpy(rgb).permute(0, 3, 1, 2).float())
        ref = torch.softmax(logits / 0.4 + torch.tensor(bias).view(1, -1, 1, 1), dim=1)[:, 1:]
        raw = torch.softmax(logits, dim=1)[:, 1:]
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)  # × (1 / T) vs / T: float rounding
    assert (got - raw).abs().max() > 0.05
    uncal = _forward(model, rgb, torch.device("cpu"), False, calibration=None)
    assert torch.equal(uncal, _forward(model, rgb, torch.device("cpu"), False))
    if n_channels == 2:  # the sigmoid shortcut of the uncalibrated path, exactly as before
        assert torch.equal(uncal, torch.sigmoid(logits[:, 1:] - logits[:, :1]))


@pytest.mark.multiprocessing
def test_reader_processes_and_pooled_summaries_give_identical_outputs(slide, whole, tmp_path, monkeypatch):
    """The GPU configuration (tiles read by DataLoader worker processes, chunks traced on a process
    pool during inference) must write exactly what the threaded, in-process path writes."""
    import qupath_camseg.predict.slide as predict_mod
    import qupath_camseg.predict.summaries as outputs_mod

    out, res, _ = whole
    monkeypatch.setattr(predict_mod.os, "cpu_count", lambda: 8)  # 2 workers → 2 summary processes
    started = []
    real_init = outputs_mod.ChunkSummaries.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        started.append(self._pool is not None)

    monkeypatch.setattr(outputs_mod.ChunkSummaries, "__init__", spy)
    res2 = predict_slide(slide, _fake_model(), tmp_path, options=_opts(readers="processes"))
    assert started == [True]
    assert res2.report["tiles"]["computed_this_run"] == res.report["tiles"]["computed_this_run"]
    chunks = sorted((out / "probability" / "slide").glob("r*_c*.zlib"))
    assert len(chunks) >= 32
    for c in chunks:
        assert (tmp_path / "probability" / "slide" / c.name).read_bytes() == c.read_bytes(), c.name
    assert res2.outputs["heatmap"].read_bytes() == res.outputs["heatmap"].read_bytes()

    def objects(path):  # every field but the random per-object UUID
        return [(o.object_type, o.classification, o.name, o.geometry.wkb, o.measurements)
                for o in read_geojson(path)]

    assert objects(res2.outputs["geojson"]) == objects(res.outputs["geojson"])
    with pytest.raises(ValueError, match="readers must be"):
        predict_slide(slide, _fake_model(), tmp_path / "bad", options=_opts(readers="gpu", overwrite=True))


@pytest.mark.multiprocessing
@pytest.mark.parametrize("readers", ["threads", "processes"])
def test_a_corrupt_tile_is_a_one_line_error_with_either_reader(slide, tmp_path, readers):
    """Reader processes re-raise a worker's error with its traceback as message; it must come out
    as the same one-line error as with threads."""
    import tifffile

    from qupath_camseg.errors import SlideReadError

    data = bytearray(slide.read_bytes())
    with tifffile.TiffFile(slide) as tif:
        for page in list(tif.pages)[:3]:  # the levels inference reads; tissue detection's is intact
            for off, n in zip(page.dataoffsets, page.databytecounts):
                data[off + 2:off + n] = b"\xff" * (n - 2)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    with pytest.raises(SlideReadError) as info:
        predict_slide(bad, _fake_model(), tmp_path / "o", options=_opts(readers=readers))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(bad)) and "re-copy" in msg


@pytest.mark.slow
def test_compiled_model_gives_the_same_map(slide, whole, tmp_path):
    """--compile: torch.compile with one static batch shape (short batches are padded); the map
    must equal the eager one within float rounding."""
    out, res, _ = whole
    res2 = predict_slide(slide, _fake_model(), tmp_path, options=_opts(compile=True))
    assert res2.report["tiles"]["computed_this_run"] == res.report["tiles"]["computed_this_run"]
    assert res.report["tiles"]["computed_this_run"] % 8  # a short last batch was padded
    assert np.abs(_store_map(tmp_path).astype(int) - _store_map(out).astype(int)).max() <= 1
