"""Benchmark: wall time and peak memory of writing one synthetic Camelyon-style slide.

    python benchmarks/bench_synthetic.py                      # 100,000 x 100,000 px at 0.25 µm/px
    python benchmarks/bench_synthetic.py --width 20000 --height 20000 --json out.json

Runs the writer in a fresh child process so that the peak resident set size (``ru_maxrss`` of
the child, from :func:`resource.getrusage`) is the writer's alone, prints a table and writes JSON.
The slide is written to a temporary folder (or ``--out``) and deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

_CHILD = """
import sys
from qupath_camseg.synthetic.slides import write_synthetic_slide
w, h, seed, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
write_synthetic_slide(path, width=w, height=h, seed=seed)
"""


def _bench(width: int, height: int, seed: int, path: Path) -> dict[str, object]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD, str(width), str(height), str(seed), str(path)], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is KiB on Linux (bytes on macOS); RUSAGE_CHILDREN holds the largest child's peak.
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "width_px": width,
        "height_px": height,
        "seed": seed,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "peak_rss_mib": round(after.ru_maxrss * scale / 2**20, 1),
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "gigapixels": round(width * height / 1e9, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=100_000)
    ap.add_argument("--height", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="folder for the slide (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the slide")
    ap.add_argument("--json", type=Path, default=Path("bench_synthetic.json"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        path = Path(tmp) / f"synthetic_{args.width}x{args.height}.tif"
        result = _bench(args.width, args.height, args.seed, path)
        if args.keep:
            os.replace(path, (args.out or Path.cwd()) / path.name)
    result.update(
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        python=platform.python_version(),
        load_avg_1min=round(os.getloadavg()[0], 2),
    )
    print(f"{'size (px)':>20} {'wall (s)':>9} {'cpu (s)':>8} {'peak RSS (MiB)':>15} {'file (MiB)':>11}")
    print(f"{args.width:>9} x {args.height:<8} {result['wall_s']:>9} {result['cpu_s']:>8} "
          f"{result['peak_rss_mib']:>15} {result['file_mib']:>11}")
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
