"""The CUDA paths, checked on a GPU machine (``benchmarks/gpu.sh`` runs this file first).

Without a GPU every test here skips with that reason: CI has none. On one they check what the
CPU suite cannot: bf16 autocast + channels-last inference agrees with the CPU float32 map, both
kinds of tile readers (threads, DataLoader processes with pinned memory) give the same map on the
GPU, and a short AMP training run writes a loadable model and resumes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qupath_camseg.cli import main
from qupath_camseg.model import ModelConfig
from qupath_camseg.model import LoadedModel
from qupath_camseg.predict import PredictOptions, predict_slide
from qupath_camseg.synthetic import write_synthetic_slide

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


class _Darkness(torch.nn.Module):
    """Test double for a trained network: tumour logit from local darkness (as in test_predict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.avg_pool2d(F.pad(x.mean(1, keepdim=True), (5, 5, 5, 5), mode="replicate"), 11, stride=1)
        tumour = (170.0 - g) / 12.0
        return torch.cat([torch.zeros_like(tumour), tumour], 1)


def _model(device: str) -> LoadedModel:
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=4.0, tile_px=64,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    net = _Darkness().eval().to(device)
    if device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    return LoadedModel(net, cfg, None, f"darkness-{device}", device)


def _map(out) -> np.ndarray:
    from qupath_camseg.predict import ChunkStore, TilePlan

    meta = json.loads((out / "probability" / "slide" / "meta.json").read_text())
    plan = TilePlan(**{**meta["plan"], "map_size": tuple(meta["plan"]["map_size"])})
    store = ChunkStore.__new__(ChunkStore)
    store.folder, store.plan, store.n_channels = out / "probability" / "slide", plan, meta["n_channels"]
    w, h = plan.map_size
    return store.read_region((0, 0, w, h)).astype(int)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda") / "slide.tif"
    write_synthetic_slide(path, width=4096, height=3072, seed=5, mpp=1.0, tile_px=256)
    return path


def test_cuda_map_matches_cpu_and_readers_agree(slide, tmp_path):
    opts = {"chunk_px": 64, "batch_size": 8, "workers": 4}
    cpu = predict_slide(slide, _model("cpu"), tmp_path / "cpu", options=PredictOptions(device="cpu", **opts))
    thr = predict_slide(slide, _model("cuda"), tmp_path / "thr",
                        options=PredictOptions(device="cuda", readers="threads", **opts))
    proc = predict_slide(slide, _model("cuda"), tmp_path / "proc",
                         options=PredictOptions(device="cuda", readers="processes", **opts))
    assert thr.report["tiles"]["readers"] == "4 threads" and proc.report["tiles"]["readers"] == "4 processes"
    assert thr.report["device"].startswith("cuda")
    m_cpu, m_thr, m_proc = _map(tmp_path / "cpu"), _map(tmp_path / "thr"), _map(tmp_path / "proc")
    np.testing.assert_array_equal(m_thr, m_proc)  # same tiles, same batches, same GPU
    diff = np.abs(m_thr - m_cpu)
    assert diff.mean() < 1.0 and diff.max() <= 12, (diff.mean(), diff.max())  # bf16 vs float32
    assert (m_cpu > 127).mean() > 0.01  # a real comparison: there is tumour
    assert abs(thr.report["tumor_area_mm2"] - cpu.report["tumor_area_mm2"]) <= 0.05 * cpu.report["tumor_area_mm2"]


def test_cuda_training_with_amp_writes_a_model_and_resumes(tmp_path):
    proj, out = tmp_path / "proj", tmp_path / "model"
    assert main(["synth", str(proj), "--slides", "2", "--width", "1536", "--height", "1536", "--mpp", "1.0",
                 "--tile-px", "256", "--door", "files", "--seed", "3"]) == 0
    args = ["train", str(proj), "--out", str(out), "--device", "cuda", "--mpp", "2", "--tile", "64",
            "--width", "8", "--depth", "2", "--batch-size", "8", "-q"]
    assert main([*args, "--steps", "6"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"] and np.isfinite(metrics["history"][-1]["train_loss"])
    assert main([*args, "--steps", "10", "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["history"][-1]["step"] == 10
    assert main(["predict", str(proj), "--model", str(out), "--device", "cuda", "--progress", "none",
                 "--no-project-write"]) == 0
