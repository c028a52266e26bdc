"""WSInfer's ``wsinfer run`` on the peers' slide with our network (run inside WSInfer's venv).

    python peer_wsinfer.py --slide-dir W/slides --model W/unet_pooled.ts --config W/wsinfer.json \
        --out W/wsinfer --json W/wsinfer.json

WSInfer classifies patches, so the network is our U-Net followed by the mean of its tumour
probability over the patch (``prepare.py`` traces it: ToTensor's 0–1 RGB in, two class scores out),
at 1 µm/px on 256² patches (WSInfer does not overlap patches), batch 16, 2 loader workers, CPU.
Times the whole ``wsinfer run`` command (its own tissue detection and patching included) and counts
the patches it wrote.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slide-dir", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import wsinfer

    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "wsinfer", "run", "-i", str(args.slide_dir), "-o", str(args.out), "-c",
           str(args.config), "-p", str(args.model), "-b", str(args.batch_size), "-n", str(args.workers)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    patches = 0
    for f in (args.out / "model-outputs-csv").glob("*.csv"):
        with open(f, newline="") as fh:
            patches += sum(1 for _ in csv.DictReader(fh))
    out = {"peer": f"WSInfer {wsinfer.__version__}", "wall_s": wall, "patches": patches}
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
