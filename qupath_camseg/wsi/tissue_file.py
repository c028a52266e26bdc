"""A tissue outline the user supplies instead of the detected one (``qcamseg predict --tissue FILE``).

Three kinds of file, told apart by their suffix:

* **GeoJSON** (``.geojson``, ``.json``): QuPath's export of annotations, e.g. the objects its
  thresholder's *Create objects* made, or the ``camseg Tissue`` annotation edited and exported;
* **ASAP XML** (``.xml``): polygons drawn in ASAP;
* **a mask image** (``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg``, ``.bmp``): HistoQC's
  ``<slide>_mask_use.png`` or any binary image of the whole slide (tissue bright, ≥ 128), at any
  downsample: the scale is the slide's width over the image's width, and the height must agree.

Polygons are in level-0 px; every area in the file counts, unless some areas are classified as
tissue (class ``Tissue`` or ``camseg Tissue``, any case): then only those. They are clipped to the
slide and rasterised (pixel centres) onto the mask grid the prediction asks for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations import iter_objects, polygonal_part, rasterize, read_asap_xml, read_geojson
from qupath_camseg.errors import InvalidAnnotationError, InvalidSettingsError
from qupath_camseg.wsi.tissue import TissueMask

__all__ = ["IMAGE_SUFFIXES", "POLYGON_SUFFIXES", "read_tissue_file"]

POLYGON_SUFFIXES = (".geojson", ".json", ".xml")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_TISSUE_NAMES = ("tissue", "camseg tissue")
_MAX_MASK_PX = 400_000_000  # a mask image larger than this is not a thumbnail


def read_tissue_file(path: str | Path, slide_size_px: tuple[int, int], *, mask_downsample: float
                     ) -> tuple[TissueMask, BaseGeometry | None]:
    """The tissue of a slide of ``slide_size_px = (width, height)`` level-0 px from ``path``.

    Returns the mask and, for polygon files, the outline (level-0 px, clipped to the slide);
    polygons are rasterised at ``mask_downsample`` level-0 px per mask pixel, an image keeps its
    own scale. One-line :class:`~qupath_camseg.errors.InvalidSettingsError` (missing file, unknown
    kind) or :class:`~qupath_camseg.errors.InvalidAnnotationError` (contents) naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidSettingsError(f"--tissue file {p} does not exist; pass auto, none, or a GeoJSON, "
                                   "ASAP XML or mask image file")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _from_image(p, slide_size_px), None
    if suffix not in POLYGON_SUFFIXES:
        raise InvalidSettingsError(f"--tissue file {p}: unknown kind {suffix or '(no suffix)'}; pass a GeoJSON "
                                   f"(.geojson), ASAP XML (.xml) or mask image ({', '.join(IMAGE_SUFFIXES)})")
    outline = _outline(p, slide_size_px)
    w, h = slide_size_px
    mw, mh = max(1, round(w / mask_downsample)), max(1, round(h / mask_downsample))
    ds = w / mw
    mask = rasterize([(outline, 1)], (0.0, 0.0, mw * ds, mh * ds), (mw, mh)).astype(bool)
    if not mask.any():
        # thinner than a mask pixel everywhere: mark the pixels the outline touches
        mask = _touched(outline, ds, (mh, mw))
    return TissueMask(mask, ds), outline


def _outline(p: Path, slide_size_px: tuple[int, int]) -> BaseGeometry:
    """The union of the file's (tissue-classed, if any) areas, clipped to the slide."""
    objs = list(iter_objects(read_asap_xml(p) if p.suffix.lower() == ".xml" else read_geojson(p)))
    areas = [o for o in objs if o.is_area]
    tissue = [o for o in areas if (o.classification or "").strip().lower() in _TISSUE_NAMES]
    parts = [polygonal_part(o.geometry) for o in (tissue or areas)]
    parts = [g for g in parts if g is not None]
    if not parts:
        raise InvalidAnnotationError(f"--tissue file {p} holds no area (polygon); outline the tissue in QuPath "
                                     "(e.g. Classify > Pixel classification > Create thresholder > Create objects) "
                                     "and export it as GeoJSON")
    w, h = slide_size_px
    outline = shapely.union_all(parts).intersection(shapely.box(0, 0, w, h))
    outline = polygonal_part(outline)
    if outline is None:
        raise InvalidAnnotationError(f"--tissue file {p}: no area lies on the slide (0-{w} x 0-{h} px); "
                                     "is it the outline of another slide, or not in full-resolution pixels?")
    return outline


def _touched(outline: BaseGeometry, ds: float, shape: tuple[int, int]) -> np.ndarray:
    """One mask pixel (bool ``shape``) per polygon, where it lies (outlines thinner than a pixel)."""
    mask = np.zeros(shape, bool)
    for poly in getattr(outline, "geoms", [outline]):
        pt = poly.representative_point()
        mask[min(shape[0] - 1, int(pt.y // ds)), min(shape[1] - 1, int(pt.x // ds))] = True
    return mask


def _from_image(p: Path, slide_size_px: tuple[int, int]) -> TissueMask:
    """A mask image of the whole slide (tissue ≥ 128), its scale from its width."""
    try:
        with Image.open(p) as img:
            size = img.size
            mask = np.asarray(img.convert("L")) >= 128 if size[0] * size[1] <= _MAX_MASK_PX else None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InvalidAnnotationError(f"--tissue mask image {p} cannot be read ({err}); save it as an 8-bit PNG") from err
    if mask is None:
        raise InvalidAnnotationError(f"--tissue mask image {p} is {size[0]} x {size[1]} px: too large for a mask; "
                                     "save it at a downsample (HistoQC's mask_use.png is one)")
    w, h = slide_size_px
    mh, mw = mask.shape
    ds = w / mw
    if ds < 0.999 or abs(h / ds - mh) > max(1.0, 0.01 * mh):
        raise InvalidAnnotationError(f"--tissue mask image {p} is {mw} x {mh} px, which is not the slide's "
                                     f"{w} x {h} px at one scale; use the mask made for this slide")
    if not mask.any():
        raise InvalidAnnotationError(f"--tissue mask image {p} marks no tissue (no pixel >= 128); "
                                     "tissue must be white on black, as in HistoQC's mask_use.png")
    return TissueMask(mask, ds)
