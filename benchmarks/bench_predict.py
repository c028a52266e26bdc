"""Whole-slide prediction: peak memory vs slide size, and end-to-end vs model-only throughput.

1. **Memory** - each slide size is predicted in a fresh subprocess (tiny model, coarse model
   pixel size so a 60k² slide finishes in seconds); the child reports its peak RSS
   (``ru_maxrss``). A child that only imports and loads the model gives the fixed floor. The
   figure of merit is ``peak RSS(largest) / peak RSS(smallest)`` (issue 8 target: ≤ 1.3).
2. **Throughput** - in one process, :func:`qupath_camseg.predict.slide.predict_slide` end to end
   (tissue detection, reading, model, blending, chunk writes, vectorising, heatmap, GeoJSON) on
   one slide, then the model alone on the *identical* tiles (read beforehand into memory, same
   batch size, same device). Figure of merit: end-to-end tiles/s ÷ model-only tiles/s (target ≥ 0.7
   on CPU). Each is measured ``--repeats`` times; the best of each is kept (the machine may be shared).

    python benchmarks/bench_predict.py                          # CPU defaults: 6k², 20k², 60k²
    python benchmarks/bench_predict.py --device cuda --throughput-mpp 0.5 --throughput-tile 512

Benchmark slides: synthetic (:mod:`qupath_camseg.synthetic.slides`), level 0 at 0.25 µm/px. Levels at
≥ 8× downsample are rendered from the ground truth; the finer levels (never read at the coarse
model pixel sizes used here) repeat pre-encoded JPEG tiles chosen by the truth, so writing a 60k²
pyramid takes seconds instead of rendering 3.6 Gpx. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_JPEG = {"photometric": "rgb", "subsampling": (2, 2), "compression": "jpeg", "compressionargs": {"level": 85}}


def _encode_tile(tile: Any) -> bytes:
    """The exact bytes tifffile stores for one JPEG tile (so pre-encoded tiles match the page tags)."""
    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        tw.write(tile, tile=tile.shape[:2], **_JPEG)
    buf.seek(0)
    with tifffile.TiffFile(buf) as tf:
        page = tf.pages[0]
        buf.seek(page.dataoffsets[0])
        return buf.read(page.databytecounts[0])


def write_bench_slide(path: Path, size_px: int, *, mpp: float = 0.25, seed: int = 0, tile: int = 512,
                      exact_from_ds: float = 8.0) -> None:
    """A square synthetic pyramidal JPEG TIFF of ``size_px`` (see the module docstring)."""
    import numpy as np
    import shapely
    import shapely.affinity
    import tifffile

    from qupath_camseg.synthetic import (
        SyntheticTruth,
        make_truth,
        pyramid_dimensions,
        render_region,
    )

    truth = make_truth(size_px, size_px, seed=seed, mpp=mpp)
    dims = pyramid_dimensions(size_px, size_px, tile)
    tmp = path.with_suffix(".tmp")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, (w, h) in enumerate(dims):
            ds = size_px / w
            scaled = SyntheticTruth(shapely.affinity.scale(truth.tumor, 1 / ds, 1 / ds, origin=(0, 0)),
                                    shapely.affinity.scale(truth.tissue, 1 / ds, 1 / ds, origin=(0, 0)),
                                    w, h, mpp * ds, seed)
            nty, ntx = -(-h // tile), -(-w // tile)
            if ds >= exact_from_ds:
                tiles: Any = (render_region(scaled, (tx * tile, ty * tile, tile, tile))
                              for ty in range(nty) for tx in range(ntx))
            else:  # palette: one glass, one normal-tissue and one tumour tile at this level's pixel size
                shapely.prepare(scaled.tissue)
                shapely.prepare(scaled.tumor)
                probe = SyntheticTruth(shapely.MultiPolygon([shapely.box(0, 0, tile, tile)]),
                                       shapely.MultiPolygon([shapely.box(0, 0, tile, tile)]), tile, tile, mpp * ds, seed)
                normal = SyntheticTruth(shapely.MultiPolygon(), probe.tissue, tile, tile, mpp * ds, seed)
                palette = [_encode_tile(np.full((tile, tile, 3), 242, np.uint8)),
                           _encode_tile(render_region(normal, (0, 0, tile, tile))),
                           _encode_tile(render_region(probe, (0, 0, tile, tile)))]
                xs = (np.arange(ntx) + 0.5) * tile
                ys = (np.arange(nty) + 0.5) * tile
                gx, gy = np.meshgrid(xs, ys)
                pts = shapely.points(gx.ravel(), gy.ravel())
                kind = shapely.contains(scaled.tissue, pts).astype(int) + shapely.contains(scaled.tumor, pts)
                tiles = (palette[k] for k in kind)
            tif.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), **_JPEG,
                      resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER",
                      subfiletype=0 if level == 0 else 1, metadata=None)
    os.replace(tmp, path)


def _bundle(folder: Path, *, mpp: float, tile_px: int, width: int, depth: int) -> Path:
    import torch

    from qupath_camseg.model import ModelConfig, build_model, save_bundle

    torch.manual_seed(0)
    cfg = ModelConfig(arch={"name": "unet", "width": width, "depth": depth}, mpp=mpp, tile_px=tile_px,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    save_bundle(folder, build_model(cfg.arch, pretrained=False), cfg)
    return folder


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _child(args: argparse.Namespace) -> int:
    """Subprocess body: predict one slide (or only load, ``--load-only``); print JSON with peak RSS."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from qupath_camseg.model import load_model
    from qupath_camseg.predict import PredictOptions, predict_slide

    t0 = time.perf_counter()
    lm = load_model(args.model, device=args.device)
    out: dict[str, Any] = {"after_load_rss_mb": _status_mb("VmRSS"), "load_peak_rss_mb": _status_mb("VmHWM")}
    _reset_peak()
    if not args.load_only:
        res = predict_slide(args.slide, lm, args.out, options=PredictOptions(
            overwrite=True, batch_size=args.batch_size, workers=args.workers, device=args.device))
        out.update(tiles=res.report["tiles"]["computed_this_run"], map_px=res.report["map_size_px"],
                   tile_objects=res.report["tiles"]["tile_objects"])
    out["seconds"] = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: after fork+exec, ru_maxrss starts from the parent's peak on Linux
    out["predict_peak_rss_mb"] = _status_mb("VmHWM")  # peak since the reset after loading
    if out["predict_peak_rss_mb"] is None:
        out["predict_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = max(out["load_peak_rss_mb"] or 0, out["predict_peak_rss_mb"])
    print(json.dumps(out))
    return 0


def _run_child(extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _throughput(slide: Path, model_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end predict_slide vs the model alone on the identical tiles, best of ``repeats``."""
    import numpy as np
    import torch

    from qupath_camseg.model import load_model
    from qupath_camseg.predict import PredictOptions, TilePlan, TileReader, predict_slide
    from qupath_camseg.predict.inference import _forward
    from qupath_camseg.predict.roi import active_tiles
    from qupath_camseg.wsi import detect_tissue, open_slide

    lm = load_model(model_dir, device=args.device)
    opts = PredictOptions(overwrite=True, batch_size=args.batch_size, workers=args.workers, device=args.device)
    with open_slide(slide) as s:
        plan = TilePlan.create(s.dimensions, s.mpp, lm.config.mpp, tile_px=lm.config.tile_px,
                               chunk_px=opts.chunk_px, stripe_chunks=opts.stripe_chunks)
        active = active_tiles(plan, detect_tissue(s, mask_mpp=opts.tissue_mask_mpp), None, opts.min_tissue)
    reader = TileReader(slide, None, plan, lm.config.mpp)
    tiles = np.stack([reader.read(int(ty), int(tx)) for ty, tx in np.argwhere(active)])
    reader.close()
    device = torch.device(lm.device)
    cuda = device.type == "cuda"

    def model_only() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(tiles), args.batch_size):
            _forward(lm.model, tiles[i:i + args.batch_size], device, cuda)
        if cuda:
            torch.cuda.synchronize(device)
        return len(tiles) / (time.perf_counter() - t0)

    model_only()  # warm-up (allocator, oneDNN/cuDNN algorithm choice)
    e2e, infer, forward = [], [], []
    computed = 0
    for _ in range(args.repeats):
        forward.append(model_only())
        t0 = time.perf_counter()
        res = predict_slide(slide, lm, work / "tp_out", options=opts)
        wall = time.perf_counter() - t0
        computed = res.report["tiles"]["computed_this_run"]
        e2e.append(computed / wall)
        infer.append(computed / res.report["timings_s"]["inference"])
    return {"tiles": computed, "unique_tiles": len(tiles), "tile_px": lm.config.tile_px, "mpp": lm.config.mpp,
            "model_only_tiles_per_s": max(forward), "end_to_end_tiles_per_s": max(e2e),
            "inference_stage_tiles_per_s": max(infer), "ratio_end_to_end": max(e2e) / max(forward),
            "ratio_inference_stage": max(infer) / max(forward),
            "tissue_mpx_per_s_end_to_end": max(e2e) * (lm.config.tile_px * (1 - 0.25)) ** 2 / 1e6,
            "all_runs": {"model_only": forward, "end_to_end": e2e, "inference_stage": infer}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[6000, 20000, 60000], help="slide sides, level-0 px")
    ap.add_argument("--memory-mpp", type=float, default=8.0, help="model pixel size for the memory runs, µm/px")
    ap.add_argument("--throughput-size", type=int, default=6000)
    ap.add_argument("--throughput-mpp", type=float, default=1.0)
    ap.add_argument("--throughput-tile", type=int, default=256)
    ap.add_argument("--width", type=int, default=32, help="U-Net width of the throughput model (default arch)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None, help="keep slides here between runs")
    ap.add_argument("--json", type=Path, default=Path("bench_predict.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--slide", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} "
                               f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                               "device": args.device, "args": {k: str(v) for k, v in vars(args).items()}}
    tiny = _bundle(work / "tiny_model", mpp=args.memory_mpp, tile_px=64, width=8, depth=2)
    common = ["--model", str(tiny), "--device", args.device, "--batch-size", str(args.batch_size),
              "--workers", str(args.workers)] + (["--threads", str(args.threads)] if args.threads else [])
    slides = {}
    for size in sorted(set(args.sizes) | {args.throughput_size}):
        slides[size] = work / f"bench_{size}.tif"
        if not slides[size].exists():
            t0 = time.perf_counter()
            write_bench_slide(slides[size], size)
            print(f"wrote {slides[size]} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    floor = _run_child(common + ["--load-only"])
    memory = []
    for size in args.sizes:
        r = _run_child(common + ["--slide", str(slides[size]), "--out", str(work / f"out_{size}")])
        memory.append({"size_px": size, **r})
    results["memory"] = {"model_mpp": args.memory_mpp, "import_and_load_rss_mb": floor["peak_rss_mb"], "runs": memory,
                         "ratio_largest_smallest": memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"]}
    if all(m.get("predict_peak_rss_mb") for m in memory):
        results["memory"]["ratio_predict_phase"] = memory[-1]["predict_peak_rss_mb"] / memory[0]["predict_peak_rss_mb"]
    big = _bundle(work / "throughput_model", mpp=args.throughput_mpp, tile_px=args.throughput_tile,
                  width=args.width, depth=4)
    results["throughput"] = {"slide_px": args.throughput_size,
                             **_throughput(slides[args.throughput_size], big, work, args)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\npredict benchmark ({results['machine']}, device {args.device}, {results['date']})")
    print(f"{'slide':>10} {'map px':>11} {'tiles':>6} {'seconds':>8} {'peak RSS MB':>12} {'predict-phase peak':>19}")
    print(f"{'(load)':>10} {'':>11} {'':>6} {floor['seconds']:8.1f} {floor['peak_rss_mb']:12.0f} "
          f"{floor.get('predict_peak_rss_mb') or 0:19.0f}")
    for m in memory:
        print(f"{m['size_px']:>9}² {'x'.join(map(str, m['map_px'])):>11} {m['tiles']:>6} {m['seconds']:8.1f} "
              f"{m['peak_rss_mb']:12.0f} {m.get('predict_peak_rss_mb') or 0:19.0f}")
    mem = results["memory"]
    print(f"RSS ratio {args.sizes[-1]}²/{args.sizes[0]}²: {mem['ratio_largest_smallest']:.3f} (target ≤ 1.3); "
          f"predict phase only: {mem.get('ratio_predict_phase', float('nan')):.3f}")
    t = results["throughput"]
    print(f"\nthroughput on {args.throughput_size}² at {t['mpp']} µm/px, {t['tile_px']}² tiles, {t['tiles']} tiles:")
    print(f"  model only      {t['model_only_tiles_per_s']:8.2f} tiles/s")
    print(f"  inference stage {t['inference_stage_tiles_per_s']:8.2f} tiles/s  ratio {t['ratio_inference_stage']:.3f}")
    print(f"  end to end      {t['end_to_end_tiles_per_s']:8.2f} tiles/s  ratio {t['ratio_end_to_end']:.3f} (target ≥ 0.7)")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
