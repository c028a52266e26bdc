"""Shape fingerprints: tell whether an object qupath-camseg wrote was reshaped or reclassified since.

Each region annotation ``predict`` writes carries the measurement :data:`FINGERPRINT_KEY`, a CRC-32
of its class name, area and centroid, each quantised (:func:`shape_fingerprint`). When the object
comes back (from QuPath's GeoJSON export, the paquo door or the Groovy bridge), a fingerprint that
no longer matches its geometry and class means the user edited it: the object is then the user's
(:func:`~qupath_camseg.annotations.objects.is_ours` says False), so it trains and is never replaced.

Why a measurement, and why quantised: measurements survive QuPath 0.4–0.6 GeoJSON round trips and
the paquo door (annotation measurement lists hold doubles; object metadata is dropped by QuPath
0.4's GeoJSON reader and cannot be written by paquo), and QuPath keeps polygon vertices as 32-bit
floats (``PolygonROI``), so coordinates come back rounded (≤ 1/64 px on a 200,000 px slide).
:func:`fingerprint_matches` therefore accepts the neighbouring bins of each quantity: the area
within ±0.1–0.2 %, the centroid within ±1–2 px. A real edit (a brush stroke, a moved vertex, a new
class) changes at least one of them by more.

The Groovy bridge computes the same value (``Camseg.fingerprint`` in ``camseg_lib.groovy``:
``java.util.zip.CRC32`` of the same UTF-8 text, JTS area and centroid of ``ROI.getGeometry()``);
``tests/qupath/test_groovy.py`` checks the two agree.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = ["FINGERPRINT_KEY", "fingerprint_matches", "fingerprint_neighbours", "shape_fingerprint"]

#: The measurement holding an object's fingerprint (a float with an integer value in [0, 2**32)).
FINGERPRINT_KEY = "camseg fingerprint"
#: Quantisation: area bins are 0.1 % wide (log scale), centroid bins 1 level-0 px.
_LOG_AREA_STEP = math.log1p(1e-3)
_CENTROID_STEP_PX = 1.0


def _bins(geometry: BaseGeometry | None) -> tuple[int, int, int] | None:
    """``(area bin, centroid x bin, centroid y bin)`` of a polygonal geometry (level-0 px); None
    for anything without area."""
    if not isinstance(geometry, (Polygon, MultiPolygon)) or geometry.is_empty or not geometry.area > 0:
        return None
    c = geometry.centroid
    return (math.floor(math.log(geometry.area) / _LOG_AREA_STEP), math.floor(c.x / _CENTROID_STEP_PX),
            math.floor(c.y / _CENTROID_STEP_PX))


def _crc(classification: str | None, bins: tuple[int, int, int]) -> int:
    text = f"{classification or ''}|{bins[0]}|{bins[1]}|{bins[2]}"
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


def shape_fingerprint(geometry: BaseGeometry | None, classification: str | None) -> int | None:
    """The fingerprint of a geometry (level-0 px) and class name: CRC-32 of
    ``"<class>|<floor(ln(area) / ln(1.001))>|<floor(cx)>|<floor(cy)>"``; None without area."""
    bins = _bins(geometry)
    return None if bins is None else _crc(classification, bins)


def _near(bins: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    for da in (0, -1, 1):
        for dx in (0, -1, 1):
            for dy in (0, -1, 1):
                yield bins[0] + da, bins[1] + dx, bins[2] + dy


def fingerprint_neighbours(geometry: BaseGeometry | None, classification: str | None) -> set[int]:
    """The fingerprints of ``geometry`` and ``classification`` up to float rounding: those of the
    27 neighbouring bins (see the module docstring); empty without area."""
    bins = _bins(geometry)
    return set() if bins is None else {_crc(classification, b) for b in _near(bins)}


def fingerprint_matches(value: float, geometry: BaseGeometry | None, classification: str | None) -> bool:
    """True when ``value`` (a stored fingerprint) is that of ``geometry`` and ``classification``
    up to float rounding (:func:`fingerprint_neighbours`)."""
    return math.isfinite(value) and int(value) in fingerprint_neighbours(geometry, classification)
