"""``qcamseg predict`` end to end: JSON-lines events, projects, errors, and resume after ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from qupath_camseg.annotations import validate_qupath_geojson
from qupath_camseg.cli import cli, main
from qupath_camseg.model import ModelConfig, build_model, save_bundle
from qupath_camseg.synthetic import write_synthetic_slide


def _bundle(folder, *, mpp: float, width: int = 8, tile_px: int = 32):
    """A model folder with random (seeded) weights: enough for the mechanics, not for accuracy."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch={"name": "unet", "width": width, "depth": 2}, mpp=mpp, tile_px=tile_px,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    save_bundle(folder, build_model(cfg.arch, pretrained=False), cfg)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_synthetic_slide(d / "slide.tif", width=2048, height=1536, seed=4, mpp=1.0, tile_px=256)
    return {"dir": d, "slide": d / "slide.tif", "model": _bundle(d / "model", mpp=4.0),
            "fine_model": _bundle(d / "fine", mpp=0.25)}


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_jsonl_events_and_outputs(data, tmp_path):
    runner = CliRunner()
    args = ["predict", str(data["slide"]), "--model", str(data["model"]), "--out", str(tmp_path / "o"),
            "--progress", "jsonl", "--workers", "2", "--chunk-px", "64"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    events = _events(res.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "note" and kinds[1] == "start" and kinds[-1] == "done"
    assert set(kinds) <= {"note", "start", "progress", "done"}
    start, last = events[1], [e for e in events if e["event"] == "progress"][-1]
    assert start["image"] == "slide.tif" and start["tiles"] > 0
    assert last["done"] == last["total"] == start["tiles"] and last["tiles_per_s"] > 0
    outputs = events[-1]["outputs"]
    assert set(outputs) == {"geojson", "heatmap", "report"}
    for p in outputs.values():
        assert os.path.isfile(p)
    with open(outputs["geojson"], encoding="utf-8") as fh:
        validate_qupath_geojson(json.load(fh))
    # a rerun skips the finished image
    res = runner.invoke(cli, args)
    assert [e["event"] for e in _events(res.stdout)] == ["note", "skip"]


@pytest.mark.multiprocessing
def test_reader_and_tissue_mask_options_reach_the_report(data, tmp_path):
    """--readers processes and --no-tissue-mask (deprecated: --tissue none) are honoured (the report
    says which readers ran)."""
    runner = CliRunner()
    base = ["predict", str(data["slide"]), "--model", str(data["model"]), "--progress", "none", "--workers", "2"]
    res = runner.invoke(cli, [*base, "--out", str(tmp_path / "a"), "--readers", "processes", "--no-tissue-mask"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "a" / "reports" / "slide.json").read_text(encoding="utf-8"))
    assert rep["tiles"]["readers"] == "2 processes"
    assert rep["settings"]["readers"] == "processes" and rep["settings"]["tissue"] == "none"
    assert "deprecated" in res.output.lower() and "--tissue none" in res.output
    res = runner.invoke(cli, [*base, "--out", str(tmp_path / "b"), "--readers", "threads"])
    assert res.exit_code == 0, res.output
    rep_b = json.loads((tmp_path / "b" / "reports" / "slide.json").read_text(encoding="utf-8"))
    assert rep_b["tiles"]["readers"] == "2 threads" and rep_b["settings"]["tissue"] == "auto"
    assert rep_b["tiles"]["active"] < rep["tiles"]["active"]  # without a mask, the glass is computed too
    assert rep_b["settings_key"] != rep["settings_key"]  # the tissue mask changes the map


def test_bar_mode_shows_progress_on_stderr(data, tmp_path):
    res = CliRunner().invoke(cli, ["predict", str(data["slide"]), "--model", str(data["model"]),
                                   "--out", str(tmp_path), "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "tile/s" in res.stderr and "slide.tif" in res.stderr
    assert "mm²" in res.stdout


@pytest.mark.parametrize("case", ["no_model", "no_slide", "fine_model", "images_on_slide", "bad_roi"])
def test_errors_are_one_line_exit_2(data, tmp_path, capsys, case):
    slide, model = str(data["slide"]), str(data["model"])
    args = {
        "no_model": ["predict", slide, "--model", str(tmp_path / "missing")],
        "no_slide": ["predict", str(tmp_path / "missing.svs"), "--model", model],
        "fine_model": ["predict", slide, "--model", str(data["fine_model"]), "--out", str(tmp_path)],
        "images_on_slide": ["predict", slide, "--model", model, "--images", "x"],
        "bad_roi": ["predict", slide, "--model", model, "--roi", str(tmp_path / "none.geojson"), "--out", str(tmp_path)],
    }[case]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    expect = {"no_model": "missing does not exist", "no_slide": "missing.svs does not exist",
              "fine_model": "0.25 µm/px", "images_on_slide": "--images", "bad_roi": "none.geojson does not exist"}[case]
    assert expect in err
    if case != "images_on_slide":
        assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_jsonl_error_event(data, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "x.tif"), "--model", str(data["model"]), "--progress", "jsonl"]) == 2
    (event,) = _events(capsys.readouterr().out)
    assert event["event"] == "error" and "x.tif does not exist" in event["message"]


def test_project_outputs_under_camseg(data, tmp_path):
    from qupath_camseg.synthetic import write_synthetic_project

    write_synthetic_project(tmp_path / "p", slides=1, width=1024, height=1024, seed=1, mpp=1.0, door="files")
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "p"), "--model", str(data["model"]), "--images",
                                   "tumor_001.tif", "--progress", "jsonl", "--no-project-write"])
    assert res.exit_code == 0, res.output
    done = _events(res.stdout)[-1]
    assert done["event"] == "done" and done["image"] == "tumor_001.tif"
    assert done["outputs"]["geojson"] == str(tmp_path / "p" / "camseg" / "predictions" / "1.geojson")
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "p"), "--model", str(data["model"]), "--out", "x"])
    assert res.exit_code == 2 and "--out" in res.output


