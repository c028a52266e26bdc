"""One Camelyon-size slide through ``qcamseg predict``: seconds per slide, and end-to-end vs model-only.

    python benchmarks/bench_camelyon.py --device cuda                      # the GPU figure (issue 8)
    python benchmarks/bench_camelyon.py --width-mm 2 --height-mm 4 --device cpu --models default
    python benchmarks/bench_camelyon.py --device cuda --models default --compile --predict-runs 2

**The slide.** Level 0 at ``--mpp`` 0.5 µm/px with the physical size of a Camelyon16 slide
(23.8 × 53.7 mm → 47,600 × 107,400 px), tissue shrunk about the centre to ``--tissue`` 25 % of the
area (Camelyon16's typical share; the synthetic node alone covers ~45 %). 0.5 µm/px rather than
Camelyon's 0.25 because generation time counts against one device call; the default model
reads 0.5 µm/px, so every tissue tile is still decoded from level 0. Levels at ≥ 8× downsample
(what tissue detection reads) are rendered exactly from the truth, on a process pool; finer
levels repeat a few pre-encoded JPEG tiles (YCbCr 4:2:0, quality 85, 512²) rendered at real
tissue, tumour and glass positions and chosen per tile by the truth, so decoding costs what
real tiles cost while writing 5 Gpx takes seconds. Cached in ``--workdir``.

**Each model** (``default``: the default U-Net; ``resnet34``: smp U-Net with a ResNet-34
encoder, random weights, or a width-48 U-Net when segmentation-models-pytorch is missing - the
JSON says which) is saved as an untrained bundle (0.5 µm/px, 512² tiles) and run as a user would:
``python -m qupath_camseg predict SLIDE --model M --out O --progress none --overwrite`` in a fresh
process (wall time = the slide's seconds, start-up included). Then, in this process, the same
model and the pipeline's own batch function (``blending._forward``: bf16 + channels-last on CUDA)
run on up to ``--model-only-tiles`` of the same slide's tissue tiles, read into memory first:
the model-only rate. Figures of merit: slide seconds (target ≤ 10 s on one H100 with the default
model) and end-to-end tiles/s ÷ model-only tiles/s (target ≥ 0.5 on a GPU, ≥ 0.7 on a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from bench_predict import (  # the predict benchmark's JPEG settings and tile bytes
    _JPEG,
    _encode_tile,
)

__all__ = ["CAMELYON_MM", "camelyon_truth", "flops_per_tile", "main", "model_only_rate", "write_camelyon_slide"]

#: Physical size (width, height) in mm of a Camelyon16 slide's scanned area.
CAMELYON_MM = (23.8, 53.7)
_TRUTH: Any = None  # the worker processes' truth (set by _init_worker)


# ------------------------------------------------------------------------------------ the slide
def camelyon_truth(width_px: int, height_px: int, *, mpp: float, seed: int, tissue: float | None) -> Any:
    """A :class:`~qupath_camseg.synthetic.truth.SyntheticTruth`, tissue (and tumour) scaled about the
    slide centre to cover ``tissue`` of the area when it covers more (``None``: as drawn)."""
    import shapely.affinity

    from qupath_camseg.synthetic import SyntheticTruth, make_truth

    truth = make_truth(width_px, height_px, seed=seed, mpp=mpp)
    frac = truth.tissue.area / (width_px * height_px)
    if tissue is None or frac <= tissue:
        return truth
    s = math.sqrt(tissue / frac)
    centre = (width_px / 2, height_px / 2)
    return SyntheticTruth(shapely.affinity.scale(truth.tumor, s, s, origin=centre),
                          shapely.affinity.scale(truth.tissue, s, s, origin=centre),
                          truth.width, truth.height, truth.mpp, truth.seed)


def _scaled(truth: Any, ds: float) -> Any:
    import shapely.affinity

    from qupath_camseg.synthetic import SyntheticTruth

    return SyntheticTruth(shapely.affinity.scale(truth.tumor, 1 / ds, 1 / ds, origin=(0, 0)),
                          shapely.affinity.scale(truth.tissue, 1 / ds, 1 / ds, origin=(0, 0)),
                          max(1, round(truth.width / ds)), max(1, round(truth.height / ds)), truth.mpp * ds, truth.seed)


def _init_worker(truth: Any) -> None:
    global _TRUTH
    _TRUTH = (truth, {})


def _render_tile(job: tuple[float, int, int, int]) -> bytes:
    """Worker: JPEG bytes of tile ``(tx, ty)`` (``tile`` px) of the level at downsample ``ds``."""
    from qupath_camseg.synthetic.render import TileRenderer

    ds, tx, ty, tile = job
    truth, renderers = _TRUTH
    if ds not in renderers:  # one renderer (prepared geometry) per level and worker
        renderers[ds] = TileRenderer(_scaled(truth, ds))
    return _encode_tile(renderers[ds].render(tx * tile, ty * tile, tile))


def _kinds(truth: Any, ds: float, ntx: int, nty: int, tile: int) -> np.ndarray:
    """``int (nty, ntx)``: 0 glass, 1 tissue, 2 tumour, by each tile's centre (level-0 truth)."""
    import shapely

    gx, gy = np.meshgrid((np.arange(ntx) + 0.5) * tile * ds, (np.arange(nty) + 0.5) * tile * ds)
    shapely.prepare(truth.tissue)
    shapely.prepare(truth.tumor)
    inside = shapely.contains_xy(truth.tissue, gx, gy).astype(np.int8)
    return inside + shapely.contains_xy(truth.tumor, gx, gy)


