"""What the first page of a TIFF says before a slide reader opens it: the level-0 pixel size
from its resolution tags (µm/px), and whether its pixels are 8-bit RGB/grey at all.

Both answer ``None`` for a file that is not a TIFF (or whose tags cannot be read): the readers of
:mod:`qupath_camseg.wsi.slides` then decide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

__all__ = ["mpp_from_tiff_tags", "tiff_pixel_problem"]


def mpp_from_tiff_tags(path: Path) -> float | None:
    """Level-0 µm/px from the first TIFF page's XResolution/ResolutionUnit (cm or inch)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            xres = page.tags.get("XResolution")
            unit = page.tags.get("ResolutionUnit")
            if xres is None or unit is None:
                return None
            num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
            px_per_unit = float(num) / float(den) if den else 0.0
            um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
    except Exception:  # noqa: BLE001 - not a TIFF, or unreadable tags: simply no calibration
        return None
    if um_per_unit is None or px_per_unit <= 0:
        return None
    return um_per_unit / px_per_unit


def tiff_pixel_problem(path: Path) -> str | None:
    """Why the first TIFF page cannot be read as 8-bit RGB / grey (e.g. ``"16-bit (uint16) pixels
    with 1 channel"``), or None (fine, or not a TIFF: the readers decide). Both readers would
    otherwise turn such pixels into plausible-looking garbage (clipped, black or white)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            dtype, samples = np.dtype(page.dtype), int(page.samplesperpixel)
    except Exception:  # noqa: BLE001 - not a TIFF (or unreadable): the readers report it
        return None
    if dtype == np.uint8 and 1 <= samples <= 4:
        return None
    return f"{dtype.itemsize * 8}-bit ({dtype.name}) pixels with {samples} channel{'s' * (samples != 1)}"
