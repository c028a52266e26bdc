"""Model folders: round trip, atomic layout, refusal of pickles, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qupath_camseg.errors import ModelBundleError, OutputNotWritableError
from qupath_camseg.model import (
    Calibration,
    ModelConfig,
    build_model,
    load_bundle,
    read_model_config,
    save_bundle,
    write_model_config,
)

ARCH = {"name": "unet", "width": 4, "depth": 2, "norm": "batch"}


def _config(**kw) -> ModelConfig:
    base = dict(arch=ARCH, mpp=2.0, tile_px=64, classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    base.update(kw)
    return ModelConfig(**base)


def _trained_model() -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model({**ARCH, "n_classes": 1})
    model.train()
    with torch.no_grad():  # move BatchNorm running stats away from their defaults
        model(torch.rand(4, 3, 32, 32) * 255)
    return model.to(memory_format=torch.channels_last)


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _trained_model().eval()
    save_bundle(tmp_path / "m", model, _config(training={"epochs": 3}))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded, cfg = load_bundle(tmp_path / "m")
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training
    assert cfg.class_names == ["Tumor"] and cfg.mpp == 2.0 and cfg.tile_px == 64
    assert cfg.training == {"epochs": 3} and cfg.n_channels == 2 and cfg.input_multiple == 4
    data = json.loads((tmp_path / "m" / "model.json").read_text())
    assert data["arch"]["n_classes"] == 1 and data["output"]["channels"] == ["background", "Tumor"]
    assert data["input"]["range"] == [0, 255] and data["version"]
    # a file inside the folder is accepted as the folder
    assert load_bundle(tmp_path / "m" / "model.json")[1].class_names == ["Tumor"]


def test_n_classes_follows_classes() -> None:
    cfg = _config(classes=[{"name": "Tumor", "color": [200, 0, 0]}, {"name": "Stroma"}])
    from qupath_camseg.annotations import default_class_color

    assert cfg.arch["n_classes"] == 2 and cfg.classes[1]["color"] == list(default_class_color("Stroma"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_pickles_are_refused(tmp_path: Path, suffix: str) -> None:
    f = tmp_path / f"model{suffix}"
    torch.save(build_model(ARCH).state_dict(), f)
    with pytest.raises(ModelBundleError, match="never unpickles"):
        load_bundle(f)
    with pytest.raises(ModelBundleError, match="never unpickles"):
        load_bundle(tmp_path)


def test_pickle_disguised_as_safetensors_is_refused(tmp_path: Path) -> None:
    save_bundle(tmp_path, _trained_model(), _config())
    torch.save(build_model(ARCH).state_dict(), tmp_path / "model.safetensors")  # a zip pickle
    with pytest.raises(ModelBundleError, match="not a valid safetensors file"):
        load_bundle(tmp_path)


def test_missing_and_incomplete_folders(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError, match="does not exist; train one with: qcamseg train"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelBundleError, match="has no model.json"):
        load_bundle(tmp_path / "empty")
    save_bundle(tmp_path / "m", _trained_model(), _config())
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelBundleError, match="no model.safetensors"):
        load_bundle(tmp_path / "m")


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"mpp": -1}, "mpp must be a positive"),
        ({"tile_px": "big"}, "tile_px"),
        ({"classes": []}, "classes"),
        ({"classes": [{"name": "T", "color": [300, 0, 0]}]}, "color"),
        ({"arch": {"name": "transformer"}}, "unknown architecture"),
        ({"format_version": 99}, "upgrade"),
        ({"format": "something-else"}, "not a qupath-camseg model"),
    ],
)
def test_invalid_json_is_explained(tmp_path: Path, patch: dict, match: str) -> None:
    save_bundle(tmp_path, _trained_model(), _config())
    data = json.loads((tmp_path / "model.json").read_text())
    data.update(patch)
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelBundleError, match=match):
        read_model_config(tmp_path)


def test_not_json_and_missing_keys(tmp_path: Path) -> None:
    save_bundle(tmp_path, _trained_model(), _config())
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelBundleError, match="not valid JSON"):
        load_bundle(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"arch": ARCH}))
    with pytest.raises(ModelBundleError, match="lacks mpp, tile_px, classes"):
        load_bundle(tmp_path)


def test_weights_from_another_architecture(tmp_path: Path) -> None:
    save_bundle(tmp_path, _trained_model(), _config())
    data = json.loads((tmp_path / "model.json").read_text())
    data["arch"]["width"] = 8
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelBundleError, match="does not match the architecture"):
        load_bundle(tmp_path)


def test_unwritable_folder(tmp_path: Path) -> None:
    """A path below a regular file cannot be created (works even as root, unlike chmod)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="cannot write"):
        save_bundle(blocker / "m", _trained_model(), _config())


# ------------------------------------------------------------------ calibration
def test_calibration_round_trip_and_old_folders_without_it(tmp_path: Path) -> None:
    model = _trained_model().eval()
    save_bundle(tmp_path / "old", model, _config())
    data = json.loads((tmp_path / "old" / "model.json").read_text())
    assert "calibration" not in data and "calibration" not in data["output"]  # the old format, unchanged
    assert read_model_config(tmp_path / "old").calibration is None
    cal = Calibration(0.25, (0.5, -1.5), {"priors": {"sampled": [0.7, 0.3], "true": [0.9, 0.1]}})
    cfg = read_model_config(tmp_path / "old")
    cfg.calibration = cal
    write_model_config(tmp_path / "old", cfg)
    data = json.loads((tmp_path / "old" / "model.json").read_text())
    assert data["calibration"]["temperature"] == 0.25 and data["calibration"]["logit_bias"] == [0.5, -1.5]
    assert data["calibration"]["formula"] == data["output"]["calibration"] == "softmax(logits / temperature + logit_bias)"
    back = load_bundle(tmp_path / "old")[1].calibration
    assert back == cal and back.details["priors"]["true"] == [0.9, 0.1]
    x = torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(back.apply(x), x / 0.25 + torch.tensor([0.5, -1.5]).view(1, 2, 1, 1))


@pytest.mark.parametrize(
    ("calibration", "match"),
    [
        ({"temperature": 0, "logit_bias": [0, 0]}, "temperature must be a positive number"),
        ({"temperature": float("nan"), "logit_bias": [0, 0]}, "temperature must be a positive number"),
        ({"temperature": 1.0, "logit_bias": [0, "a"]}, "logit_bias must be a list of finite numbers"),
        ({"temperature": 1.0}, "logit_bias must be a list of finite numbers"),
        ({"temperature": 1.0, "logit_bias": [0, 0, 0]}, "3 logit_bias values for 2 output channels"),
        ([1, 2], "calibration must be an object"),
    ],
)
def test_invalid_calibration_is_explained(tmp_path: Path, calibration: object, match: str) -> None:
    save_bundle(tmp_path / "m", _trained_model().eval(), _config())
    path = tmp_path / "m" / "model.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "calibration": calibration}))
    with pytest.raises(ModelBundleError, match=match) as err:
        load_bundle(tmp_path / "m")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
