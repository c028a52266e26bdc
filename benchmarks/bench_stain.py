"""Stain robustness (issue 15, point 4): held-out Dice on slides whose stains differ from training.

One training project of synthetic slides in the default stain profile, and one held-out test
project per stain shift of :mod:`qupath_camseg.synthetic.stain_shift` (``none``, ``strong-h``,
``pale-e``, ``scanner``), all test projects drawn from the same seed, so they hold the *same*
tissue and tumours in different colours. Four models are trained on the same data, steps and seed:

* ``plain``    - no stain normalisation, no HED stain jitter (other augmentations on);
* ``hed``      - the default augmentation (HED stain jitter on), no normalisation;
* ``macenko``  - ``--stain-norm macenko``, no HED jitter;
* ``both``     - ``--stain-norm macenko`` and HED jitter.

Each model predicts every test project (``predict --stain-norm model``) and ``evaluate`` pools
the pixel Dice over each project's slides. Also measured: the cost of normalising one tile
(``StainTransform`` on 128², 256², 512² tiles) and of estimating one slide's stains (24 tiles),
against the time a tile reader takes to read a tile, in the same run.

    python benchmarks/bench_stain.py --json /tmp/stain.json            # ≈ 10 min on 2 cores
    python benchmarks/bench_stain.py --smoke --json /tmp/stain.json    # seconds: the flow only

Prints a table and writes JSON (``--json``); the work folder is a temporary one unless ``--workdir``.
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
from typing import Any

SHIFTS = ("none", "strong-h", "pale-e", "scanner")
ARMS = {"plain": (False, "none"), "hed": (True, "none"), "macenko": (False, "macenko"), "both": (True, "macenko")}


def _projects(work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    from qupath_camseg.synthetic import write_synthetic_project

    train = work / "train"
    if not (train / "project.qpproj").is_file():
        write_synthetic_project(train, slides=args.train_slides + 1, negatives=1, width=args.width, height=args.width,
                                seed=args.seed, door="files", overwrite=True)
    tests = {}
    for shift in SHIFTS:
        tests[shift] = work / f"test-{shift}"
        if not (tests[shift] / "project.qpproj").is_file():
            write_synthetic_project(tests[shift], slides=args.test_slides, width=args.width, height=args.width,
                                    seed=args.seed + 1000, door="files", overwrite=True, stain_shift=shift)
    return train, tests


def _train(project: Path, out: Path, args: argparse.Namespace, *, hed: bool, stain_norm: str) -> dict[str, Any]:
    from qupath_camseg.train import AugmentConfig, TrainConfig, train

    aug = AugmentConfig() if hed else AugmentConfig(hed_alpha=0.0, hed_beta=0.0)
    val = f"tumor_{args.train_slides:03d}.tif"
    config = TrainConfig(mpp=2.0, tile_px=args.tile, arch={"name": "unet", "width": 8, "depth": 3},
                         steps=args.steps, tiles_per_epoch=args.tiles_per_epoch, batch_size=8, seed=args.seed,
                         val_images=(val,), device="cpu", augment=aug, stain_norm=stain_norm, max_val_tiles=64,
                         workers=args.workers)
    t0 = time.perf_counter()
    result = train(project, out, config)
    return {"seconds": time.perf_counter() - t0, "val_dice": (result.get("best") or {}).get("val_dice")}


def _dice(model: Path, project: Path, *, stain_norm: str) -> float:
    from qupath_camseg.evaluate import evaluate_project
    from qupath_camseg.predict import PredictOptions, predict_project

    opts = PredictOptions(device="cpu", overwrite=True, stain_norm=stain_norm, workers=2, readers="threads")
    predict_project(project, model, options=opts, project_write=False)
    return float(evaluate_project(project).pooled.dice)


def _costs(project: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per-tile normalisation and per-slide estimation cost vs a tile read, in this run."""
    import numpy as np

    from qupath_camseg.predict import TilePlan, TileReader
    from qupath_camseg.wsi import StainTransform, estimate_stains, open_slide

    slide_path = next((project / "images").glob("tumor_*.tif"))
    out: dict[str, Any] = {}
    with open_slide(slide_path) as slide:
        plan = TilePlan.create(slide.dimensions, slide.mpp, 0.5, tile_px=512)
        reader = TileReader(slide_path, None, plan, 0.5)
        ny, nx = plan.grid_shape
        tiles = [(ty, tx) for ty in range(ny // 4, ny - ny // 4) for tx in range(nx // 4, nx - nx // 4)][:24]
        t0 = time.perf_counter()
        rgb = [reader.read(*t) for t in tiles]
        out["read_ms_per_512_tile"] = (time.perf_counter() - t0) / len(tiles) * 1e3
        reader.close()
    t0 = time.perf_counter()
    found = estimate_stains(np.stack(rgb))
    out["estimate_ms_per_slide_24_tiles"] = (time.perf_counter() - t0) * 1e3
    assert found is not None, "no stains found on a synthetic tumour slide"
    transform = StainTransform.between(found, found)
    for px in (128, 256, 512):
        batch = [t[:px, :px].copy() for t in rgb]
        t0 = time.perf_counter()
        for _ in range(args.cost_repeats):
            for t in batch:
                transform(t)
        out[f"normalise_ms_per_{px}_tile"] = (time.perf_counter() - t0) / (args.cost_repeats * len(batch)) * 1e3
    out["normalise_over_read_512"] = out["normalise_ms_per_512_tile"] / out["read_ms_per_512_tile"]
    return out


def _table(res: dict[str, Any]) -> str:
    rows = [f"{'arm':<9} {'val Dice':>8} " + " ".join(f"{s:>9}" for s in SHIFTS) + f" {'train s':>8}"]
    for arm, r in res["arms"].items():
        cells = " ".join(f"{r['dice'][s]:9.3f}" for s in SHIFTS)
        rows.append(f"{arm:<9} {r['train']['val_dice'] or float('nan'):8.3f} {cells} {r['train']['seconds']:8.0f}")
    c = res["costs"]
    rows.append(f"normalise one tile: {c['normalise_ms_per_128_tile']:.2f} / {c['normalise_ms_per_256_tile']:.2f} / "
                f"{c['normalise_ms_per_512_tile']:.2f} ms (128² / 256² / 512²); read one 512² tile "
                f"{c['read_ms_per_512_tile']:.2f} ms (ratio {c['normalise_over_read_512']:.2f}); estimate a slide "
                f"(24 tiles) {c['estimate_ms_per_slide_24_tiles']:.0f} ms")
    return "\n".join(rows)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=None, help="Keep the projects here (default: a temp folder).")
    p.add_argument("--json", type=Path, default=None, help="Write the results here.")
    p.add_argument("--width", type=int, default=6144, help="Slide side, level-0 px at 0.25 µm/px.")
    p.add_argument("--train-slides", type=int, default=3, help="Tumour slides in the training project (the last "
                   "validates; one normal slide is added).")
    p.add_argument("--test-slides", type=int, default=2, help="Tumour slides per test project.")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--tiles-per-epoch", type=int, default=400)
    p.add_argument("--tile", type=int, default=128, help="Training tile, px at 2 µm/px.")
    p.add_argument("--workers", type=int, default=1, help="Training DataLoader workers.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--cost-repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="Tiny sizes: checks the flow, the numbers mean nothing.")
    args = p.parse_args(argv)
    if args.smoke:
        args.width, args.train_slides, args.test_slides, args.steps, args.tiles_per_epoch = 1536, 2, 1, 2, 16
        args.tile, args.workers, args.cost_repeats = 64, 0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qcamseg-bench-stain-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        train_project, tests = _projects(work, args)
        res: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                               "arms": {}}
        for arm in args.arms:
            hed, norm = ARMS[arm]
            model = work / f"model-{arm}"
            info = _train(train_project, model, args, hed=hed, stain_norm=norm)
            res["arms"][arm] = {"hed_jitter": hed, "stain_norm": norm, "train": info,
                                "dice": {s: _dice(model, tests[s], stain_norm="model") for s in SHIFTS}}
            print(f"{arm}: {res['arms'][arm]}", file=sys.stderr, flush=True)
        res["costs"] = _costs(tests["none"], args)
    res["machine"] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version(), "load_avg_1min_end": os.getloadavg()[0]
                      if hasattr(os, "getloadavg") else None}
    res["wall_s"] = time.perf_counter() - t_start
    res["table"] = _table(res)
    print(res["table"])
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
