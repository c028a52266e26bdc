"""Tissue mask and its polygons: seconds for a Camelyon-size slide's thumbnail (issue 15: ≤ 2 s on 2 cores).

    python benchmarks/bench_tissue.py [--repeats 5] [--data ../shared/data] [--json out.json]

Times :func:`~qupath_camseg.wsi.tissue.tissue_mask_from_rgb` (the mask from the thumbnail) and
:meth:`~qupath_camseg.wsi.tissue.TissueMask.to_polygons` (its outline, as written into the
``camseg Tissue`` annotation) on:

* a **synthetic Camelyon-size slide** (23.8 × 53.7 mm, tissue over 25 % of it, as
  ``bench_camelyon.py`` draws it), rendered straight at the thumbnail's resolution: 8 µm/px
  (training's mask, ≈ 20 Mpx) and the prediction's mask (≤ 1 Mpx, ≈ 36 µm/px);
* every **real slide** in ``../shared/data`` at the same resolutions (the Camelyon16 node, the two
  SVS files at 8 µm/px only: they are small).

Best and median of ``--repeats`` runs; the reading of the thumbnail from the file is timed apart
(``read_s``), and so is the standard rule of :mod:`~qupath_camseg.wsi.tissue_reference` (once)
for scale. The 1-minute load average is recorded before and after: on a shared machine absolute
times are noisy, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_camelyon import CAMELYON_MM, _scaled, camelyon_truth  # noqa: E402

REAL = [("svs/cmu-1-small-region.svs", None), ("svs/tcga-cr-7395-01a-01-ts1.svs", 0.5),
        ("camelyon16/tumor_001_level5.tif", 0.243 * 32)]
PREDICT_MAX_PX = 1 << 20  # PredictOptions.tissue_mask_max_px


def predict_mask_mpp(slide_mpp: float, dims: tuple[int, int]) -> float:
    """The µm/px ``qcamseg predict`` computes a slide's tissue mask at (PredictOptions defaults)."""
    return max(8.0, slide_mpp * math.sqrt(dims[0] * dims[1] / PREDICT_MAX_PX))


def synthetic_thumbnail(mask_mpp: float, workdir: Path) -> np.ndarray:
    """The synthetic Camelyon-size slide rendered at ``mask_mpp`` µm/px (cached as .npy)."""
    cache = workdir / f"camelyon_thumb_{mask_mpp:.3f}.npy"
    if cache.is_file():
        return np.load(cache)
    from qupath_camseg.synthetic.render import TileRenderer

    level0_mpp = 0.5
    w0, h0 = (round(mm * 1000 / level0_mpp) for mm in CAMELYON_MM)
    truth = _scaled(camelyon_truth(w0, h0, mpp=level0_mpp, seed=0, tissue=0.25), mask_mpp / level0_mpp)
    renderer, tile = TileRenderer(truth), 512
    out = np.empty((truth.height, truth.width, 3), np.uint8)
    for y in range(0, truth.height, tile):
        for x in range(0, truth.width, tile):
            t = renderer.render(x, y, tile)
            out[y:y + tile, x:x + tile] = t[:truth.height - y, :truth.width - x]
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(cache, out)
    return out


def time_case(rgb: np.ndarray, mask_mpp: float, repeats: int) -> dict[str, Any]:
    """Seconds (best, median) for the mask and for its polygons; the standard rule once."""
    from qupath_camseg.wsi import TissueMask, standard_tissue_mask, tissue_mask_from_rgb

    mask_s, poly_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mask = tissue_mask_from_rgb(rgb, mask_mpp=mask_mpp)
        t1 = time.perf_counter()
        polys = TissueMask(mask, 1.0).to_polygons()
        poly_s.append(time.perf_counter() - t1)
        mask_s.append(t1 - t0)
    t0 = time.perf_counter()
    standard_tissue_mask(rgb, mask_mpp=mask_mpp)
    total = [a + b for a, b in zip(mask_s, poly_s)]
    return {"mask_mpp": round(mask_mpp, 3), "size_px": [int(rgb.shape[1]), int(rgb.shape[0])],
            "mpx": round(rgb.shape[0] * rgb.shape[1] / 1e6, 2), "tissue_share": round(float(mask.mean()), 4),
            "polygons": len(polys.geoms), "vertices": int(sum(len(p.exterior.coords) + sum(len(i.coords) for i in p.interiors)
                                                              for p in polys.geoms)),
            "mask_s_best": min(mask_s), "mask_s_median": statistics.median(mask_s),
            "polygons_s_best": min(poly_s), "polygons_s_median": statistics.median(poly_s),
            "total_s_best": min(total), "total_s_median": statistics.median(total),
            "standard_rule_s": time.perf_counter() - t0}


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"{name:34s} {r['mask_mpp']:6.1f} {r['mpx']:6.2f} {r['mask_s_best']:7.2f} {r['polygons_s_best']:7.2f} "
            f"{r['total_s_best']:7.2f} {r['total_s_median']:7.2f} {r.get('read_s', float('nan')):7.2f} "
            f"{r['standard_rule_s']:8.2f} {r['polygons']:6d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("QCAMSEG_SHARED_DATA", repo.parent / "shared" / "data")))
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "qcamseg-bench-tissue")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from qupath_camseg.wsi import open_slide

    results: dict[str, Any] = {"load_avg_1min_start": os.getloadavg()[0], "cpus": os.cpu_count(), "cases": {}}
    print(f"{'case':34s} {'µm/px':>6s} {'Mpx':>6s} {'mask s':>7s} {'poly s':>7s} {'total':>7s} {'median':>7s} "
          f"{'read s':>7s} {'std rule':>8s} {'polys':>6s}")
    w0, h0 = (round(mm * 1000 / 0.5) for mm in CAMELYON_MM)
    for mpp in (8.0, predict_mask_mpp(0.5, (w0, h0))):
        r = time_case(synthetic_thumbnail(mpp, args.workdir), mpp, args.repeats)
        results["cases"][f"synthetic Camelyon-size @ {mpp:.1f}"] = r
        print(_row("synthetic Camelyon-size", r), flush=True)
    for rel, mpp in REAL:
        path = args.data / rel
        if not path.is_file():
            print(f"{rel}: not found under {args.data}, skipped")
            continue
        with open_slide(path, mpp=mpp) as slide:
            resolutions = sorted({8.0, predict_mask_mpp(float(slide.mpp), slide.dimensions)})
            for mask_mpp in resolutions:
                t0 = time.perf_counter()
                rgb, _ = slide.read_thumbnail_mpp(mask_mpp)
                read_s = time.perf_counter() - t0
                r = {**time_case(rgb, mask_mpp, args.repeats), "read_s": read_s}
                results["cases"][f"{Path(rel).name} @ {mask_mpp:.1f}"] = r
                print(_row(Path(rel).name, r), flush=True)
    results["load_avg_1min_end"] = os.getloadavg()[0]
    print(f"load average (1 min): {results['load_avg_1min_start']:.1f} at the start, "
          f"{results['load_avg_1min_end']:.1f} at the end; {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
