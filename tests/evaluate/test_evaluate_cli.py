"""``qcamseg evaluate`` and ``qcamseg figure`` end to end on a generated mini project.

The project: two 2048×2048 slides at 1 µm/px. "tumour" has lesions L1 (400 µm square) and L2
(300 µm square); "normal" has none. Predictions as ``qcamseg predict`` writes them: region
annotations in ``camseg/predictions/<id>.geojson`` and a uint8 heatmap at 8 µm/px in
``camseg/heatmaps/<id>.tif``. Every expected number is worked out by hand below.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box

from qupath_camseg.annotations import CAMSEG_METADATA, QPObject, write_geojson
from qupath_camseg.cli import main
from qupath_camseg.qupath import create_project, open_project
from qupath_camseg.wsi import write_heatmap

SIZE = 2048
MPP = 1.0
HEAT_MPP = 8.0  # 8 slide px per heatmap px


def _slide(path: Path) -> Path:
    img = np.full((SIZE, SIZE, 3), 235, np.uint8)
    img[300:1800, 300:1800] = (180, 120, 190)  # a pink "tissue" block
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(1e4 / MPP, 1e4 / MPP), resolutionunit="CENTIMETER")
    return path


def _heat(peaks: dict[tuple[int, int], int]) -> np.ndarray:
    h = np.zeros((SIZE // 8, SIZE // 8), np.uint8)
    for (x, y), v in peaks.items():  # level-0 (x, y) -> heatmap pixel
        h[y // 8 - 1 : y // 8 + 2, x // 8 - 1 : x // 8 + 2] = v // 2
        h[y // 8, x // 8] = v
    return h


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalproj")
    proj_dir = root / "project"
    p = create_project(proj_dir)
    try:
        e_t = p.add_image(_slide(root / "tumour.tif"), name="tumour.tif")
        e_n = p.add_image(_slide(root / "normal.tif"), name="normal.tif")
        e_x = p.add_image(_slide(root / "unpredicted.tif"), name="unpredicted.tif")
        p.write_annotations(e_t, [
            QPObject(box(200, 200, 600, 600), classification="Tumor"),
            QPObject(box(1200, 1200, 1500, 1500), classification="Tumor"),
            QPObject(box(50, 1900, 150, 2000), classification="Stroma"),  # not tumour: ignored
        ])
        p.write_annotations(e_x, [QPObject(box(0, 0, 500, 500), classification="Tumor")])
    finally:
        p.close()
    pred = proj_dir / "camseg" / "predictions"
    heat = proj_dir / "camseg" / "heatmaps"
    ours = dict(CAMSEG_METADATA)
    write_geojson(pred / f"{e_t.entry_id}.geojson", [
        QPObject(box(200, 200, 600, 600), classification="Tumor", metadata=ours),  # = L1
        QPObject(box(1600, 200, 1800, 400), classification="Tumor", metadata=ours),  # FP region
        # a prediction tile of class Tumor is not a region: must not count in Dice
        QPObject(box(0, 1024, 1024, 2048), object_type="tile", classification="Tumor", metadata=ours),
    ])
    write_geojson(pred / f"{e_n.entry_id}.geojson", [])
    # peaks: L1 230/255 (TP), L2 128/255 (TP), FP 200/255 on normal tissue of the tumour slide
    write_heatmap(heat / f"{e_t.entry_id}.tif", _heat({(400, 400): 230, (1350, 1350): 128, (1700, 300): 200}),
                  HEAT_MPP, tile_px=128)
    write_heatmap(heat / f"{e_n.entry_id}.tif", _heat({(1000, 1000): 153}), HEAT_MPP, tile_px=128)
    return proj_dir


def test_evaluate_end_to_end(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = project.parent / "eval.json"
    assert main(["evaluate", str(project), "--json", str(out_json)]) == 0
    captured = capsys.readouterr()
    assert "skipped unpredicted.tif" in captured.err
    text = captured.out
    assert "tumour.tif" in text and "normal.tif" in text and "FROC score 0.833" in text

    rep = json.loads(out_json.read_text())
    by_name = {s["image"]: s for s in rep["slides"]}
    t, n = by_name["tumour.tif"], by_name["normal.tif"]
    # Dice at 2 µm/px: truth 200²+150² = 62500 px, prediction 200²+100² = 50000, overlap 40000
    assert t["dice"] == pytest.approx(2 * 40000 / (62500 + 50000))
    assert t["iou"] == pytest.approx(40000 / (62500 + 50000 - 40000))
    assert t["n_lesions"] == 2 and t["lesions_hit"] == 2 and t["false_positives"] == 1
    assert [d["outcome"] for d in t["detections"]] == ["tp", "fp", "tp"]  # 0.902, 0.784, 0.502
    assert n["has_tumor"] is False and n["dice"] is None and n["false_positives"] == 1
    # FROC: TP {230, 128}/255, FP {200, 153}/255, 2 slides, 2 lesions
    # thresholds .502 .6 .784 .902 -> FP/slide [1, 1, .5, 0, 0], sens [1, .5, .5, .5, 0]
    f = rep["froc"]
    assert f["fps_per_slide"] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert f["sensitivity"] == [1.0, 0.5, 0.5, 0.5, 0.0]
    # increasing FP [0, 0, .5, 1, 1], sens [0, .5, .5, .5, 1]; np.interp as the challenge's script:
    # 1/4 -> .5 | 1/2 -> .5 | 1 -> exactly the shared rate 1: its last point, 1 | 2, 4, 8 -> 1
    assert f["sensitivity_at"] == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    o = rep["overall"]
    assert o["froc_score"] == pytest.approx(5 / 6)
    assert o["slide_auc"] == 1.0  # tumour max 0.902 > normal max 0.6
    assert o["pooled_dice"] == pytest.approx(t["dice"]) and o["n_slides"] == 2
    assert (project / "camseg" / "reports" / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_heatmap_only_and_images_filter(project: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "e.json"
    empty = tmp_path / "no_preds"
    empty.mkdir()
    rc = main(["evaluate", str(project), "--images", "tumour.tif", "--predictions", str(empty),
               "--json", str(out_json), "--froc-plot", str(tmp_path / "f.png")])
    assert rc == 0
    rep = json.loads(out_json.read_text())
    assert [s["image"] for s in rep["slides"]] == ["tumour.tif"]
    # only the heatmap: Dice from heatmap >= 0.5 on its 8 µm grid: 3 peak pixels, 2 of them on truth
    s = rep["slides"][0]
    assert (s["pixels"]["tp"], s["pixels"]["fp"]) == (2, 1)
    # one slide, FP {0.784}: thresholds .502 .784 .902 -> fps [1, 1, 0, 0], sens [1, .5, .5, 0];
    # increasing FP [0, 0, 1, 1], sens [0, .5, .5, 1]: 1/4, 1/2 -> .5 | 1 -> its last point, 1 | 2, 4, 8 -> 1
    assert rep["froc"]["sensitivity_at"] == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert (tmp_path / "f.png").is_file()


def test_evaluate_without_predictions_names_the_fix(project: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    rc = main(["evaluate", str(project), "--predictions", str(empty), "--heatmaps", str(empty)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no predictions") and "qcamseg predict" in err


def test_figure_command(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seed.png"
    assert main(["figure", str(project), "--image", "tumour.tif", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    # the whole slide is drawn (and scored) at 2048/1600 = 1.28 µm/px: close to the exact 0.711
    assert float(said.split("Dice ")[1].rstrip(")\n")) == pytest.approx(2 * 40000 / 112500, abs=0.01)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out).size == (1800, 900)  # 12 × 6 in at 150 dpi
    out2 = tmp_path / "region.png"
    assert main(["figure", str(project), "--image", "tumour.tif", "--region", "100,100,600,600",
                 "--out", str(out2), "--no-heatmap"]) == 0
    # the region holds all of L1 (predicted exactly) and no other region: Dice 1
    assert "Dice 1.000" in capsys.readouterr().out
    assert main(["figure", str(project), "--image", "tumour.tif", "--region", "1,2,3"]) == 2
    assert "x,y,width,height" in capsys.readouterr().err
    assert main(["figure", str(project)]) == 2

    log = tmp_path / "model" / "metrics.json"
    log.parent.mkdir()
    log.write_text(json.dumps([{"epoch": 1, "train_loss": 0.9, "val_loss": 1.0, "val_dice": 0.3},
                               {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_dice": 0.6}]))
    assert main(["figure", str(project), "--training-log", str(log)]) == 0
    assert (log.parent / "training_curve.png").is_file()


# ------------------------------------------------------------------ held-out slides and roles
def _with_model(project: Path, tmp_path: Path, roles: dict[str, str], *, report_weights: bytes = b"weights") -> tuple[Path, Path]:
    """A copy of the project whose predictions' reports name a model folder (``model.json`` with
    the training roles of ``roles``: image name → ``train``/``val``), as predict and train write them."""
    proj = tmp_path / "project"
    shutil.copytree(project, proj)
    with open_project(proj, "r") as p:
        ids = {e.image_name: e.entry_id for e in p.entries}
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    images = [{"name": n, "entry_id": ids[n], "role": r} for n, r in roles.items()]
    (model / "model.json").write_text(json.dumps(
        {"format": "qupath-camseg-model", "training": {"project": str(proj), "data": {"images": images}}}))
    reports = proj / "camseg" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    for name in ("tumour.tif", "normal.tif"):
        (reports / f"{ids[name]}.json").write_text(json.dumps(
            {"status": "done", "model": {"path": str(model), "sha256": hashlib.sha256(report_weights).hexdigest()}}))
    return proj, model


def test_headline_is_the_held_out_slides_and_training_slides_are_apart(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj, _ = _with_model(project, tmp_path, {"tumour.tif": "train"})
    assert main(["evaluate", str(proj), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "e.json").read_text())
    assert {s["image"]: s["role"] for s in rep["slides"]} == {"tumour.tif": "train", "normal.tif": "unseen"}
    o, t = rep["overall"], rep["training_slides"]
    assert o["scope"] == "held_out" and o["images"] == ["normal.tif"] and o["n_slides"] == 1
    # the held-out set is one normal slide: no lesions -> a clear note, not NaN
    assert o["froc_score"] is None and o["froc_note"].startswith("no lesions") and rep["froc"]["status"] == "no lesions"
    assert "FROC: no lesions" in out and "training slides (scored apart" in out
    # the training slide alone: TP {.902, .502}, FP {.784} -> fps [1, 1, 0, 0], sens [1, .5, .5, 0] -> 5/6
    assert t["images"] == ["tumour.tif"] and t["froc_score"] == pytest.approx(5 / 6)
    # calibration of the normal slide's heatmap: all tissue is normal, so ECE = mean probability =
    # (peak 153/255 + 8 neighbours 76/255) / tissue pixels; tissue ≈ the 1500 µm block = 187.5² px
    n = next(s for s in rep["slides"] if s["image"] == "normal.tif")
    assert n["mean_prob_normal_tissue"] * n["normal_tissue_pixels"] == pytest.approx((153 + 8 * 76) / 255, rel=1e-6)
    assert n["normal_tissue_pixels"] == pytest.approx(187.5**2, rel=0.05)
    assert n["ece"] == pytest.approx(n["mean_prob_normal_tissue"], rel=1e-9)
    assert o["ece"] == pytest.approx(n["ece"]) and o["mean_prob_normal_tissue"] == pytest.approx(n["mean_prob_normal_tissue"])


def test_all_slides_pools_them_and_only_training_slides_warns(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj, _ = _with_model(project, tmp_path, {"tumour.tif": "train", "normal.tif": "train"})
    assert main(["evaluate", str(proj), "--json", str(tmp_path / "a.json"), "--all-slides"]) == 0
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["overall"]["scope"] == "all_slides" and rep["overall"]["n_slides"] == 2
    assert rep["overall"]["froc_score"] == pytest.approx(5 / 6) and rep["training_slides"] is None
    assert "every evaluated slide" not in capsys.readouterr().err
    assert main(["evaluate", str(proj), "--json", str(tmp_path / "t.json")]) == 0
    err = capsys.readouterr().err
    assert "warning: every evaluated slide (tumour.tif, normal.tif) was used to train the model" in err
    rep = json.loads((tmp_path / "t.json").read_text())
    assert rep["overall"]["scope"] == "training_only" and rep["overall"]["n_slides"] == 2


def test_model_option_and_changed_weights_are_reported(
        project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj, _ = _with_model(project, tmp_path, {"tumour.tif": "train"}, report_weights=b"older weights")
    assert main(["evaluate", str(proj), "--json", str(tmp_path / "e.json")]) == 0
    assert "has other weights now" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"training": {"project": str(proj), "data": {"images": []}}}))
    (other / "model.safetensors").write_bytes(b"other weights")
    assert main(["evaluate", str(proj), "--json", str(tmp_path / "o.json"), "--model", str(other)]) == 0
    assert "predicted with another model than --model" in capsys.readouterr().err
    rep = json.loads((tmp_path / "o.json").read_text())
    assert {s["role"] for s in rep["slides"]} == {"unseen"} and rep["overall"]["n_slides"] == 2
    assert main(["evaluate", str(proj), "--model", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_without_reports_the_roles_are_unknown_and_said_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(project), "--json", str(project.parent / "u.json")]) == 0
    assert "cannot tell whether tumour.tif, normal.tif trained the model" in capsys.readouterr().err
    rep = json.loads((project.parent / "u.json").read_text())
    assert {s["role"] for s in rep["slides"]} == {"unknown"} and rep["overall"]["scope"] == "held_out"
