"""Tile read throughput: tiffslide vs OpenSlide on the same files, same positions, same threads.

    python benchmarks/bench_read.py                                  # synthetic 4096² + CMU-1-small-region
    python benchmarks/bench_read.py --slide my.svs --reads 256 --threads 1 8 16 --json read.json

For every slide, backend and access pattern, the *same* list of level-0 ``--tile``² regions (drawn
once with ``--seed``, over tissue) is read ``--reads`` times in all, best of ``--repeats`` passes
with the backends alternating; with ``t`` threads each thread opens its own
handle (as :mod:`qupath_camseg.predict.tile_reader` does) and reads every ``t``-th region. Patterns:

* ``aligned`` - regions on the file's own tile grid at multiples of ``--tile`` (one JPEG per
  512² tile on a 512-tiled file; a 240-tiled Aperio file decodes up to 9 tiles per read);
* ``random`` - regions at random pixel offsets (typically 4 stored tiles decoded per read);
* ``camseg`` - ``qupath_camseg.wsi.slides.Slide.read_region`` (our wrapper, each library with its
  defaults: OpenSlide's tile cache on) at the aligned positions.

OpenSlide's tile cache is switched off (``OpenSlideCache(0)``) so that neither library reuses
decoded tiles; the operating system's page cache holds the file for both (read it once first).
The figure of merit is the tiles/s ratio tiffslide / OpenSlide for each pattern.
The synthetic slide is :func:`qupath_camseg.synthetic.slides.write_synthetic_slide` (JPEG q95, 4:4:4,
512² tiles, 0.25 µm/px), cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CMU_SMALL", "bench_slide", "main", "synthetic_slide"]

#: The real Aperio file of the shared test data (2220 × 2967 px, 240² JPEG tiles, one level), found
#: like the tests find it: ``$QCAMSEG_SHARED_DATA`` or ``../shared/data`` beside the repository.
CMU_SMALL = (Path(os.environ.get("QCAMSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
             / "svs" / "cmu-1-small-region.svs")
BACKENDS = ("tiffslide", "openslide")
PATTERNS = ("aligned", "random", "camseg")


def synthetic_slide(workdir: Path, size_px: int, *, seed: int = 0) -> Path:
    """The cached synthetic pyramid ``workdir/read_<size>.tif`` (written on first use)."""
    from qupath_camseg.synthetic import write_synthetic_slide

    path = workdir / f"read_{size_px}.tif"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        write_synthetic_slide(path, width=size_px, height=size_px, seed=seed, mpp=0.25)
    return path


def _positions(path: Path, size: tuple[int, int], tile: int, reads: int,
               rng: np.random.Generator) -> dict[str, list[tuple[int, int]]]:
    """Level-0 top-left corners for each pattern, ``reads`` each, over tissue where there is any.

    Regions with at least a quarter tissue (:func:`qupath_camseg.wsi.tissue.detect_tissue`) are
    preferred, since prediction reads only those; grid cells repeat when there are too few.
    """
    from qupath_camseg.wsi import detect_tissue, open_slide

    w, h = size
    try:
        with open_slide(path, mpp=None if _has_mpp(path) else 0.25) as s:
            mask = detect_tissue(s)
    except Exception:  # noqa: BLE001 - no mask: sample everywhere
        mask = None

    def tissue(x: int, y: int) -> bool:
        return mask is None or mask.fraction((x, y, tile, tile)) >= 0.25

    gx, gy = max(1, (w - tile) // tile + 1), max(1, (h - tile) // tile + 1)
    cells = [(int(c % gx) * tile, int(c // gx) * tile) for c in rng.permutation(gx * gy)]
    aligned = [c for c in cells if tissue(*c)] or cells
    xs, ys = rng.integers(0, max(1, w - tile), 20 * reads), rng.integers(0, max(1, h - tile), 20 * reads)
    free = [(int(x), int(y)) for x, y in zip(xs, ys)]
    random = [c for c in free if tissue(*c)][:reads] or free[:reads]
    aligned = [aligned[i % len(aligned)] for i in range(reads)]
    random = [random[i % len(random)] for i in range(reads)]
    return {"aligned": aligned, "random": random, "camseg": aligned}


def _has_mpp(path: Path) -> bool:
    from qupath_camseg.wsi import open_slide

    with open_slide(path) as s:
        return bool(s.has_mpp)


def _opener(path: Path, backend: str, pattern: str, tile: int) -> Callable[[], tuple[Callable[[int, int], Any], Callable[[], None]]]:
    """A factory of ``(read(x, y) -> array, close())`` pairs, one per thread."""

    def make() -> tuple[Callable[[int, int], Any], Callable[[], None]]:
        if pattern == "camseg":
            from qupath_camseg.wsi import open_slide

            s = open_slide(path, backend=backend)
            return (lambda x, y: s.read_region((x, y), 0, (tile, tile))), s.close
        if backend == "tiffslide":
            import tiffslide

            ts = tiffslide.TiffSlide(path)
            return (lambda x, y: ts.read_region((x, y), 0, (tile, tile), as_array=True)), ts.close
        import openslide

        os_ = openslide.OpenSlide(str(path))
        if hasattr(openslide, "OpenSlideCache"):
            os_.set_cache(openslide.OpenSlideCache(0))
        return (lambda x, y: np.asarray(os_.read_region((x, y), 0, (tile, tile)))[..., :3]), os_.close

    return make


def _timed(make: Callable[[], Any], positions: list[tuple[int, int]], threads: int) -> float:
    """Seconds to read all ``positions`` with ``threads`` threads (each with its own handle)."""
    handles = [make() for _ in range(threads)]
    handles[0][0](*positions[0])  # first decode: library initialisation, not throughput
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        read = handles[k][0]
        barrier.wait()
        try:
            for x, y in positions[k::threads]:
                read(x, y)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            errors.append(err)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    for _, close in handles:
        close()
    if errors:
        raise errors[0]
    return seconds


def bench_slide(path: Path, *, tile: int = 512, reads: int = 64, threads: tuple[int, ...] = (1,), seed: int = 0,
                repeats: int = 3, backends: tuple[str, ...] = BACKENDS, patterns: tuple[str, ...] = PATTERNS) -> dict[str, Any]:
    """Read throughput of one slide: ``{"slide", "size_px", "runs": [...], "ratio_tiffslide_openslide": {...}}``."""
    import tiffslide

    with tiffslide.TiffSlide(path) as ts:
        size = tuple(int(v) for v in ts.dimensions)
        tile_w = ts.properties.get("tiffslide.level[0].tile-width")
    path.read_bytes()  # warm the page cache: both libraries then read from memory
    pos = _positions(path, size, tile, reads, np.random.default_rng(seed))
    runs = []
    for pattern in patterns:
        for n in threads:
            best: dict[str, float] = {}
            for _ in range(repeats):  # backends alternate, best of ``repeats``: the machine may be shared
                for backend in backends:
                    s = _timed(_opener(path, backend, pattern, tile), pos[pattern], n)
                    best[backend] = min(best.get(backend, s), s)
            for backend in backends:
                s = best[backend]
                runs.append({"backend": backend, "pattern": pattern, "threads": n, "reads": reads, "seconds": s,
                             "tiles_per_s": reads / s, "mpx_per_s": reads * tile * tile / s / 1e6})
    ratios: dict[str, float] = {}
    for r in runs:
        if r["backend"] == "tiffslide":
            other = next((o for o in runs if o["backend"] == "openslide" and o["pattern"] == r["pattern"]
                          and o["threads"] == r["threads"]), None)
            if other:
                ratios[f"{r['pattern']}@{r['threads']}"] = r["tiles_per_s"] / other["tiles_per_s"]
    return {"slide": path.name, "size_px": list(size), "stored_tile_px": tile_w, "tile_px": tile, "runs": runs,
            "ratio_tiffslide_openslide": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slide", type=Path, action="append", default=None,
                    help="slide to read (repeatable; default: the synthetic pyramid and CMU-1-small-region)")
    ap.add_argument("--synthetic-px", type=int, default=4096, help="side of the synthetic pyramid, level-0 px (0: none)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "qcamseg-bench")
    ap.add_argument("--tile", type=int, default=512, help="read size, px")
    ap.add_argument("--reads", type=int, default=64, help="reads per (slide, backend, pattern, threads)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per backend (alternating); best kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=Path("bench_read.json"))
    args = ap.parse_args(argv)

    slides = list(args.slide or [])
    if args.slide is None:
        if args.synthetic_px:
            slides.append(synthetic_slide(args.workdir, args.synthetic_px, seed=args.seed))
        if CMU_SMALL.exists():
            slides.append(CMU_SMALL)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "load_avg_1min": round(os.getloadavg()[0], 2), "python": sys.version.split()[0],
               "slides": [bench_slide(p, tile=args.tile, reads=args.reads, threads=tuple(args.threads), seed=args.seed,
                                      repeats=args.repeats)
                          for p in slides]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"{'slide':<28} {'pattern':<8} {'thr':>3} {'tiffslide t/s':>14} {'openslide t/s':>14} {'ratio':>6}")
    for sl in results["slides"]:
        for r in sl["runs"]:
            if r["backend"] != "tiffslide":
                continue
            o = next(o for o in sl["runs"] if o["backend"] == "openslide" and o["pattern"] == r["pattern"]
                     and o["threads"] == r["threads"])
            print(f"{sl['slide'][:28]:<28} {r['pattern']:<8} {r['threads']:>3} {r['tiles_per_s']:14.1f} "
                  f"{o['tiles_per_s']:14.1f} {r['tiles_per_s'] / o['tiles_per_s']:6.2f}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