def _args(data, out, progress="jsonl"):
    return ["predict", str(data["slide"]), "--model", str(data["model"]), "--out", str(out), "--progress",
            progress, "--chunk-px", "32", "--batch-size", "8", "--workers", "1", "--device", "cpu"]


def test_kill_9_then_rerun_equals_uninterrupted_run(data, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    assert main(_args(data, clean, "none")) == 0  # uninterrupted reference
    chunks = sorted((clean / "probability" / "slide").glob("r*.zlib"))
    store = killed / "probability" / "slide"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "qupath_camseg", *_args(data, killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    try:  # kill -9 once about a third of the chunks are on disk
        while len(list(store.glob("r*.zlib"))) < len(chunks) // 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "reports" / "slide.json").exists()
    assert 0 < len(list(store.glob("r*.zlib"))) < len(chunks)
    assert main(_args(data, killed, "none")) == 0  # resumes
    report = json.loads((killed / "reports" / "slide.json").read_text())
    assert report["tiles"]["resumed"] and report["tiles"]["computed_this_run"] < report["tiles"]["active"]
    assert {p.name for p in chunks} == {p.name for p in store.glob("r*.zlib")}
    for p in chunks:
        assert (store / p.name).read_bytes() == p.read_bytes(), p.name
    assert (killed / "heatmaps" / "slide.tif").read_bytes() == (clean / "heatmaps" / "slide.tif").read_bytes()

    def strip_ids(path):
        data = json.loads(path.read_text())
        for f in data["features"]:
            f.pop("id", None)
        return data

    assert strip_ids(killed / "predictions" / "slide.geojson") == strip_ids(clean / "predictions" / "slide.geojson")


# ------------------------------------------------------------------ issue 16 point 5: one run per project
_SLOW_RUN = """
import sys, time
import qupath_camseg.predict.project as pp
def slow_slide(*args, **kwargs):  # stands in for a slide that takes an hour
    print("predicting", flush=True)
    time.sleep(120)
pp.predict_slide = slow_slide
pp.predict_project(sys.argv[1], sys.argv[2], project_write=False)
"""


def test_a_running_predict_holds_the_project(data, tmp_path):
    """While one predict runs, a second predict and an import-annotations stop at once with the
    lock's message and write nothing (they used to run beside it, finishing another image)."""
    from qupath_camseg.annotations import QPObject, write_geojson
    from qupath_camseg.synthetic import write_synthetic_project

    proj = tmp_path / "p"
    write_synthetic_project(proj, slides=2, width=1024, height=1024, seed=1, mpp=1.0, door="files")
    runner = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(proj), str(data["model"])],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None and runner.stdout.readline().strip() == "predicting"
        before = sorted(p.relative_to(proj) for p in proj.rglob("*") if p.is_file())
        second = subprocess.run([sys.executable, "-m", "qupath_camseg", "predict", str(proj), "--model",
                                 str(data["model"]), "--progress", "none"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "in use by qcamseg pid" in second.stderr and "wait for it to finish" in second.stderr
        mine = write_geojson(tmp_path / "mine.geojson", [QPObject(geometry=__import__("shapely").box(1, 1, 9, 9),
                                                                   classification="Tumor")])
        imp = subprocess.run([sys.executable, "-m", "qupath_camseg", "import-annotations", str(proj), str(mine),
                              "--image", "tumor_001.tif", "--door", "files"], capture_output=True, text=True, timeout=120)
        assert imp.returncode == 2 and "in use by qcamseg pid" in imp.stderr, imp.stderr
        after = sorted(p.relative_to(proj) for p in proj.rglob("*") if p.is_file())
        assert [p for p in after if p not in before and not p.name.startswith("camseg.lock")] == []
    finally:
        runner.kill()
        runner.wait()
        runner.stdout.close()  # type: ignore[union-attr]
