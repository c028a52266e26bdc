"""Draw, for every real slide in ../shared/data, the slide | our tissue mask | the standard rule.

    PYTHONPATH=$PWD .venv/bin/python scripts/tissue_figures.py [--data ../shared/data] [--out docs/tissue]

Each slide's masks are computed as ``qcamseg predict`` computes them (its ``tissue_mask_mpp`` and
``tissue_mask_max_px``), so the middle panel is what a prediction analyses and shows as the
``camseg Tissue`` annotation. Outside the mask the slide is washed out; marker ink our detector
excludes is drawn yellow. The caption gives the retention of the standard rule's tissue
(:func:`~qupath_camseg.wsi.tissue_reference.reference_retention`). Writes one small palette PNG per
slide.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qupath_camseg.predict import PredictOptions
from qupath_camseg.wsi import open_slide
from qupath_camseg.wsi.tissue import tissue_mask_from_rgb
from qupath_camseg.wsi.tissue_ink import ink_mask
from qupath_camseg.wsi.tissue_reference import reference_retention, standard_tissue_mask

#: The real slides: path under the data folder, the µm/px to assume (None: from the file), a title.
SLIDES = [
    ("svs/cmu-1-small-region.svs", None, "Aperio CMU-1 small region (H&E skin)"),
    ("svs/tcga-cr-7395-01a-01-ts1.svs", 0.5, "TCGA-CR-7395 frozen section (no MPP: 0.5 assumed)"),
    ("camelyon16/tumor_001_level5.tif", 0.243 * 32, "Camelyon16 Tumor_001, level 5 (lymph node)"),
]
PANEL_PX = 420  # the longer side of each panel


def predict_mask_mpp(slide_mpp: float, dims: tuple[int, int]) -> float:
    """The µm/px ``qcamseg predict`` computes the tissue mask at (as in predict/slide.py)."""
    opts = PredictOptions()
    return max(opts.tissue_mask_mpp, slide_mpp * math.sqrt(dims[0] * dims[1] / opts.tissue_mask_max_px))


def masks(path: Path, mpp: float | None) -> dict:
    """The thumbnail at the prediction's mask resolution, our mask, the ink, the standard rule."""
    with open_slide(path, mpp=mpp) as slide:
        mask_mpp = predict_mask_mpp(float(slide.mpp), slide.dimensions)
        rgb, _ = slide.read_thumbnail_mpp(mask_mpp)
        show_mpp = float(slide.mpp) * max(slide.dimensions) / PANEL_PX
        show, _ = slide.read_thumbnail_mpp(show_mpp)
    return {"rgb": rgb, "show": show, "mask_mpp": mask_mpp, "ours": tissue_mask_from_rgb(rgb, mask_mpp=mask_mpp),
            "ink": ink_mask(rgb, mask_mpp=mask_mpp), "reference": standard_tissue_mask(rgb, mask_mpp=mask_mpp)}


def _panel(rgb: np.ndarray, mask: np.ndarray | None, ink: np.ndarray | None, size: tuple[int, int]) -> Image.Image:
    """``rgb`` (already ``size``) with outside ``mask`` washed out and ``ink`` yellow (masks
    resized nearest-neighbour)."""
    img = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)).astype(np.float32)
    if mask is not None:
        m = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
        img[~m] = img[~m] * 0.25 + np.array([40, 40, 60], np.float32) * 0.75
        edge = m & ~np.asarray(Image.fromarray(m).filter(ImageFilter.MinFilter(3)))
        img[edge] = (0, 170, 255)
    if ink is not None:
        k = np.asarray(Image.fromarray(ink).resize(size, Image.NEAREST))
        img[k] = (255, 220, 0)
    return Image.fromarray(img.astype(np.uint8))


def figure(title: str, m: dict) -> Image.Image:
    """Three panels side by side with a caption."""
    h, w = m["rgb"].shape[:2]
    size = (m["show"].shape[1], m["show"].shape[0])
    panels = [_panel(m["show"], None, None, size), _panel(m["show"], m["ours"], m["ink"], size),
              _panel(m["show"], m["reference"], None, size)]
    r = reference_retention(m["ours"], m["reference"], m["ink"])
    pad, top = 8, 58
    out = Image.new("RGB", (3 * size[0] + 4 * pad, size[1] + top + pad), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((pad, 4), f"{title} - mask at {m['mask_mpp']:.1f} um/px ({w} x {h} px)", fill=(0, 0, 0))
    draw.text((pad, 18), f"keeps {100 * r['retention']:.1f} % of the standard rule's tissue "
                         f"({100 * r['retention_raw']:.1f} % counting its {100 * r['marks_share']:.1f} % "
                         f"of ink marks); {100 * r['extra']:.0f} % more area (pale tissue)", fill=(0, 0, 0))
    for i, (panel, label) in enumerate(zip(panels, ("slide", "camseg mask (ink: yellow)",
                                                    "standard: saturation Otsu, filled"))):
        x = pad + i * (size[0] + pad)
        draw.text((x, 38), label, fill=(0, 0, 0))
        out.paste(panel, (x, top))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("QCAMSEG_SHARED_DATA", repo.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=repo / "docs" / "tissue")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for rel, mpp, title in SLIDES:
        path = args.data / rel
        if not path.is_file():
            print(f"skipped {rel}: not found under {args.data}")
            continue
        m = masks(path, mpp)
        target = args.out / (Path(rel).stem + ".png")
        figure(title, m).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        r = reference_retention(m["ours"], m["reference"], m["ink"])
        print(f"{target}: {target.stat().st_size // 1024} KB, retention {100 * r['retention']:.2f} % "
              f"(raw {100 * r['retention_raw']:.2f} %)")


if __name__ == "__main__":
    main()
