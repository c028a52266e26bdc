"""The screening model (issue 18): saved beside the model in the same folder (old folders still
load), its threshold chosen on validation slides for a tumour-pixel recall of at least 0.99, and
``qcamseg train`` / ``train --screen`` / ``predict --cascade`` end to end on a small project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_predict import DarknessNet

from qupath_camseg.cli import main
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model import (
    SCREEN_WEIGHTS_NAME,
    LoadedModel,
    ModelConfig,
    ScreenModel,
    build_model,
    load_bundle,
    load_model,
    load_screen,
    load_screen_bundle,
    save_bundle,
    save_screen,
)
from qupath_camseg.predict import (
    CalibrationSlide,
    PredictOptions,
    calibrate_screen,
    choose_threshold,
)
from qupath_camseg.synthetic import write_synthetic_slide


def _config(mpp: float, width: int = 4) -> ModelConfig:
    return ModelConfig(arch={"name": "unet", "width": width, "depth": 2}, mpp=mpp, tile_px=32,
                       classes=[{"name": "Tumor", "color": [200, 0, 0]}])


def test_screen_is_saved_beside_the_model_and_old_folders_load(tmp_path):
    torch.manual_seed(0)
    main_net = build_model(_config(1.0).arch)
    save_bundle(tmp_path, main_net, _config(1.0))
    raw = json.loads((tmp_path / "model.json").read_text())
    assert "screen" not in raw  # a folder without a screen looks as before
    assert load_screen_bundle(tmp_path) is None and load_model(tmp_path, device="cpu").config.screen is None
    weights_before = (tmp_path / "model.safetensors").read_bytes()
    screen_net = build_model(_config(4.0, width=8).arch)
    save_screen(tmp_path, screen_net, _config(4.0, width=8), {"threshold": 0.25, "recall": 0.995,
                                                                 "kept_tissue_fraction": 0.1})
    assert (tmp_path / "model.safetensors").read_bytes() == weights_before  # the model is untouched
    _, cfg = load_bundle(tmp_path)  # loads as before (the screen section is extra)
    assert cfg.screen is not None and cfg.screen["weights"] == SCREEN_WEIGHTS_NAME
    assert cfg.screen["mpp"] == 4.0 and cfg.screen["threshold"] == 0.25 and len(cfg.screen["sha256"]) == 64
    lm = load_model(tmp_path, device="cpu")
    screen = load_screen(lm)
    assert screen is not None and screen.threshold == 0.25 and screen.model.config.mpp == 4.0
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(screen.model.model(x), screen_net.eval()(x))
    assert load_screen(lm) is screen  # loaded once
    (tmp_path / SCREEN_WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ModelBundleError, match="--cascade off"):
        load_screen_bundle(tmp_path)


def test_threshold_keeps_the_target_recall():
    rng = np.random.default_rng(0)
    tumour = np.bincount(np.clip(rng.normal(200, 30, 10_000), 0, 255).astype(int), minlength=256)
    tissue = tumour + np.bincount(np.clip(rng.normal(40, 30, 90_000), 0, 255).astype(int), minlength=256)
    out = choose_threshold(tumour, tissue, 0.99)
    b = round(out["threshold"] * 255)
    assert tumour[b:].sum() >= 0.99 * tumour.sum() > tumour[b + 1:].sum()  # the highest such byte
    assert out["recall"] == pytest.approx(tumour[b:].sum() / tumour.sum(), abs=1e-6)
    assert out["kept_tissue_fraction"] == pytest.approx(tissue[b:].sum() / tissue.sum(), abs=1e-6)
    assert 0.1 < out["kept_tissue_fraction"] < 0.3
    lut = np.asarray(out["probability_lut"])
    assert len(lut) == 256 and (np.diff(lut) >= 0).all() and lut[0] < 0.05 and lut[255] > 0.9
    none = choose_threshold(np.zeros(256, int), tissue)
    assert none["threshold"] is None and none["recall"] is None


def test_calibration_on_a_slide_with_truth(tmp_path):
    path = tmp_path / "val.tif"
    truth = write_synthetic_slide(path, width=2048, height=2048, seed=11, mpp=1.0, tile_px=256)
    assert truth.tumor.area > 0
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=8.0, tile_px=32,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    screen = ScreenModel(LoadedModel(DarknessNet().eval(), cfg, None, "darkness", "cpu"), {})
    slide = CalibrationSlide("val.tif", path, None, [(truth.tumor, 1)])
    got = calibrate_screen(screen, [slide], options=PredictOptions(chunk_px=32, workers=2, overwrite=True))
    assert got["calibrated_on"] == ["val.tif"] and got["tumour_px"] > 100 and got["tissue_px"] > got["tumour_px"]
    assert got["recall"] >= 0.99 and 0 < got["threshold"] < 1
    assert 0 < got["kept_tissue_fraction"] <= 1
    ignored = calibrate_screen(screen, [CalibrationSlide("val.tif", path, None, [(truth.tumor, 255)])],
                               options=PredictOptions(chunk_px=32, workers=2, overwrite=True))
    assert ignored["tumour_px"] == 0 and ignored["threshold"] is None  # Ignore* regions are left out
    # the table the cascade's fill uses: fitted on the pixels beyond the full model's context
    assert got["lut_population"] == "all_tissue"
    far = calibrate_screen(screen, [slide], options=PredictOptions(chunk_px=32, workers=2, overwrite=True),
                           context_um=64.0)
    assert far["lut_population"] == "beyond_context" and far["context_um"] == 64.0
    assert far["threshold"] == got["threshold"] and far["recall"] == got["recall"]  # the choice is unchanged
    b = round(far["threshold"] * 255)
    lut_all, lut_far = np.asarray(got["probability_lut"]), np.asarray(far["probability_lut"])
    assert (np.diff(lut_far) >= 0).all()
    assert lut_far[:b].mean() < lut_all[:b].mean()  # far from any flagged pixel tumour is rarer


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("screen") / "proj"
    assert main(["synth", str(folder), "--slides", "3", "--negatives", "1", "--width", "1536", "--height", "1536",
                 "--mpp", "1.0", "--tile-px", "256", "--door", "files", "--seed", "3"]) == 0
    return folder


TINY = ["--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2", "--batch-size", "4", "--steps", "4",
        "--tiles-per-epoch", "8", "--workers", "0", "--val-images", "tumor_001.tif", "-q", "--screen-steps", "6"]


def test_train_adds_a_screen_and_predict_cascades(project, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", str(project), "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "training the screen (4 µm/px" in err and "calibrating the screen on tumor_001.tif" in err
    section = json.loads((out / "model.json").read_text())["screen"]
    assert section["mpp"] == 4.0 and section["calibrated_on"] == ["tumor_001.tif"]
    assert (out / SCREEN_WEIGHTS_NAME).is_file() and (out / "screen" / "metrics.json").is_file()
    assert section["recall"] is None or section["recall"] >= 0.99
    # --screen again: the finished screen run is found, only recalibrated
    assert main(["train", str(project), "--out", str(out), "--screen", "-q", "--workers", "0"]) == 0
    again = json.loads((out / "model.json").read_text())["screen"]
    assert again["threshold"] == section["threshold"] and again["recall"] == section["recall"]
    saved, run = load_file(str(out / SCREEN_WEIGHTS_NAME)), load_file(str(out / "screen" / "model.safetensors"))
    assert saved.keys() == run.keys() and all(torch.equal(saved[k], run[k]) for k in run)  # not retrained
    # predict with the cascade (auto) and without
    slide = project / "images" / "normal_003.tif"
    assert main(["predict", str(slide), "--model", str(out), "--out", str(tmp_path / "p"), "--progress", "none"]) == 0
    rep = json.loads((tmp_path / "p" / "reports" / "normal_003.json").read_text())
    assert rep["cascade"]["on"] is (section["threshold"] is not None)
    assert main(["predict", str(slide), "--model", str(out), "--out", str(tmp_path / "q"), "--progress", "none",
                 "--cascade", "off"]) == 0
    assert json.loads((tmp_path / "q" / "reports" / "normal_003.json").read_text())["cascade"] == {"on": False}


def test_no_screen_and_screen_on_an_empty_folder(project, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", str(project), "--out", str(out), *TINY, "--no-screen"]) == 0
    assert "screen" not in json.loads((out / "model.json").read_text())
    assert not (out / SCREEN_WEIGHTS_NAME).exists()
    capsys.readouterr()
    assert main(["train", str(project), "--out", str(tmp_path / "none"), "--screen", "-q"]) == 2
    assert "has no model.json" in capsys.readouterr().err
