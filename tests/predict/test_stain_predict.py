"""Stain normalisation at predict time: the tile readers apply the slide's transform (threads and
DataLoader reader processes give the same bytes), ``predict_slide`` follows the model's reference
and ``--stain-norm none`` switches it off, and a slide without stained tissue falls back to
unnormalised tiles with a note."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.model import LoadedModel, ModelConfig
from qupath_camseg.predict import (
    PredictOptions,
    TileBatches,
    TilePlan,
    TileReader,
    predict_slide,
    slide_stain,
    thread_batches,
)
from qupath_camseg.synthetic import StainShift, write_synthetic_slide
from qupath_camseg.wsi import StainTransform, TissueFractions, detect_tissue, estimate_stains, open_slide

MODEL_MPP, TILE = 4.0, 32


class PinkNet(torch.nn.Module):
    """Test double for a trained network: tumour logit from the local red-minus-blue balance, so the
    stain colours (not only darkness) change its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.avg_pool2d(F.pad(x[:, :1] - x[:, 2:3], (3, 3, 3, 3), mode="replicate"), 7, stride=1)
        return torch.cat([torch.zeros_like(g), g / 8.0], 1)


@pytest.fixture(scope="module")
def shifted_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stain") / "scanner.tif"
    shift = StainShift(h_scale=1.4, e_od=(0.10, 0.88, 0.46), light=(0.95, 0.97, 1.0))
    write_synthetic_slide(path, width=2048, height=1536, seed=11, mpp=1.0, tile_px=256, stain_shift=shift)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The stains of a default-profile synthetic slide (what a model trained on it would store)."""
    path = tmp_path_factory.mktemp("ref") / "ref.tif"
    write_synthetic_slide(path, width=2048, height=1536, seed=12, mpp=1.0, tile_px=256)
    with open_slide(path) as s:
        return estimate_stains(s.read_region_mpp((0, 0, 2048, 1536), MODEL_MPP))


def _model(stain=None) -> LoadedModel:
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=MODEL_MPP, tile_px=TILE,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}], stain=stain)
    return LoadedModel(PinkNet().eval(), cfg, None, "pink-net", "cpu")


def _opts(**kw) -> PredictOptions:
    return PredictOptions(**{"chunk_px": 32, "stripe_chunks": 3, "workers": 2, "batch_size": 8, **kw})


def test_reader_threads_and_processes_give_identical_normalised_tiles(shifted_slide, reference):
    with open_slide(shifted_slide) as slide:
        plan = TilePlan.create(slide.dimensions, slide.mpp, MODEL_MPP, tile_px=TILE, chunk_px=32, stripe_chunks=3)
        found = estimate_stains(slide.read_region_mpp((0, 0, 2048, 1536), MODEL_MPP))
    transform = StainTransform.between(found, reference)
    ny, nx = plan.grid_shape
    tiles = [(ty, tx) for ty in range(ny) for tx in range(nx)]
    batches = [tiles[i:i + 8] for i in range(0, len(tiles), 8)]
    args = (shifted_slide, None, plan, MODEL_MPP, transform)
    reader = TileReader(*args)
    with ThreadPoolExecutor(3) as pool:
        by_threads = np.concatenate(list(thread_batches(pool, reader, batches, ahead=16)))
    plain = np.stack([TileReader(shifted_slide, None, plan, MODEL_MPP).read(*t) for t in tiles])
    reader.close()
    loader = torch.utils.data.DataLoader(TileBatches(args, batches), batch_size=None, num_workers=2)
    by_processes = torch.cat(list(loader)).numpy()
    assert np.array_equal(by_threads, by_processes)
    assert np.array_equal(by_threads, np.stack([transform(t) for t in plain]))  # deterministic, per tile
    assert np.abs(by_threads.astype(int) - plain).mean() > 3  # the normalisation did change the colours


def test_predict_follows_the_model_and_can_be_switched_off(shifted_slide, reference, tmp_path):
    lm = _model(reference.to_json())
    on = predict_slide(shifted_slide, lm, tmp_path / "on", options=_opts())
    info = on.report["stain_normalization"]
    assert info["method"] == "macenko" and info["fallback"] is False and 0 < info["tiles"] <= 24
    assert np.array(info["matrix"]).shape == (3, 3)
    off = predict_slide(shifted_slide, lm, tmp_path / "off", options=_opts(stain_norm="none"))
    assert off.report["stain_normalization"]["method"] == "none"
    assert on.report["settings_key"] != off.report["settings_key"]
    with open_slide(on.outputs["heatmap"], mpp=MODEL_MPP) as a, open_slide(off.outputs["heatmap"], mpp=MODEL_MPP) as b:
        heat_on, heat_off = a.read_level(0, 0, 0, 512, 384), b.read_level(0, 0, 0, 512, 384)
    assert np.abs(heat_on.astype(int) - heat_off).mean() > 1  # the network saw other colours
    # the same output folder: switching it off must not resume from the normalised chunks
    again = predict_slide(shifted_slide, lm, tmp_path / "on", options=_opts(stain_norm="none"))
    assert not again.skipped and again.report["tiles"]["resumed"] is False


def test_a_model_without_reference_predicts_as_before(shifted_slide, tmp_path):
    res = predict_slide(shifted_slide, _model(), tmp_path, options=_opts())
    assert res.report["stain_normalization"] == {"method": "none", "why": "the model has no stain reference"}
    meta = json.loads((tmp_path / "probability" / "scanner" / "meta.json").read_text())
    assert "stain" not in meta["key"]  # chunk stores of older versions stay valid


def test_glass_only_tiles_fall_back_to_identity_with_a_note(shifted_slide, reference):
    notes: list[dict] = []
    with open_slide(shifted_slide) as slide:
        plan = TilePlan.create(slide.dimensions, slide.mpp, MODEL_MPP, tile_px=TILE)
        fractions = TissueFractions(detect_tissue(slide, mask_mpp=16.0))
        boxes = plan.tile_boxes_level0()
        glass = fractions(boxes.reshape(-1, 4)).reshape(boxes.shape[:2]) == 0
        assert glass.any()
        got = slide_stain(slide, plan, glass, fractions, reference, MODEL_MPP, "model", emit=notes.append,
                          image="scanner")
        none = slide_stain(slide, plan, np.zeros_like(glass), fractions, reference, MODEL_MPP, "model")
    assert got.transform is None and got.info["fallback"] is True and got.info["tiles"] > 0
    assert none.transform is None and none.info["tiles"] == 0
    assert notes and "not stain-normalised" in notes[0]["message"]


def test_unknown_choice_is_refused(shifted_slide, tmp_path):
    with pytest.raises(InvalidSettingsError, match="--stain-norm"):
        predict_slide(shifted_slide, _model(), tmp_path, options=_opts(stain_norm="macenko"))
