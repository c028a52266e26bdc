"""``--door auto|files|paquo`` on train, predict, evaluate and figure (issue 16, point 11).

Where paquo finds QuPath, ``auto`` reads QuPath's saved data, not the annotations the Groovy
export has just written to ``camseg/annotations/`` ("changes not saved yet"); the Groovy scripts
therefore pass ``--door files``, which must win whatever is installed. Each command says which
door it used and how many annotations per image it read. QuPath is not installed here: paquo's
finder is made to report one (the paquo door itself then fails, as it would without QuPath).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qupath_camseg.cli import main

_TINY = ["--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2", "--steps", "1", "--workers", "0", "-q"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = tmp_path_factory.mktemp("doors") / "proj"
    assert main(["synth", str(proj), "--slides", "2", "--negatives", "1", "--width", "1024", "--height", "1024",
                 "--door", "files"]) == 0
    truth = json.loads((proj / "camseg" / "annotations" / "1.geojson").read_text(encoding="utf-8"))
    for f in truth["features"]:
        f["properties"]["metadata"] = {"created_by": "qupath-camseg"}
    (proj / "camseg" / "predictions").mkdir()
    (proj / "camseg" / "predictions" / "1.geojson").write_text(json.dumps(truth), encoding="utf-8")
    return proj


@pytest.fixture()
def qupath_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """paquo's finder reports a QuPath installation (door "auto" then picks paquo)."""
    import qupath_camseg.qupath.doors as doors

    monkeypatch.setattr(doors, "find_qupath_installation", lambda: (tmp_path, "found by paquo (simulated)"))


def _n(project: Path, entry: str) -> int:
    return len(json.loads((project / "camseg" / "annotations" / f"{entry}.geojson").read_text())["features"])


def test_train_reads_the_exported_files_with_door_files(project: Path, tmp_path: Path, qupath_found: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(project), "--out", str(tmp_path / "auto"), *_TINY]) == 2  # auto: paquo
    assert "paquo door" in capsys.readouterr().err
    assert main(["train", str(project), "--out", str(tmp_path / "m"), *_TINY, "--door", "files"]) == 0
    err = capsys.readouterr().err
    assert f"annotations read through the files door (tumor_001.tif {_n(project, '1')}, normal_002.tif 0)" in err
    saved = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert saved["config"]["door"] == "files" and saved["data"]["door"] == "files"


def test_evaluate_and_figure_say_which_door(project: Path, tmp_path: Path, qupath_found: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(project), "--door", "files", "--json", str(tmp_path / "e.json")]) == 0
    err = capsys.readouterr().err
    assert f"ground truth read through the files door (annotations per image: tumor_001.tif {_n(project, '1')})" in err
    assert json.loads((tmp_path / "e.json").read_text())["door"] == "files"
    assert main(["figure", str(project), "--image", "tumor_001.tif", "--door", "files",
                 "--out", str(tmp_path / "f.png")]) == 0
    assert f"ground truth: {_n(project, '1')} annotation(s) of tumor_001.tif read through the files door" in (
        capsys.readouterr().err)


def test_predict_door_files_writes_camseg_only(project: Path, tmp_path: Path, qupath_found: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from qupath_camseg.model import ModelConfig, build_model, save_bundle

    torch.manual_seed(0)
    cfg = ModelConfig(arch={"name": "unet", "width": 4, "depth": 2}, mpp=2.0, tile_px=32,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    save_bundle(tmp_path / "model", build_model(cfg.arch, pretrained=False), cfg)
    assert main(["predict", str(project), "--model", str(tmp_path / "model"), "--images", "normal_002.tif",
                 "--door", "files", "--overwrite"]) == 0
    assert "results go to camseg/ only (files door" in capsys.readouterr().err
    assert (project / "camseg" / "predictions" / "2.geojson").is_file()
