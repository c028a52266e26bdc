"""Stain normalisation at training time: the reference fitted on the training slides, one transform
per image, tiles normalised in the loader workers exactly as in the main process, the reference in
the model folder, and a clear error when the training slides hold no stained tissue."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from qupath_camseg.errors import InvalidSettingsError, StainNormalizationError
from qupath_camseg.synthetic import write_synthetic_project
from qupath_camseg.train import TrainConfig, TrainTileDataset, collect_images, fit_training_stains, sample_tiles, train

CONFIG = TrainConfig(mpp=2.0, tile_px=64, arch={"name": "unet", "width": 4, "depth": 2}, steps=2,
                     tiles_per_epoch=8, batch_size=4, val_images=("tumor_002.tif",), device="cpu", workers=0,
                     stain_norm="macenko")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stainproj") / "p"
    write_synthetic_project(out, slides=4, negatives=1, width=2048, height=2048, seed=4, door="files",
                            stain_shift="random")  # each slide its own stains
    return out


def test_reference_from_training_images_and_a_transform_per_image(project):
    data = collect_images(project, CONFIG)
    stains = fit_training_stains(data, CONFIG)
    assert stains is not None
    assert len(stains.train) == len(data.train_images) == 2 and len(stains.val) == 1
    assert all(not t.is_identity for t in [*stains.train, *stains.val])
    again = fit_training_stains(data, CONFIG)  # no randomness: a resumed run fits the same reference
    assert again.reference == stains.reference
    assert all(np.array_equal(a.matrix, b.matrix) for a, b in zip(stains.train, again.train))
    assert fit_training_stains(data, dataclasses.replace(CONFIG, stain_norm="none")) is None


def test_normalisation_brings_slides_of_different_stains_together(project):
    """Each slide's normalised tiles have stains closer to the reference than its raw tiles."""
    from qupath_camseg.wsi import estimate_stains

    data = collect_images(project, CONFIG)
    stains = fit_training_stains(data, CONFIG)
    ref = stains.reference.matrix
    for img, transform in zip(data.train_images, stains.train):
        raw = sample_tiles(img, CONFIG.mpp, CONFIG.tile_px)
        before = estimate_stains(raw).matrix
        after = estimate_stains(np.stack([transform(t) for t in raw])).matrix
        assert np.abs(after - ref).max() < np.abs(before - ref).max()
        assert np.abs(after - ref).max() < 0.03


def test_loader_workers_normalise_as_the_main_process_does(project):
    data = collect_images(project, CONFIG)
    stains = fit_training_stains(data, CONFIG)
    ds = TrainTileDataset(data.train_images, mpp=2.0, tile_px=64, seed=0, stains=stains.train)
    plain = TrainTileDataset(data.train_images, mpp=2.0, tile_px=64, seed=0)
    keys = [(0, i) for i in range(8)]
    main = [ds[k][0] for k in keys]
    raw = [plain[k][0] for k in keys]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=keys, num_workers=2)
    workers = [x for batch, _, _ in loader for x in batch]
    assert all(torch.equal(a, b) for a, b in zip(main, workers))
    assert np.mean([(a.int() - b.int()).abs().float().mean() for a, b in zip(main, raw)]) > 1
    with pytest.raises(ValueError, match="stain transforms"):
        TrainTileDataset(data.train_images, mpp=2.0, tile_px=64, seed=0, stains=stains.train[:1])


def test_train_stores_the_reference_in_the_model(project, tmp_path):
    train(project, tmp_path / "m", CONFIG)
    model_json = json.loads((tmp_path / "m" / "model.json").read_text())
    assert model_json["stain"]["method"] == "macenko" and len(model_json["stain"]["stain_matrix"]) == 2
    assert json.loads((tmp_path / "m" / "train_config.json").read_text())["config"]["stain_norm"] == "macenko"


def test_unknown_method_is_refused():
    with pytest.raises(InvalidSettingsError, match="--stain-norm"):
        dataclasses.replace(CONFIG, stain_norm="vahadane").validate()


def test_training_slides_without_stained_tissue_give_a_clear_error(project, tmp_path):
    """Glass only (a blank scan): fitting a reference is ill-posed and says so, naming the images."""
    data = collect_images(project, CONFIG)
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.full((2048, 2048, 3), 243, np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    glass = [dataclasses.replace(img, path=str(blank)) for img in data.train_images]
    data = dataclasses.replace(data, train_images=glass)
    with pytest.raises(StainNormalizationError, match=r"training images \(tumor_001\.tif.*--stain-norm none"):
        fit_training_stains(data, CONFIG)


def test_fine_tuning_keeps_the_parents_stain_reference(project, tmp_path):
    """``--init`` from a stain-normalised model: the child normalises to the parent's reference (not
    one refitted on today's slides) when --stain-norm is not given; asking for normalisation that the
    parent did not learn is refused."""
    train(project, tmp_path / "parent", CONFIG)
    parent = json.loads((tmp_path / "parent" / "model.json").read_text())["stain"]
    child_config = TrainConfig(init=str(tmp_path / "parent"), steps=1, tiles_per_epoch=4, batch_size=4,
                               val_images=("tumor_001.tif",), device="cpu", workers=0)
    train(project, tmp_path / "child", child_config)
    child = json.loads((tmp_path / "child" / "model.json").read_text())["stain"]
    assert child == parent  # validation slide changed: a refit would differ
    train(project, tmp_path / "plain", dataclasses.replace(CONFIG, stain_norm="none"))
    with pytest.raises(InvalidSettingsError, match="--stain-norm macenko does not match the --init model"):
        train(project, tmp_path / "x", dataclasses.replace(child_config, init=str(tmp_path / "plain"),
                                                           stain_norm="macenko"))
