"""Smoke-run every script in examples/ on a generated project, as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qupath_camseg.annotations import write_asap_xml
from qupath_camseg.qupath import open_project

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _run(*args: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-slide synth project and a model trained on it by the training example."""
    tmp = tmp_path_factory.mktemp("examples")
    project = tmp / "project"
    _run(sys.executable, "-m", "qupath_camseg", "synth", str(project), "--slides", "3", "--width", "2048",
         "--height", "2048", "--seed", "3", cwd=tmp)
    out = _run(sys.executable, str(EXAMPLES / "train_on_qupath_project.py"), str(project), str(tmp / "model"),
               "--steps", "30", cwd=tmp)
    assert "Tumor annotation(s)" in out and "validation Dice" in out
    return project, tmp / "model"


@pytest.mark.slow
def test_predict_one_slide_and_evaluate_camelyon_xml(trained: tuple[Path, Path], tmp_path: Path) -> None:
    project, model = trained
    with open_project(project) as p:
        entry = p.entries[-1]
        slide = p.image_path(entry)
        truth = [o for o in p.read_annotations(entry) if o.classification == "Tumor"]
    out = _run(sys.executable, str(EXAMPLES / "predict_one_slide.py"), str(slide), str(model),
               str(tmp_path / "pred"), cwd=tmp_path)
    assert "tumour region(s)" in out
    heatmap = tmp_path / "pred" / "heatmaps" / f"{slide.stem}.tif"
    report = json.loads((tmp_path / "pred" / "reports" / f"{slide.stem}.json").read_text())
    assert heatmap.is_file() and report["tumor_area_mm2"] > 0

    xml = tmp_path / "truth.xml"
    write_asap_xml(xml, truth)  # the ground truth as Camelyon16 would ship it
    out = _run(sys.executable, str(EXAMPLES / "evaluate_camelyon16_xml.py"), "--mpp", "0.25",
               f"2048,2048,{xml},{heatmap}", cwd=tmp_path)
    assert "FROC score" in out and "sensitivity at 8 FP/slide" in out
    assert heatmap.with_suffix(".csv").is_file()


def test_groovy_workflow_installs_scripts(tmp_path: Path) -> None:
    target = tmp_path / "scripts"
    out = _run("bash", str(EXAMPLES / "groovy_workflow.sh"), str(target), cwd=tmp_path)
    assert "camseg Configure Python" in out
    assert (target / "camseg_Predict_for_project.groovy").is_file()
