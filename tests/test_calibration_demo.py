"""Calibration on the demo, small: a generated project (two tumour slides, one normal), trained
briefly, predicted with the calibrated model folder and with the same weights without their
calibration (what predict did before), then evaluated on the held-out slides."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from qupath_camseg.cli import main

HELD_OUT, NORMAL = "tumor_002.tif", "normal_003.tif"


def _predict_and_evaluate(project: Path, model: Path, out: Path) -> dict:
    assert main(["predict", str(project), "--model", str(model), "--images", HELD_OUT, "--images", NORMAL,
                 "--device", "cpu", "--progress", "none"]) == 0
    assert main(["evaluate", str(project), "--images", HELD_OUT, "--images", NORMAL, "--json", str(out),
                 "--froc-plot", str(out.with_suffix(".png"))]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("caldemo")
    project, model = root / "project", root / "model"
    assert main(["synth", str(project), "--slides", "3", "--negatives", "1", "--width", "1536", "--height", "1536",
                 "--mpp", "1.0", "--tile-px", "256", "--door", "files", "--seed", "5"]) == 0
    assert main(["train", str(project), "--out", str(model), "--mpp", "2", "--tile", "64", "--width", "8",
                 "--depth", "2", "--batch-size", "8", "--steps", "40", "--tiles-per-epoch", "160", "--lr", "2e-3",
                 "--val-images", HELD_OUT, "--workers", "0", "--seed", "0", "--no-screen", "-q"]) == 0
    # the same weights without calibration, predicted into a copy of the project
    raw_project, raw_model = root / "raw_project", root / "raw_model"
    shutil.copytree(project, raw_project)
    shutil.copytree(model, raw_model)
    config = json.loads((raw_model / "model.json").read_text())
    del config["calibration"], config["output"]["calibration"]
    (raw_model / "model.json").write_text(json.dumps(config))
    return {"model": model, "config": json.loads((model / "model.json").read_text()),
            "calibrated": _predict_and_evaluate(project, model, root / "calibrated.json"),
            "raw": _predict_and_evaluate(raw_project, raw_model, root / "raw.json")}


def test_train_stores_the_prior_shift_and_temperature_with_the_ece(demo: dict) -> None:
    cal = demo["config"]["calibration"]
    priors = cal["priors"]
    # tumour is oversampled in training: the sampled share is well above the tissue's
    assert priors["sampled"][1] > 1.5 * priors["true"][1]
    def odds(p: list[float]) -> float:
        return p[1] / p[0]

    shift = cal["logit_bias"][1] - cal["logit_bias"][0]
    assert shift == pytest.approx(math.log(odds(priors["true"]) / odds(priors["sampled"])))
    assert shift < 0 and 0.01 <= cal["temperature"] <= 100
    # on the validation tiles the calibration lowers the ECE and the NLL it was fitted to
    assert cal["ece"]["after"]["Tumor"] < cal["ece"]["before"]["Tumor"]
    assert cal["nll"]["after"] <= cal["nll"]["prior_only"] + 1e-9 and cal["nll"]["after"] < cal["nll"]["before"]
    metrics = json.loads((demo["model"] / "metrics.json").read_text())
    assert metrics["calibration"] == cal
    assert (demo["model"] / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrated_heatmaps_are_calibrated_on_held_out_tissue(demo: dict) -> None:
    cal, raw = demo["calibrated"], demo["raw"]
    for rep in (cal, raw):
        assert {s["image"]: s["role"] for s in rep["slides"]} == {HELD_OUT: "val", NORMAL: "unseen"}
        assert rep["overall"]["scope"] == "held_out" and rep["training_slides"] is None
    # oversampling shows as background noise on normal tissue; the calibration removes most of it
    # (this 40-step model is far from converged: the full demo reaches <= 0.05, benchmarks/RESULTS.md)
    assert raw["overall"]["mean_prob_normal_tissue"] > 0.1
    for rep in (cal["overall"], {s["image"]: s for s in cal["slides"]}[NORMAL]):
        assert rep["mean_prob_normal_tissue"] < raw["overall"]["mean_prob_normal_tissue"] / 2.5
    assert cal["overall"]["ece"] < raw["overall"]["ece"] / 2
    # the tumour is found as well as before (the 0.5 threshold now means "more likely than not")
    dice = {n: {s["image"]: s for s in rep["slides"]}[HELD_OUT]["dice"] for n, rep in (("cal", cal), ("raw", raw))}
    assert dice["cal"] > 0.5 and dice["cal"] >= dice["raw"] - 0.02
