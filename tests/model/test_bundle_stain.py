"""The stain reference in a model folder: stored with ``--stain-norm``, absent otherwise (older
model folders load and predict as before), refused with a clear error when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model import ModelConfig, build_model, load_bundle, read_model_config, save_bundle
from qupath_camseg.wsi import StainReference

ARCH = {"name": "unet", "width": 4, "depth": 2}
REF = StainReference(((0.65, 0.70, 0.29), (0.07, 0.99, 0.11)), (1.6, 0.5), pixels=1234)


def _save(folder: Path, **kw) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch=ARCH, mpp=2.0, tile_px=64, classes=[{"name": "Tumor", "color": [200, 0, 0]}], **kw)
    save_bundle(folder, build_model({**ARCH, "n_classes": 1}), cfg)


def test_round_trip_with_a_stain_reference(tmp_path: Path) -> None:
    _save(tmp_path / "m", stain=REF.to_json())
    _, cfg = load_bundle(tmp_path / "m")
    assert cfg.stain_reference is not None
    assert cfg.stain_reference.max_concentrations == REF.max_concentrations
    assert cfg.stain_reference.matrix == pytest.approx(REF.matrix / (REF.matrix**2).sum(1, keepdims=True) ** 0.5)
    assert json.loads((tmp_path / "m" / "model.json").read_text())["stain"]["method"] == "macenko"


def test_without_the_field_model_json_is_as_before_and_loads(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "stain" not in data  # a model trained without --stain-norm writes what older versions wrote
    _, cfg = load_bundle(tmp_path / "m")
    assert cfg.stain is None and cfg.stain_reference is None
    data.pop("version")  # an older model.json (no stain, other version) reads the same
    (tmp_path / "m" / "model.json").write_text(json.dumps(data))
    assert read_model_config(tmp_path / "m").stain_reference is None


@pytest.mark.parametrize("bad", [{"method": "macenko", "stain_matrix": [[1, 0, 0]], "max_concentrations": [1, 1]},
                                 {"method": "reinhard"}, "macenko"])
def test_a_damaged_stain_entry_names_the_file(tmp_path: Path, bad) -> None:
    _save(tmp_path / "m", stain=REF.to_json())
    path = tmp_path / "m" / "model.json"
    data = json.loads(path.read_text())
    data["stain"] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(ModelBundleError, match=r"model\.json: stain: .*retrain the model"):
        read_model_config(tmp_path / "m")
