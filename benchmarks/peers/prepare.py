"""The peers' comparison, our side (run with qupath-camseg's Python): the slide, the network, our timings.

    python benchmarks/peers/prepare.py --workdir W            # slide, model, exports (cached)
    python benchmarks/peers/prepare.py --workdir W --ours     # time qcamseg predict + model only
    python benchmarks/peers/prepare.py --workdir W --table    # the table from every W/*.json

The issue-18 setup: one 12,288² synthetic slide at 0.25 µm/px (``W/slides/slide_12288.tif``, seed
1812), a U-Net of width 16, depth 4 trained 30 steps at 1 µm/px on 256² tiles (an early model:
its map is speckled) on a synthetic project of 4 slides (seed 0), no screen (one full pass, as the
peers do). Exports for the peers: ``W/unet.ts`` (TorchScript: float RGB 0–255 NCHW → class
probabilities) and ``W/unet_pooled.ts`` + ``W/wsinfer.json`` (WSInfer classifies patches:
ToTensor's 0–1 RGB → the mean tumour probability of the patch as two class scores).
``--ours`` times ``qcamseg predict`` (defaults, and ``--threshold 0.99``: no region polygons) in
fresh processes, and the model alone on the same slide's tiles (``bench_camelyon.model_only_rate``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def prepare(work: Path) -> None:
    import torch

    from qupath_camseg.model import load_model
    from qupath_camseg.synthetic import write_synthetic_slide

    project, model, slide = work / "project", work / "model", work / "slides" / "slide_12288.tif"
    if not (project / "project.qpproj").is_file():
        _q("synth", str(project), "--slides", "4", "--width", "4096", "--height", "4096", "--seed", "0",
           "--overwrite", "--door", "files")
    if not (model / "model.json").is_file():
        _q("train", str(project), "--out", str(model), "--mpp", "1.0", "--tile", "256", "--width", "16", "--depth",
           "4", "--steps", "30", "--device", "cpu", "--seed", "0", "-q", "--no-screen")
    if not slide.is_file():
        slide.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_slide(slide, width=12288, height=12288, seed=1812)
    lm = load_model(model, device="cpu")
    net = lm.model.eval()

    class Probs(torch.nn.Module):  # 0–255 RGB → class probabilities (what qcamseg blends)
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), 1)

    class Pooled(torch.nn.Module):  # 0–1 RGB (WSInfer's ToTensor) → two class scores of the patch
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = torch.softmax(self.net(x * 255.0), 1)[:, 1].mean(dim=(1, 2)).clamp(1e-6, 1 - 1e-6)
            return torch.stack([torch.log(1 - p), torch.log(p)], 1)

    example = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(Probs().eval(), example * 255, check_trace=False), str(work / "unet.ts"))
        torch.jit.save(torch.jit.trace(Pooled().eval(), example, check_trace=False), str(work / "unet_pooled.ts"))
    config = {"spec_version": "1.0", "architecture": "qcamseg-unet-w16-d4-pooled", "num_classes": 2,
              "class_names": ["notumor", "tumor"], "patch_size_pixels": 256, "spacing_um_px": 1.0,
              "transform": [{"name": "ToTensor"}]}
    (work / "wsinfer.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _q(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qupath_camseg", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ours(work: Path) -> None:
    """Time our predict (fresh processes) and the model alone on the same tiles; append to W/ours.json."""
    from bench_camelyon import model_only_rate

    slide, model = work / "slides" / "slide_12288.tif", work / "model"
    rec = {"defaults_s": _q("predict", str(slide), "--model", str(model), "--out", str(work / "ours"),
                            "--overwrite", "--progress", "none", "--device", "cpu"),
           "threshold_099_s": _q("predict", str(slide), "--model", str(model), "--out", str(work / "ours99"),
                                 "--overwrite", "--progress", "none", "--device", "cpu", "--threshold", "0.99")}
    rep = json.loads((work / "ours" / "reports" / "slide_12288.json").read_text(encoding="utf-8"))
    t = rep["timings_s"]
    rec.update(tiles=rep["tiles"]["active"], in_predict_s=t["total"],
               polygon_stage_s=t["outputs_waiting_for_summaries"] + t["outputs_objects"],
               model_only_tiles_per_s=model_only_rate(slide, model, device="cpu", batch_size=16,
                                                      max_tiles=10_000)["tiles_per_s"])
    path = work / "ours.json"
    runs = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    path.write_text(json.dumps([*runs, rec], indent=2) + "\n", encoding="utf-8")
    print(json.dumps(rec))


def table(work: Path) -> str:
    """Medians of every round: wall time, tiles, and (ours) end to end ÷ model only."""
    rows = [f"{'pipeline':<44} {'tiles':>6} {'wall s':>8} {'end to end ÷ model only':>24}"]
    runs = json.loads((work / "ours.json").read_text(encoding="utf-8"))
    mo = statistics.median(r["model_only_tiles_per_s"] for r in runs)
    tiles = runs[-1]["tiles"]
    for key, label in (("defaults_s", "qcamseg predict (defaults)"), ("threshold_099_s", "qcamseg predict --threshold 0.99")):
        wall = statistics.median(r[key] for r in runs)
        rows.append(f"{label:<44} {tiles:>6} {wall:8.1f} {tiles / wall / mo:24.2f}")
    for f in sorted(work.glob("peer-*.json")):
        peer = json.loads(f.read_text(encoding="utf-8"))
        walls = [r["wall_s"] for r in peer]
        n = peer[-1].get("patches") or 0
        rows.append(f"{peer[-1]['peer']:<44} {n:>6} {statistics.median(walls):8.1f} "
                    f"{(n / statistics.median(walls) / mo) if n else float('nan'):24.2f}")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--ours", action="store_true")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(table(args.workdir))
    elif args.ours:
        ours(args.workdir)
    else:
        prepare(args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
