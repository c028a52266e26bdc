"""TIAToolbox's SemanticSegmentor on the peers' slide with our network (run inside TIAToolbox's venv).

    python peer_tiatoolbox.py --slide W/slide_12288.tif --model W/unet.ts --out W/tia --json W/tia.json

The network is our U-Net as a traced TorchScript module (``prepare.py``: float RGB 0–255 in,
per-class probabilities out), wrapped in TIAToolbox's ``ModelABC``; the slide is read at 1 µm/px in
256² patches with a 192 px stride (25 % overlap, as ``qcamseg predict``), batch 16, 2 loader
workers, on the CPU. Works with TIAToolbox 1.x (``predict``) and 2.x (``run``). Prints and writes
the wall time of the segmentation call and the number of patches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slide", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--mpp", type=float, default=1.0)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--stride", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import tiatoolbox
    from tiatoolbox.models.models_abc import ModelABC

    try:
        from tiatoolbox.models.engine.io_config import IOSegmentorConfig
    except ImportError:  # TIAToolbox 1.x
        from tiatoolbox.models.engine.semantic_segmentor import IOSegmentorConfig
    from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor

    class Wrapped(ModelABC):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.net = torch.jit.load(str(path), map_location="cpu").eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # NHWC uint8 → NCHW float 0–255
            return self.net(x.permute(0, 3, 1, 2).float())

        @staticmethod
        def infer_batch(model: torch.nn.Module, batch_data: torch.Tensor, *_: object) -> list[np.ndarray]:
            with torch.inference_mode():
                p = model(torch.as_tensor(batch_data))
            return [p.permute(0, 2, 3, 1).numpy()]

    res = {"units": "mpp", "resolution": args.mpp}
    io = IOSegmentorConfig(input_resolutions=[res], output_resolutions=[res], patch_input_shape=[args.tile] * 2,
                           patch_output_shape=[args.tile] * 2, stride_shape=[args.stride] * 2, save_resolution=res)
    shutil.rmtree(args.out, ignore_errors=True)
    major = int(tiatoolbox.__version__.split(".")[0])
    t0 = time.perf_counter()
    if major >= 2:
        seg = SemanticSegmentor(model=Wrapped(args.model), batch_size=args.batch_size,
                                num_loader_workers=args.workers, device="cpu", verbose=False)
        seg.run(images=[args.slide], patch_mode=False, ioconfig=io, save_dir=args.out, output_type="zarr")
    else:
        seg = SemanticSegmentor(model=Wrapped(args.model), batch_size=args.batch_size,
                                num_loader_workers=args.workers, num_postproc_workers=0)
        seg.predict([str(args.slide)], mode="wsi", ioconfig=io, on_gpu=False, save_dir=str(args.out),
                    crash_on_exception=True)
    wall = time.perf_counter() - t0
    patches = len(seg.output_locations) if getattr(seg, "output_locations", None) is not None else None
    out = {"peer": f"TIAToolbox {tiatoolbox.__version__}", "wall_s": wall, "patches": patches,
           "torch_threads": torch.get_num_threads()}
    args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