def write_camelyon_slide(path: Path, truth: Any, *, tile: int = 512, variants: int = 8, exact_from_ds: float = 8.0,
                         workers: int | None = None) -> dict[str, Any]:
    """Write ``truth`` as a pyramidal JPEG TIFF (see the module docstring); return what was done."""
    import tifffile

    from qupath_camseg.synthetic import pyramid_dimensions

    t0 = time.perf_counter()
    dims = pyramid_dimensions(truth.width, truth.height, tile)
    n = max(1, workers or os.cpu_count() or 1)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    rng = np.random.default_rng(truth.seed)
    tmp = path.with_name(path.name + ".tmp")
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(truth,)) as pool, \
            tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, (w, h) in enumerate(dims):
            ds = truth.width / w
            nty, ntx = -(-h // tile), -(-w // tile)
            if ds >= exact_from_ds:
                jobs = [(ds, tx, ty, tile) for ty in range(nty) for tx in range(ntx)]
                tiles: Any = pool.map(_render_tile, jobs, chunksize=max(1, len(jobs) // (4 * n)))
            else:
                kind = _kinds(truth, ds, ntx, nty, tile)
                palette: list[list[bytes]] = []
                for k in range(3):
                    cells = np.argwhere(kind == k)
                    pick = cells[rng.permutation(len(cells))[:variants]] if len(cells) else np.argwhere(kind >= 0)[:1]
                    palette.append(list(pool.map(_render_tile, [(ds, int(x), int(y), tile) for y, x in pick])))
                hashed = (np.arange(ntx)[None, :] * 7919 + np.arange(nty)[:, None] * 104729) % 1_000_003
                tiles = (palette[k][v % len(palette[k])] for k, v in zip(kind.ravel(), hashed.ravel()))
            tif.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), **_JPEG,
                      resolution=(1e4 / (truth.mpp * ds), 1e4 / (truth.mpp * ds)), resolutionunit="CENTIMETER",
                      subfiletype=0 if level == 0 else 1, metadata=None)
    os.replace(tmp, path)
    return {"seconds": time.perf_counter() - t0, "workers": n, "levels": len(dims), "file_mib": path.stat().st_size / 2**20}


# ------------------------------------------------------------------------------------ the models
def _bundles(workdir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Untrained bundles (0.5 µm/px, 512² tiles, one class) in ``workdir/model_<name>``."""
    import torch

    from qupath_camseg.model import ModelConfig, build_model, save_bundle

    out = {}
    for name in names:
        note = ""
        if name == "default":
            arch: dict[str, Any] = {"name": "unet"}
        elif name == "resnet34":
            arch = {"name": "smp", "encoder": "resnet34", "decoder": "Unet", "encoder_weights": None}
            try:
                import segmentation_models_pytorch  # noqa: F401
            except ImportError:
                arch, note = {"name": "unet", "width": 48}, "segmentation-models-pytorch missing: U-Net width 48 instead"
        else:
            raise SystemExit(f"unknown model {name!r}; use default or resnet34")
        torch.manual_seed(0)
        cfg = ModelConfig(arch=arch, mpp=0.5, tile_px=512, classes=[{"name": "Tumor", "color": [200, 0, 0]}])
        model = build_model(cfg.arch, pretrained=False)
        folder = workdir / f"model_{name}"
        save_bundle(folder, model, cfg)
        out[name] = {"dir": folder, "arch": cfg.arch, "note": note, "gflop_per_tile": flops_per_tile(cfg.arch, 512),
                     "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    return out


def flops_per_tile(arch: dict[str, Any], tile_px: int) -> float | None:
    """Forward GFLOP (multiply-add = 2) of one ``tile_px``² tile, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from qupath_camseg.model import build_model

    try:
        with torch.device("meta"):
            model = build_model(arch, pretrained=False).eval()
            x = torch.empty(1, 3, tile_px, tile_px)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
        return counter.get_total_flops() / 1e9
    except Exception:  # noqa: BLE001 - a model the meta device cannot run: no count
        return None


def model_only_rate(slide: Path, model_dir: Path, *, device: str, batch_size: int, max_tiles: int,
                    min_seconds: float = 3.0, workers: int = 8, compile: bool = False) -> dict[str, Any]:
    """Tiles/s of ``blending._forward`` alone on the slide's first ``max_tiles`` tissue tiles.

    Tiles are chosen as ``predict_slide`` chooses them (same plan, tissue mask, threshold) and
    read into memory first; passes repeat until ``min_seconds`` have been timed. ``compile``: the
    network through ``model.loaded.compile_model`` (its compile time is in the untimed warm-up pass).
    """
    import torch

    from qupath_camseg.model import compile_model, load_model
    from qupath_camseg.predict import PredictOptions, TilePlan, TileReader
    from qupath_camseg.predict.inference import _forward
    from qupath_camseg.predict.roi import active_tiles
    from qupath_camseg.wsi import detect_tissue, open_slide

    lm = load_model(model_dir, device=device)
    if compile:
        lm = compile_model(lm)
    opts = PredictOptions()
    with open_slide(slide) as s:
        plan = TilePlan.create(s.dimensions, s.mpp, lm.config.mpp, tile_px=lm.config.tile_px, overlap=opts.overlap,
                               chunk_px=opts.chunk_px, stripe_chunks=opts.stripe_chunks)
        active = active_tiles(plan, detect_tissue(s, mask_mpp=opts.tissue_mask_mpp), None, opts.min_tissue)
    cells = np.argwhere(active)[:max_tiles]
    reader = TileReader(slide, None, plan, lm.config.mpp)
    with ThreadPoolExecutor(workers) as pool:
        tiles = np.stack(list(pool.map(lambda c: reader.read(int(c[0]), int(c[1])), cells)))
    reader.close()
    dev = torch.device(lm.device)
    cuda = dev.type == "cuda"

    def one_pass() -> None:
        for i in range(0, len(tiles), batch_size):
            _forward(lm.model, tiles[i:i + batch_size], dev, cuda, pad_to=batch_size if compile else None)
        if cuda:
            torch.cuda.synchronize(dev)

    one_pass()  # warm-up: allocator, cuDNN/oneDNN algorithm choice
    passes, t0 = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - t0 < min_seconds:
        one_pass()
        passes += 1
    seconds = time.perf_counter() - t0
    return {"tiles": len(tiles), "passes": passes, "seconds": seconds, "tiles_per_s": passes * len(tiles) / seconds,
            "active_tiles": int(active.sum()), "batch_size": batch_size}


def _predict_cli(slide: Path, model_dir: Path, out: Path, *, device: str, extra: list[str]) -> dict[str, Any]:
    """``python -m qupath_camseg predict`` in a fresh process; wall seconds and the report."""
    cmd = [sys.executable, "-m", "qupath_camseg", "predict", str(slide), "--model", str(model_dir), "--out", str(out),
           "--device", device, "--progress", "none", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}", "command": cmd}
    report = json.loads((out / "reports" / f"{slide.stem}.json").read_text(encoding="utf-8"))
    tiles = report["tiles"]["computed_this_run"]
    t = report["timings_s"]
    return {"command": " ".join(cmd[1:]), "process_wall_s": wall, "tiles": tiles, "timings_s": t,
            "tissue_area_mm2": report.get("tissue_area_mm2"), "device_name": report.get("device"),
            "tiles_per_s_process": tiles / wall, "tiles_per_s_predict_slide": tiles / t["total"],
            "tiles_per_s_inference_stage": tiles / t["inference"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width-mm", type=float, default=CAMELYON_MM[0])
    ap.add_argument("--height-mm", type=float, default=CAMELYON_MM[1])
    ap.add_argument("--mpp", type=float, default=0.5, help="level-0 µm/px of the generated slide")
    ap.add_argument("--tissue", type=float, default=0.25, help="tissue share of the slide area (0: as drawn)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", nargs="+", default=["default", "resnet34"])
    ap.add_argument("--predict-args", default="", help="extra qcamseg predict options, e.g. '--workers 16'")
    ap.add_argument("--batch-size", type=int, default=16, help="model-only batch (qcamseg predict's default: 16)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the network in both measurements (qcamseg predict --compile)")
    ap.add_argument("--predict-runs", type=int, default=1,
                    help="qcamseg predict runs per model, the last one reported (2 with --compile: warm cache)")
    ap.add_argument("--model-only-tiles", type=int, default=512)
    ap.add_argument("--gen-workers", type=int, default=None, help="processes writing the slide (default: all CPUs)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "qcamseg-bench")
    ap.add_argument("--json", type=Path, default=Path("bench_camelyon.json"))
    ap.add_argument("--prepare-only", action="store_true", help="write the slide (if not cached) and stop")
    args = ap.parse_args(argv)

    w_px, h_px = round(args.width_mm * 1e3 / args.mpp), round(args.height_mm * 1e3 / args.mpp)
    args.workdir.mkdir(parents=True, exist_ok=True)
    key = zlib.crc32(repr((w_px, h_px, args.mpp, args.tissue, args.seed)).encode())
    slide = args.workdir / f"camelyon_{w_px}x{h_px}_{key:08x}.tif"
    truth = camelyon_truth(w_px, h_px, mpp=args.mpp, seed=args.seed, tissue=args.tissue or None)
    gen: dict[str, Any] = {"cached": True}
    if not slide.exists():
        gen = write_camelyon_slide(slide, truth, workers=args.gen_workers)
    if args.prepare_only:
        print(f"{slide}: {gen}", file=sys.stderr)
        return 0
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device,
        "slide": {"path": str(slide), "size_px": [w_px, h_px], "mpp": args.mpp,
                  "size_mm": [args.width_mm, args.height_mm], "tissue_fraction": truth.tissue.area / (w_px * h_px),
                  "tissue_gpx": truth.tissue.area / 1e9, "generation": gen},
        "models": {}}
    written = "cached" if gen.get("cached") else f"written in {gen['seconds']:.1f} s"
    print(f"slide {w_px} x {h_px} px at {args.mpp} µm/px, tissue {res['slide']['tissue_fraction']:.1%}, {written}",
          file=sys.stderr)
    for name, b in _bundles(args.workdir, args.models).items():
        extra = [*args.predict_args.split(), *(["--compile"] if args.compile else [])]
        for _ in range(max(1, args.predict_runs)):
            run = _predict_cli(slide, b["dir"], args.workdir / f"out_{name}", device=args.device, extra=extra)
        entry: dict[str, Any] = {"arch": b["arch"], "note": b["note"], "gflop_per_tile": b["gflop_per_tile"],
                                 "params_m": b["params_m"], "predict": run, "compile": args.compile}
        if "error" not in run:
            mo = model_only_rate(slide, b["dir"], device=args.device, batch_size=args.batch_size,
                                 max_tiles=args.model_only_tiles, compile=args.compile)
            entry["model_only"] = mo
            entry["slide_seconds"] = run["process_wall_s"]
            entry["ratio_end_to_end"] = run["tiles_per_s_predict_slide"] / mo["tiles_per_s"]
            entry["ratio_process"] = run["tiles_per_s_process"] / mo["tiles_per_s"]
            entry["tissue_mpx_per_s"] = res["slide"]["tissue_gpx"] * 1e3 / run["timings_s"]["total"]
            print(f"{name}: {run['tiles']} tiles, {run['process_wall_s']:.1f} s wall, "
                  f"{run['tiles_per_s_predict_slide']:.1f} tiles/s end to end vs {mo['tiles_per_s']:.1f} model-only "
                  f"(ratio {entry['ratio_end_to_end']:.2f})", file=sys.stderr)
        else:
            print(f"{name}: {run['error']}", file=sys.stderr)
        res["models"][name] = entry
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
