"""Predict one whole slide outside any project (Python API).

    python examples/predict_one_slide.py SLIDE MODEL_DIR OUT_DIR [--slide-mpp 0.25]

Writes OUT_DIR/predictions/<stem>.geojson (QuPath objects: File › Import objects in QuPath, or drag
the file onto the open image), OUT_DIR/heatmaps/<stem>.tif (tumour probability, opens in QuPath)
and OUT_DIR/reports/<stem>.json. The same as `qcamseg predict SLIDE --model MODEL_DIR --out OUT_DIR`.
"""

from __future__ import annotations

import argparse

from qupath_camseg.annotations import TISSUE_CLASS, read_geojson
from qupath_camseg.predict import PredictOptions, predict_slide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide")
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--slide-mpp", type=float, default=None, help="for slides without a pixel size")
    args = parser.parse_args()

    result = predict_slide(args.slide, args.model_dir, args.out_dir,
                           options=PredictOptions(slide_mpp=args.slide_mpp, threshold=0.5))
    objects = read_geojson(result.outputs["geojson"])
    regions = [o for o in objects if o.object_type == "annotation" and o.classification != TISSUE_CLASS]
    tiles = [o for o in objects if o.object_type != "annotation"]
    tumor_mm2 = result.report.get("tumor_area_mm2")
    print(f"{result.image}: {len(regions)} tumour region(s), {len(tiles)} tiles, tumour area {tumor_mm2} mm²")
    for name, path in result.outputs.items():
        print(f"  {name:<8} {path}")


if __name__ == "__main__":
    main()
