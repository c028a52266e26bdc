"""The pipeline around the model: ``predict_slide`` with a model that costs (almost) nothing.

On a GPU the default U-Net runs ~1,200 tiles/s, so whatever ``predict_slide`` does around the
model (tile reads, host→device copies, blending, chunk writes, the per-slide output stage) sets
the pace. This benchmark measures that part *on any machine*: the model is a 1×1 convolution with
the real contract (float RGB 0–255 ``(N, 3, H, W)`` in, logits ``(N, 2, H, W)`` out), so what
remains is the pipeline. In one process, on one synthetic slide:

* ``read only``       - the same active tiles read by the same readers (``workers`` threads or processes), no model;
* ``inference stage`` - ``run_inference`` inside ``predict_slide`` (reads + model + blending + chunk writes);
* ``end to end``      - ``predict_slide`` wall time (adds tissue mask, vectorising, GeoJSON, heatmap).

Figures of merit: inference-stage tiles/s ÷ read-only tiles/s (1.0 = the pipeline costs nothing
beyond reading) and end-to-end ÷ read-only. Best of ``--repeats``; the load average is recorded.

    python benchmarks/bench_pipeline.py --workdir /tmp/bpipe            # 16k² slide at 0.25 µm/px
    python benchmarks/bench_pipeline.py --readers threads processes       # both kinds of tile readers
    python benchmarks/bench_pipeline.py --device cuda --workers 16 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _trivial_model(n_channels: int) -> Any:
    import torch

    class Trivial(torch.nn.Module):
        """1×1 convolution: the model contract at ~zero cost (weights scaled for inputs in 0–255)."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, n_channels, 1)
            with torch.no_grad():
                self.conv.weight /= 255.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    return Trivial().eval()


def _loaded_model(work: Path, *, mpp: float, tile_px: int, device: str) -> Any:
    """A :class:`~qupath_camseg.model.loaded.LoadedModel` whose network is the trivial model."""
    import torch

    from qupath_camseg.model import ModelConfig, build_model, save_bundle
    from qupath_camseg.model import LoadedModel, load_model

    folder = work / f"pipeline_model_{mpp:g}_{tile_px}"
    if not (folder / "model.json").is_file():
        cfg = ModelConfig(arch={"name": "unet", "width": 4, "depth": 2}, mpp=mpp, tile_px=tile_px,
                          classes=[{"name": "Tumor", "color": [200, 0, 0]}])
        save_bundle(folder, build_model(cfg.arch, pretrained=False), cfg)
    lm = load_model(folder, device=device)
    model = _trivial_model(lm.config.n_channels).to(lm.device)
    if lm.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(model, lm.config, lm.path, lm.sha256, lm.device)


