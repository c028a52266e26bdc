"""Corrections that teach: accepted and edited predictions and ``Normal`` regions reach the tile
sampler; ``train --init`` fine-tunes from a model folder, refuses mismatched options in one line,
records its lineage and still resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    FINGERPRINT_KEY,
    QPObject,
    copy_object,
    read_geojson,
    shape_fingerprint,
    write_geojson,
)
from qupath_camseg.cli import main
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.model import load_bundle
from qupath_camseg.train import INIT_EPOCHS, INIT_LR, SamplingConfig, TrainConfig, TrainTileDataset, collect_images, train

TINY = ["--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2", "--batch-size", "4", "--lr", "2e-3", "-q",
        "--tiles-per-epoch", "8", "--workers", "0"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finetune") / "proj"
    assert main(["synth", str(folder), "--slides", "3", "--negatives", "1", "--width", "1536", "--height", "1536",
                 "--mpp", "1.0", "--tile-px", "256", "--door", "files", "--seed", "5"]) == 0
    return folder


@pytest.fixture(scope="module")
def parent(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("parent") / "m"
    assert main(["train", str(project), "--out", str(out), *TINY, "--steps", "2"]) == 0
    return out


def _annotations(project: Path, entry: str) -> Path:
    return project / "camseg" / "annotations" / f"{entry}.geojson"


def _copy_project(project: Path, proj: Path) -> Path:
    """A copy of ``project`` at ``proj`` (its image URIs moved along)."""
    import shutil

    shutil.copytree(project, proj)
    text = (proj / "project.qpproj").read_text(encoding="utf-8")
    (proj / "project.qpproj").write_text(text.replace(project.as_uri(), proj.as_uri()).replace(
        f"file:{project.as_posix()}/", f"file:{proj.as_posix()}/"), encoding="utf-8")
    return proj


def _prediction(geom, cls: str = "Tumor") -> QPObject:
    return QPObject(geom, classification=cls, name=f"camseg {cls}", metadata=dict(CAMSEG_METADATA),
                    measurements={FINGERPRINT_KEY: float(shape_fingerprint(geom, cls))})


def _centres_in(ds: TrainTileDataset, image: str, region, n: int = 400) -> int:
    """How many of ``n`` sampled tiles of image ``image`` have their centre inside ``region``."""
    hits = 0
    names = [img.name for img in ds.images]
    for i in range(n):
        idx, (x, y, w, h) = ds.sample_box(np.random.default_rng([0, i]))
        hits += names[idx] == image and region.buffer(0.3 * w).contains(shapely.Point(x + w / 2, y + h / 2))
    return hits


def test_accepted_edited_and_normal_regions_reach_the_tile_sampler(project: Path, tmp_path: Path) -> None:
    proj = _copy_project(project, tmp_path / "p")
    # entry 1: its outlines replaced by three camseg predictions: one accepted (marker removed, as
    # "camseg Accept predictions" does), one the user reshaped, one left alone (never a label)
    accepted = shapely.box(200, 200, 420, 420)
    reshaped = _prediction(shapely.box(900, 900, 1100, 1100))
    reshaped = copy_object(reshaped, geometry=shapely.box(900, 900, 1150, 1100))
    untouched = _prediction(shapely.box(600, 200, 800, 400))
    write_geojson(_annotations(proj, "1"), [QPObject(accepted, classification="Tumor"), reshaped, untouched])
    # entry 3 (tumour-free): a false positive marked as normal
    normal = shapely.box(500, 500, 800, 800)
    write_geojson(_annotations(proj, "3"), [QPObject(normal, classification="Normal", name=None)])
    config = TrainConfig(mpp=2.0, tile_px=64, val_images=("tumor_002.tif",), unannotated="ignore", workers=0)
    data = collect_images(proj, config)
    names = {img.name: img for img in data.train_images}
    assert set(names) == {"tumor_001.tif", "normal_003.tif"}  # a Normal-only slide trains
    tumour = names["tumor_001.tif"].regions[1]
    assert tumour.area == pytest.approx(accepted.area + shapely.box(900, 900, 1150, 1100).area)
    assert not tumour.intersects(untouched.geometry.buffer(-1))
    ds = TrainTileDataset(data.train_images, mpp=2.0, tile_px=64, seed=0, augment=None)
    assert _centres_in(ds, "tumor_001.tif", accepted) > 20
    assert _centres_in(ds, "tumor_001.tif", reshaped.geometry) > 20
    assert _centres_in(ds, "normal_003.tif", normal) > 20  # negative regions are sampled too
    samples = (ds.sample_box(np.random.default_rng([0, i])) for i in range(2000))
    idx, box = next((k, b) for k, b in samples if k == 1 and normal.contains(shapely.Point(b[0], b[1])))
    label = ds.images[idx].label_tile(box, (64, 64))
    assert (label == 0).mean() > 0.5  # inside Normal: background, although unannotated pixels are ignored
    # with unannotated pixels ignored, tiles on bare tissue teach nothing: their share goes to the
    # negative regions (else tumour tiles outweigh every correction and a fine-tune over-calls)
    sampling = SamplingConfig()
    kinds = ds._kind_p  # inside, border, anywhere on tissue, inside negative regions
    assert kinds[2] == 0 and kinds[3] == pytest.approx(1 - sampling.inside_fraction - sampling.border_fraction)
    negative = collect_images(proj, dataclasses.replace(config, unannotated="negative"))
    kinds = TrainTileDataset(negative.train_images, mpp=2.0, tile_px=64, seed=0, augment=None)._kind_p
    assert kinds[3] == pytest.approx(sampling.negative_fraction) and kinds[2] > 0


def test_init_finetunes_records_lineage_and_resumes(project: Path, parent: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    parent_json = json.loads((parent / "model.json").read_text(encoding="utf-8"))
    fingerprints = {i["entry_id"]: i["annotations"] for i in parent_json["training"]["data"]["images"]}
    assert fingerprints["1"] and all(isinstance(f, int) for f in fingerprints["1"])
    # the pathologist marks a region of entry 1 as normal, then fine-tunes (no --mpp/--tile/... given)
    ann = _annotations(project, "1")
    before = ann.read_bytes()
    normal = QPObject(shapely.box(100, 1300, 300, 1450), classification="Normal")
    write_geojson(ann, read_geojson(ann) + [normal])
    try:
        child = tmp_path / "child"
        assert main(["train", str(project), "--init", str(parent), "--out", str(child), "-q",
                     "--tiles-per-epoch", "8", "--batch-size", "4", "--workers", "0"]) == 0
    finally:
        ann.write_bytes(before)
    cfg = json.loads((child / "train_config.json").read_text(encoding="utf-8"))["config"]
    assert (cfg["epochs"], cfg["lr"], cfg["mpp"], cfg["tile_px"]) == (INIT_EPOCHS, INIT_LR, 2.0, 64)
    assert cfg["arch"] == parent_json["arch"] and cfg["init"] == str(parent.absolute())
    model_json = json.loads((child / "model.json").read_text(encoding="utf-8"))
    lineage = model_json["training"]["lineage"]
    import hashlib

    assert lineage["parent"]["sha256"] == hashlib.sha256((parent / "model.safetensors").read_bytes()).hexdigest()
    assert lineage["generation"] == 1 and lineage["annotations_added"] == 1
    (img,) = lineage["images"]
    assert img["entry_id"] == "1" and img["annotations_added"] == 1 and img["annotations_gone"] == 0
    assert img["area_added_mm2"] == {"Normal": pytest.approx(200 * 150 * 1.0**2 / 1e6)}
    assert lineage["area_added_mm2"] == img["area_added_mm2"]
    metrics = json.loads((child / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["history"][-1]["step"] == INIT_EPOCHS * 2  # 8 tiles of 4: 2 steps per epoch
    # --resume continues the fine-tuning run (the parent's weights are not loaded over the checkpoint)
    result = train(project, child, TrainConfig(epochs=INIT_EPOCHS + 1, workers=0), resume=True)
    assert result["resumed_from_step"] == INIT_EPOCHS * 2 and result["steps"] == (INIT_EPOCHS + 1) * 2
    grand = json.loads((child / "model.json").read_text(encoding="utf-8"))["training"]["lineage"]
    assert grand["parent"]["sha256"] == lineage["parent"]["sha256"]


def test_init_starts_from_the_parents_weights(parent: Path, tmp_path: Path) -> None:
    from qupath_camseg.model import build_model
    from qupath_camseg.train import load_init_weights

    net, cfg = load_bundle(parent)
    fresh = build_model(cfg.arch, pretrained=False)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    load_init_weights(fresh, str(parent))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("mpp", 1.0, "--mpp 1 does not match the --init model"),
    ("tile_px", 128, "--tile 128 does not match the --init model"),
    ("classes", ("Tumor", "Stroma"), "--classes Tumor,Stroma does not match the --init model"),
    ("arch", {"name": "unet", "width": 8}, "--arch/--width/--depth/--encoder name=unet, width=8"),
])
def test_init_refuses_mismatched_options_in_one_line(project: Path, parent: Path, tmp_path: Path,
                                                     option: str, value: object, message: str) -> None:
    with pytest.raises(InvalidSettingsError) as err:
        train(project, tmp_path / "x", TrainConfig(init=str(parent), workers=0, **{option: value}))
    assert message in str(err.value) and str(parent) in str(err.value) and "\n" not in str(err.value)
    # the same values as the parent's are fine
    same = TrainConfig(init=str(parent), mpp=2.0, tile_px=64, steps=1, tiles_per_epoch=4, batch_size=4, workers=0)
    assert train(project, tmp_path / "ok", same)["steps"] == 1


def test_partial_annotations_fit_their_threshold_on_a_validation_slide_outlined_completely(
        project: Path, tmp_path: Path) -> None:
    """With ``--unannotated ignore`` (the correction loop) the training slides' tissue priors are
    unknown. A validation slide outlined completely (Tumor and Normal) holds them, so the logit bias
    is fitted there with the temperature; with its tumour outlines only it does not, the bias stays
    0 and model.json says what to outline."""
    proj = _copy_project(project, tmp_path / "p")
    val = _annotations(proj, "2")
    tumour = [o for o in read_geojson(val) if o.classification == "Tumor"]
    rest = shapely.box(0, 0, 1536, 1536).difference(shapely.union_all([o.geometry for o in tumour]))
    write_geojson(val, [*tumour, QPObject(rest, classification="Normal", name=None)])
    args = [*TINY, "--steps", "6", "--unannotated", "ignore", "--val-images", "tumor_002.tif"]
    assert main(["train", str(proj), "--out", str(tmp_path / "complete"), *args]) == 0
    cal = json.loads((tmp_path / "complete" / "model.json").read_text(encoding="utf-8"))["calibration"]
    assert cal["bias_fitted_on_validation"] is True and cal["logit_bias"][0] == 0.0 and cal["logit_bias"][1] != 0.0
    assert "outlined completely" in cal["prior_note"]
    write_geojson(val, tumour)
    assert main(["train", str(proj), "--out", str(tmp_path / "partial"), *args]) == 0
    cal = json.loads((tmp_path / "partial" / "model.json").read_text(encoding="utf-8"))["calibration"]
    assert cal["logit_bias"] == [0.0, 0.0] and "bias_fitted_on_validation" not in cal
    assert "tumor_002.tif" in cal["prior_note"] and "outline the whole tissue" in cal["prior_note"]
