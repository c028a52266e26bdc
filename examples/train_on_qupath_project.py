"""Train a tumour model on a QuPath project's annotations (Python API).

    python examples/train_on_qupath_project.py PROJECT [MODEL_DIR] [--steps N]

PROJECT is a QuPath project folder (or its project.qpproj) whose images carry "Tumor" annotations
(exported by the Groovy bridge to <project>/camseg/annotations/, imported with
`qcamseg import-annotations`, or made by `qcamseg synth`). The same as
`qcamseg train PROJECT --out MODEL_DIR --mpp 2 --tile 128 --steps N`; written out to show the API.
"""

from __future__ import annotations

import argparse

from qupath_camseg.qupath import open_project
from qupath_camseg.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project")
    parser.add_argument("model_dir", nargs="?", default=None)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    with open_project(args.project) as project:  # read-only look at what will be learnt
        for entry in project.entries:
            n = sum(o.classification == "Tumor" for o in project.read_annotations(entry))
            print(f"{entry.image_name}: {n} Tumor annotation(s)")

    # 2 µm/px and 128 px tiles train in minutes on a CPU; Camelyon-grade models use 0.5 µm/px, 512 px.
    config = TrainConfig(mpp=2.0, tile_px=128, steps=args.steps, batch_size=8,
                         arch={"name": "unet", "width": 8, "depth": 3}, seed=0)
    summary = train(args.project, args.model_dir, config, progress=True)
    best = summary["best"]
    print(f"model: {summary['out_dir']}  validation Dice {best['val_dice']:.3f} on {', '.join(summary['val_images'])}")


if __name__ == "__main__":
    main()