def _read_only(slide: Path, lm: Any, workers: int, opts: Any, processes: bool) -> tuple[float, int]:
    """Tiles/s reading the active tiles of ``slide`` with ``workers`` threads or DataLoader worker
    processes (as run_inference does)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from qupath_camseg.predict import TileBatches, TilePlan, TileReader
    from qupath_camseg.predict.roi import active_tiles
    from qupath_camseg.wsi import detect_tissue, open_slide

    with open_slide(slide) as s:
        plan = TilePlan.create(s.dimensions, s.mpp, lm.config.mpp, tile_px=lm.config.tile_px,
                               overlap=opts.overlap, chunk_px=opts.chunk_px, stripe_chunks=opts.stripe_chunks)
        active = active_tiles(plan, detect_tissue(s, mask_mpp=opts.tissue_mask_mpp), None, opts.min_tissue)
    tiles = [(int(a), int(b)) for a, b in np.argwhere(active)]
    if processes:
        batches = [tiles[i:i + opts.batch_size] for i in range(0, len(tiles), opts.batch_size)]
        t0 = time.perf_counter()  # worker start-up included, as in predict_slide
        for _ in torch.utils.data.DataLoader(TileBatches((slide, None, plan, lm.config.mpp, None), batches),
                                             batch_size=None, num_workers=workers, prefetch_factor=2,
                                             pin_memory=lm.device.startswith("cuda")):
            pass
        return len(tiles) / (time.perf_counter() - t0), len(tiles)
    reader = TileReader(slide, None, plan, lm.config.mpp)
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for _ in pool.map(lambda t: reader.read(*t), tiles):
                pass
        dt = time.perf_counter() - t0
    finally:
        reader.close()
    return len(tiles) / dt, len(tiles)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", type=Path, default=None, help="a slide to use (default: write a synthetic one)")
    ap.add_argument("--size", type=int, default=16384, help="side of the synthetic slide, level-0 px at 0.25 µm/px")
    ap.add_argument("--mpp", type=float, default=0.5, help="model pixel size, µm/px")
    ap.add_argument("--tile", type=int, default=512, help="model tile, px")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--readers", nargs="+", choices=["threads", "processes"], default=None,
                    help="tile readers, one measurement each (default: predict's auto choice - processes on CUDA)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-block-cache", action="store_true",
                    help="read every tile directly (tile_reader.BLOCK_CACHE_BYTES = 0), for comparison")
    ap.add_argument("--profile", action="store_true", help="also print the top of a cProfile of one predict_slide")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_pipeline"))
    ap.add_argument("--json", type=Path, default=None, help="default: WORKDIR/bench_pipeline.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, args.threads))
    from bench_predict import write_bench_slide

    from qupath_camseg.predict import tile_reader

    if args.no_block_cache:
        tile_reader.BLOCK_CACHE_BYTES = 0

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    slide = args.slide or work / f"bench_{args.size}.tif"
    if not slide.exists():
        t0 = time.perf_counter()
        write_bench_slide(slide, args.size)
        print(f"wrote {slide} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    lm = _loaded_model(work, mpp=args.mpp, tile_px=args.tile, device=args.device)
    from qupath_camseg.predict import use_read_processes

    auto = "processes" if use_read_processes("auto", lm.device, args.workers) else "threads"
    modes = args.readers or [auto]
    by_mode = {m: _measure(slide, lm, work, args, m) for m in modes}
    result = {**by_mode[modes[0]], "by_readers": by_mode, "readers_default": auto}
    out = args.json or work / "bench_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pipeline benchmark ({result['machine']}, device {lm.device}, {result['date']}, "
          f"load {result['load_avg_1min'][0]}→{result['load_avg_1min'][1]})")
    print(f"slide {slide.name}, model 1×1 conv at {args.mpp} µm/px, {args.tile}² tiles, {result['tiles']} tiles, "
          f"{args.workers} readers, batch {args.batch_size}, block cache {'off' if args.no_block_cache else 'on'}")
    print(f"{'':<28}{'tiles/s':>10}{'÷ read':>9}")
    for m, r in by_mode.items():
        print(f"{'read only, ' + m:<28}{r['read_only_tiles_per_s']:10.1f}{1.0:9.2f}")
        print(f"{'inference stage, ' + m:<28}{r['inference_stage_tiles_per_s']:10.1f}"
              f"{r['ratio_inference_stage_to_read']:9.2f}")
        print(f"{'end to end, ' + m:<28}{r['end_to_end_tiles_per_s']:10.1f}{r['ratio_end_to_end_to_read']:9.2f}")
        print(f"stage seconds ({m}, best run): "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_seconds_best_run"].items()))
        if r.get("profile"):
            print(r["profile"])
    print(f"JSON: {out}")
    return 0


def _measure(slide: Path, lm: Any, work: Path, args: Any, readers: str) -> dict[str, Any]:
    """Read-only, inference-stage and end-to-end tiles/s with one kind of tile readers."""
    from qupath_camseg.predict import PredictOptions, predict_slide

    opts = PredictOptions(overwrite=True, batch_size=args.batch_size, workers=args.workers, device=args.device,
                          readers=readers)
    load_start = os.getloadavg()[0]
    predict_slide(slide, lm, work / "out", options=opts)  # warm-up: imports, allocator, file cache
    reads, infer, e2e, stages = [], [], [], []
    tiles = 0
    for _ in range(args.repeats):
        rate, tiles = _read_only(slide, lm, args.workers, opts, readers == "processes")
        reads.append(rate)
        t0 = time.perf_counter()
        res = predict_slide(slide, lm, work / "out", options=opts)
        wall = time.perf_counter() - t0
        n = res.report["tiles"]["computed_this_run"]
        timings = res.report["timings_s"]
        infer.append(n / timings["inference"])
        e2e.append(n / wall)
        stages.append({k: round(v, 3) for k, v in timings.items()})
    profile_text = None
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        predict_slide(slide, lm, work / "out", options=opts)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        profile_text = buf.getvalue()
    best = min(range(len(e2e)), key=lambda i: -e2e[i])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "device": lm.device, "slide": str(slide), "model_mpp": args.mpp, "tile_px": args.tile,
        "tiles": tiles, "workers": args.workers, "readers": readers, "batch_size": args.batch_size,
        "block_cache": not args.no_block_cache,
        "load_avg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "read_only_tiles_per_s": max(reads), "inference_stage_tiles_per_s": max(infer),
        "end_to_end_tiles_per_s": max(e2e),
        "ratio_inference_stage_to_read": max(infer) / max(reads), "ratio_end_to_end_to_read": max(e2e) / max(reads),
        "stage_seconds_best_run": stages[best],
        "all_runs": {"read_only": reads, "inference_stage": infer, "end_to_end": e2e},
        **({"profile": profile_text} if profile_text else {}),
    }


if __name__ == "__main__":
    raise SystemExit(main())
