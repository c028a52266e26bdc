"""Training throughput: the full loop (read → label → augment → step) vs the model's own step rate.

Both are measured in one run, on identical batches: the model-only rate replays batches drawn
from the same data pipeline (same keys, already in device memory) through the same step
function (photometric augmentation on the device, loss, backward, AdamW); the full loop is
:func:`qupath_camseg.train.train` for ``--steps`` steps (steady-state tiles/s, after the first
step). The ratio full/model-only is the figure of merit (issue 8 target on a GPU: ≥ 0.8).

    python benchmarks/bench_train.py                       # CPU-sized defaults
    python benchmarks/bench_train.py --device cuda --tile 512 --width 32 --batch-size 32 --steps 200

Prints a table and writes JSON (``--json``). Generates its synthetic project unless ``--project``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _make_project(folder: Path, *, slides: int, size_px: int, mpp: float) -> Path:
    from qupath_camseg.cli import main

    rc = main(
        [
            "synth",
            str(folder),
            "--slides",
            str(slides),
            "--width",
            str(size_px),
            "--height",
            str(size_px),
            "--mpp",
            str(mpp),
            "--door",
            "files",
        ]
    )
    if rc != 0:
        raise SystemExit(f"qcamseg synth failed ({rc})")
    return folder


def _model_only_rate(config, project: Path, device, steps: int) -> float:  # noqa: ANN001
    """Tiles/s of the step alone, replaying ``steps`` batches of the real pipeline from device memory."""
    import torch

    from qupath_camseg.augment import photometric
    from qupath_camseg.data import TileSampler, TrainTileDataset, collect_images
    from qupath_camseg.model import build_model, normalize_arch
    from qupath_camseg.train import _amp_dtype, _Dist, _step

    data = collect_images(project, classes=config.classes, mpp=config.mpp, tile_px=config.tile_px, seed=config.seed)
    ds = TrainTileDataset(data.train_images, mpp=config.mpp, tile_px=config.tile_px, seed=config.seed)
    sampler = TileSampler(steps, config.batch_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=config.batch_size, sampler=sampler, num_workers=0)
    batches = [(x.to(device), y.to(device), p.to(device)) for x, y, p in loader]
    torch.manual_seed(config.seed)
    model = build_model(normalize_arch({**config.arch, "n_classes": len(config.classes)})).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    amp = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    dist = _Dist()

    def run(batch) -> None:  # noqa: ANN001
        x, y, p = batch
        x = photometric(x.float(), p)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _step(model, model, opt, scaler, x, y.long(), amp, config.grad_clip, dist)

    model.train()
    run(batches[0])  # warm-up (allocations, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches[1:]:
        run(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (len(batches) - 1) * config.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, default=None, help="QuPath project (default: generate one)")
    ap.add_argument("--slides", type=int, default=3)
    ap.add_argument("--slide-px", type=int, default=2048, help="generated slide size, level-0 px")
    ap.add_argument("--slide-mpp", type=float, default=0.5, help="generated slide pixel size, µm/px")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mpp", type=float, default=2.0)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=Path("bench_train.json"))
    args = ap.parse_args(argv)

    import torch

    from qupath_camseg.train import TrainConfig, _Dist, _resolve_device, train

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device, _Dist())
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        project = args.project or _make_project(
            Path(tmp) / "proj", slides=args.slides, size_px=args.slide_px, mpp=args.slide_mpp
        )
        config = TrainConfig(
            mpp=args.mpp,
            tile_px=args.tile,
            steps=args.steps,
            tiles_per_epoch=args.steps * args.batch_size,
            batch_size=args.batch_size,
            arch={"name": "unet", "width": args.width, "depth": args.depth},
            device=str(device),
            workers=args.workers,
            max_val_tiles=8,
            checkpoint_every_s=1e9,
        )
        model_rate = _model_only_rate(config, project, device, min(args.steps, 20))
        result = train(project, Path(tmp) / "model", config)
    record = result["history"][-1]
    loop_rate = record["tiles_per_s_steady"] or record["tiles_per_s"]
    ratio = loop_rate / model_rate
    info = {
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "args": {k: str(v) for k, v in vars(args).items()},
        "workers": config.workers,
        "loop_tiles_per_s": loop_rate,
        "loop_tiles_per_s_incl_startup": record["tiles_per_s"],
        "data_wait_s": record["data_wait_s"],
        "train_time_s": record["train_time_s"],
        "model_only_tiles_per_s": model_rate,
        "ratio": ratio,
    }
    cpus = f"{info['cpu_count']} CPUs, torch threads {info['torch_threads']}"
    print(f"{'device':<28}{info['device']} ({info['device_name']}), {cpus}")
    net = f"width {args.width} depth {args.depth}"
    print(f"{'tile / batch / U-Net':<28}{args.tile} px @ {args.mpp} µm/px / {args.batch_size} / {net}")
    print(f"{'model-only step':<28}{model_rate:8.1f} tiles/s")
    waited = f"waited {record['data_wait_s']:.1f} s of {record['train_time_s']:.1f} s for data"
    print(f"{'full training loop':<28}{loop_rate:8.1f} tiles/s  ({waited})")
    print(f"{'ratio loop / model-only':<28}{ratio:8.2f}")
    args.json.write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
