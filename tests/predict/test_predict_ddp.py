"""``torchrun --nproc_per_node=2 -m qupath_camseg predict PROJECT``: the images are shared out
between two gloo/CPU processes, and the outputs are byte-identical to a single-process run.

Real torchrun (``python -m torch.distributed.run --standalone``: c10d rendezvous on a free
loopback port), a generated 4-slide project and a tiny seeded untrained U-Net (identity, not
accuracy, is what is checked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qupath_camseg._dist import shard_by_weight
from qupath_camseg.cli import main
from qupath_camseg.model import ModelConfig, build_model, save_bundle
from qupath_camseg.synthetic import write_synthetic_project

ARGS = ["--chunk-px", "64", "--batch-size", "8", "--workers", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    write_synthetic_project(root / "p", slides=4, width=1536, height=1536, seed=7, mpp=0.25, tile_px=256,
                            door="files")
    torch.manual_seed(0)
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=2.0, tile_px=32,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    save_bundle(root / "model", build_model(cfg.arch, pretrained=False), cfg)
    # the single-process reference, one thread like each torchrun process (OMP_NUM_THREADS=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["predict", str(root / "p"), "--model", str(root / "model"), "--progress", "none", *ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    shutil.move(root / "p" / "camseg" / "predictions", root / "single" / "predictions")
    for sub in ("probability", "heatmaps", "reports"):
        shutil.move(root / "p" / "camseg" / sub, root / "single" / sub)
    return {"root": root, "project": root / "p", "model": root / "model", "single": root / "single"}


def _torchrun(setup: dict[str, Path], progress: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "qupath_camseg", "predict", str(setup["project"]), "--model", str(setup["model"]),
           "--progress", progress, *ARGS]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def _strip_ids(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    for f in data["features"]:
        f.pop("id", None)
    return data


def test_two_ranks_match_one_process_and_rerun_skips(setup: dict[str, Path]) -> None:
    run = _torchrun(setup, "jsonl")
    assert run.returncode == 0, run.stdout + run.stderr
    events = [json.loads(ln) for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert events and all(e.get("rank") in (0, 1) for e in events)
    done = {e["image"]: e["rank"] for e in events if e["event"] == "done"}
    assert sorted(done) == [f"tumor_{k:03d}.tif" for k in range(1, 5)]  # every image once ...
    assert sorted(done.values()) == [0, 0, 1, 1]  # ... two per rank
    starts = [e["image"] for e in events if e["event"] == "start"]
    assert sorted(starts) == sorted(done)  # no image computed twice

    out, ref = setup["project"] / "camseg", setup["single"]
    entries = sorted(p.stem for p in (ref / "reports").glob("*.json"))
    assert len(entries) == 4
    for e in entries:
        chunks = sorted(p.name for p in (ref / "probability" / e).glob("r*"))
        assert chunks and chunks == sorted(p.name for p in (out / "probability" / e).glob("r*"))
        for name in chunks:
            assert (out / "probability" / e / name).read_bytes() == (ref / "probability" / e / name).read_bytes()
        assert (out / "heatmaps" / f"{e}.tif").read_bytes() == (ref / "heatmaps" / f"{e}.tif").read_bytes()
        features = _strip_ids(out / "predictions" / f"{e}.geojson")
        assert features == _strip_ids(ref / "predictions" / f"{e}.geojson")
        # every object is ours by name too (QuPath 0.4 drops detections' metadata when it saves)
        names = {(f["properties"]["objectType"], f["properties"]["name"]) for f in features["features"]}
        assert ("tile", "camseg tile") in names and ("annotation", "camseg Tissue") in names
        reviews = {n for n in names if n[0] == "annotation" and n[1].startswith("camseg Review ")}
        assert names - reviews <= {("tile", "camseg tile"), ("annotation", "camseg Tumor"), ("annotation", "camseg Tissue")}

    # a rerun skips every finished image, and only rank 0 prints the summary (one line per image)
    again = _torchrun(setup, "bar")
    assert again.returncode == 0, again.stdout + again.stderr
    summary = [ln for ln in again.stdout.splitlines() if "mm²" in ln]
    assert len(summary) == 4 and all("(already done)" in ln for ln in summary), again.stdout
    assert "[rank 1]" in again.stderr and "already predicted" in again.stderr

    # an image that fails on one rank: that rank prints its error as it happens, rank 0 the last line
    image = setup["project"] / "images" / "tumor_003.tif"
    image.rename(image.with_suffix(".moved"))
    try:
        failed = _torchrun(setup, "none")
    finally:
        image.with_suffix(".moved").rename(image)
    assert failed.returncode != 0  # torchrun exits 1 when a process exits 2
    lines = failed.stderr.splitlines()
    assert [ln for ln in lines if "tumor_003.tif: failed - image 'tumor_003.tif' not found" in ln
            and ln.startswith(("[rank 0] ", "[rank 1] "))], failed.stderr
    (last,) = [ln for ln in lines if ln.startswith("error: ")]  # rank 0 only: its own error, or a pointer
    assert last.startswith(("error: tumor_003.tif failed in torchrun process rank 1; see its message above",
                            "error: image 'tumor_003.tif' not found")), failed.stderr


def test_several_failures_each_printed_then_summary(setup: dict[str, Path], tmp_path: Path, capsys) -> None:
    """One process: with several failed images, each one's line (even with --progress none), then
    the summary; with one, only its own error."""
    write_synthetic_project(tmp_path / "p", slides=3, width=512, height=512, seed=3, mpp=0.25, tile_px=256,
                            door="files")
    images = tmp_path / "p" / "images"
    for name in ("tumor_001.tif", "tumor_002.tif"):
        (images / name).rename(tmp_path / name)
    args = ["predict", str(tmp_path / "p"), "--model", str(setup["model"]), "--progress", "none", *ARGS]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(": failed - ")[0] for ln in err[:-1]] == ["tumor_001.tif", "tumor_002.tif"]
    assert all("not found" in ln for ln in err[:-1])
    assert err[-1].startswith("error: 2 of 3 images failed (tumor_001.tif, tumor_002.tif)")
    (tmp_path / "tumor_001.tif").rename(images / "tumor_001.tif")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: image 'tumor_002.tif' not found at"), err
    assert (tmp_path / "p" / "camseg" / "reports" / "1.json").is_file()  # the others were predicted


def test_shard_by_weight_balances_and_is_round_robin_for_equal_weights() -> None:
    assert shard_by_weight([1, 1, 1, 1, 1], 2) == [0, 1, 0, 1, 0]
    owner = shard_by_weight([10, 1, 1, 1, 9, 2], 2)
    loads = [sum(w for w, o in zip([10, 1, 1, 1, 9, 2], owner) if o == r) for r in (0, 1)]
    assert sorted(loads) == [12, 12]
    assert shard_by_weight([5, 3], 1) == [0, 0]
    assert shard_by_weight([], 4) == []
