"""Score tumour heatmaps against Camelyon16 ASAP XML outlines: the challenge's lesion FROC.

    python examples/evaluate_camelyon16_xml.py --mpp 0.243 SLIDE_W,SLIDE_H,XML_OR_-,HEATMAP.tif [...]

One argument per slide: its level-0 size, its ASAP XML (``-`` for a normal slide) and a tumour
probability heatmap TIFF (e.g. `qcamseg predict`'s heatmaps/<id>.tif). Prints the FROC score, the
sensitivity at each FP rate, and writes each slide's detections as the challenge CSV beside the
heatmap. All slides must share --mpp (level-0 µm/px; Camelyon16: 0.243).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qupath_camseg.annotations import read_asap_xml
from qupath_camseg.evaluate import (
    detect_lesions,
    evaluation_mask_from_polygons,
    froc,
    match_detections,
    write_detections_csv,
)
from qupath_camseg.wsi import read_heatmap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpp", type=float, required=True, help="level-0 µm/px of the slides")
    parser.add_argument("slides", nargs="+", metavar="W,H,XML,HEATMAP")
    args = parser.parse_args()

    per_slide = []
    for spec in args.slides:
        w, h, xml, heatmap = spec.split(",")
        size = (int(w), int(h))
        prob, downsample = read_heatmap(heatmap, size, args.mpp)
        dets = detect_lesions(prob, downsample=downsample, mpp=args.mpp)
        write_detections_csv(Path(heatmap).with_suffix(".csv"), [(d.prob, d.x_px, d.y_px) for d in dets])
        mask = None
        if xml != "-":
            tumor = [o.geometry for o in read_asap_xml(xml) if o.classification == "Tumor" and o.is_area]
            mask = evaluation_mask_from_polygons(tumor, size, mpp=args.mpp)
        per_slide.append(match_detections([(d.prob, d.x_px, d.y_px) for d in dets], mask, name=Path(heatmap).stem))

    result = froc(per_slide)
    print(f"FROC score {result.score:.3f} over {result.n_lesions} lesion(s) on {len(per_slide)} slide(s)")
    for rate, sens in zip(result.fp_rates, result.sensitivity_at):
        print(f"  sensitivity at {rate:g} FP/slide: {sens:.3f}")


if __name__ == "__main__":
    main()
