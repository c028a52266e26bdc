"""``qcamseg demo`` end to end (quick preset): every step runs, prints its command, and the
outputs a user is pointed at exist and make sense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qupath_camseg.cli import main
from qupath_camseg.cli.demo import demo_steps


def test_demo_steps_are_commands_the_cli_accepts(tmp_path: Path) -> None:
    from qupath_camseg.cli import cli

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "metrics.json").write_text("{}")  # the figure step checks it exists
    for args in demo_steps(tmp_path, size="quick"):
        command = cli.get_command(None, args[0])  # type: ignore[arg-type]
        assert command is not None, args[0]
        command.make_context(args[0], list(args[1:]), resilient_parsing=False)


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--size", "quick", "--out", str(out), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "$ qcamseg synth" in captured.err and "$ qcamseg predict" in captured.err
    assert "held-out slide Dice:" in captured.out
    for name in ["figure.png", "training_curve.png", "froc.png", "evaluation.json",
                 "model/model.safetensors", "model/model.json", "project/project.qpproj"]:
        assert (out / name).is_file(), name
    report = json.loads((out / "evaluation.json").read_text())
    held_out = next(s for s in report["slides"] if s["image"] == "tumor_003.tif")
    # A broken pipeline (misaligned tiles, inverted classes, empty predictions) scores near 0.
    assert held_out["dice"] is not None and held_out["dice"] > 0.5
    assert report["overall"]["slide_auc"] is not None
    # the model is calibrated, the headline is over held-out slides, and the heatmaps' ECE is reported
    assert "calibration" in json.loads((out / "model" / "model.json").read_text())
    assert (out / "model" / "reliability.png").is_file()
    assert report["overall"]["scope"] == "held_out" and report["overall"]["ece"] is not None
    assert {s["role"] for s in report["slides"]} == {"val", "unseen"}
    assert "mean tumour probability on normal tissue" in captured.out
    predictions = sorted((out / "project" / "camseg" / "predictions").glob("*.geojson"))
    assert len(predictions) == 2
