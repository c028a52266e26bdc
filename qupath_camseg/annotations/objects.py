"""The QuPath object model shared by every door: :class:`QPObject` and what goes with it.

A :class:`QPObject` is one QuPath object (annotation, detection, tile, cell, TMA core) with a
shapely geometry in level-0 pixels, its class and colour, measurements, metadata and children:
what QuPath GeoJSON (:mod:`qupath_camseg.annotations.geojson`), ASAP XML (:mod:`qupath_camseg.annotations.asap`) and the
paquo door (:mod:`qupath_camseg.qupath.paquo_project`) read and write. Objects we create carry
``metadata == CAMSEG_METADATA`` and a name starting with ``"camseg"`` (:func:`has_our_marker`); one
the user reshaped or reclassified since is the user's (:func:`is_edited`, :func:`is_ours`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg.annotations.fingerprint import FINGERPRINT_KEY, fingerprint_matches

__all__ = [
    "CAMSEG_METADATA",
    "OBJECT_TYPES",
    "OUR_NAME_PREFIX",
    "QPObject",
    "TISSUE_CLASS",
    "clip_to_slide",
    "copy_object",
    "default_class_color",
    "has_our_marker",
    "is_edited",
    "is_ours",
    "is_tissue_class",
    "iter_objects",
    "polygonal_part",
]

log = logging.getLogger(__name__)

CAMSEG_METADATA: dict[str, str] = {"created_by": "qupath-camseg"}
#: Our objects' names start with this too: QuPath 0.4 keeps metadata only on annotations, and
#: paquo cannot write it at all, so the name is the marker that survives (see :func:`is_ours`).
OUR_NAME_PREFIX = "camseg"
#: Class (and name) of the annotation that shows the tissue a prediction analysed: it never
#: trains, is never scored, and the Groovy import places it locked.
TISSUE_CLASS = "camseg Tissue"
OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore", "root")
#: QuPath's built-in class colours (``PathClassFactory.StandardPathClasses``); ``Ignore*`` is
#: QuPath's convention for "leave out of training".
_STANDARD_COLORS = {
    "Tumor": (200, 0, 0), "Stroma": (150, 200, 150), "Immune cells": (160, 90, 160),
    "Necrosis": (50, 50, 50), "Other": (255, 200, 0), "Region*": (0, 0, 180),
    "Ignore*": (180, 180, 180), "Positive": (200, 50, 50), "Negative": (112, 112, 225),
}


@dataclass
class QPObject:
    """One QuPath object. ``geometry`` is shapely in level-0 pixels.

    ``classification`` is the class name (derived classes joined by ``": "``, as QuPath's
    ``PathClass.toString``), ``color`` its ``(r, g, b)`` colour; ``object_color`` is the optional
    per-object colour (``properties.color``). ``id`` is a UUID string.
    """

    geometry: BaseGeometry
    object_type: str = "annotation"
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    locked: bool = False
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    children: list[QPObject] = field(default_factory=list)
    nucleus_geometry: BaseGeometry | None = None
    object_color: tuple[int, int, int] | None = None

    @property
    def is_area(self) -> bool:
        """True for Polygon / MultiPolygon geometry with positive area."""
        return isinstance(self.geometry, (Polygon, MultiPolygon)) and self.geometry.area > 0


def has_our_marker(obj: QPObject) -> bool:
    """True when ``obj`` carries qupath-camseg's marker. The one rule, shared with the Groovy bridge
    (``Camseg.hasOurMarker``) and the paquo door: metadata ``created_by`` decides when present (it
    must be ``qupath-camseg``); without it, a name starting with :data:`OUR_NAME_PREFIX` marks ours."""
    if "created_by" in obj.metadata:
        return all(obj.metadata.get(k) == v for k, v in CAMSEG_METADATA.items())
    return bool(obj.name) and str(obj.name).startswith(OUR_NAME_PREFIX)


def is_tissue_class(name: str | None) -> bool:
    """True for :data:`TISSUE_CLASS` (the analysed-tissue annotation's class, whoever owns the object)."""
    return name is not None and name.strip() == TISSUE_CLASS


def is_edited(obj: QPObject) -> bool:
    """True when ``obj`` holds a shape fingerprint (measurement
    :data:`~qupath_camseg.annotations.fingerprint.FINGERPRINT_KEY`) that no longer matches its
    geometry and class: the user reshaped or reclassified it after it was imported."""
    value = obj.measurements.get(FINGERPRINT_KEY)
    return value is not None and not fingerprint_matches(value, obj.geometry, obj.classification)


def is_ours(obj: QPObject) -> bool:
    """True when ``obj`` is qupath-camseg's to replace: it carries our marker
    (:func:`has_our_marker`) and was not edited since (:func:`is_edited`). An edited object is the
    user's: it trains, and neither ``predict`` nor the Groovy import removes it."""
    return has_our_marker(obj) and not is_edited(obj)


def iter_objects(objs: Iterable[QPObject]) -> Iterator[QPObject]:
    """Yield ``objs`` and all their descendants, depth first."""
    for obj in objs:
        yield obj
        yield from iter_objects(obj.children)


def default_class_color(name: str) -> tuple[int, int, int]:
    """QuPath's colour for a standard class (``Tumor`` → (200, 0, 0)); a stable hash colour else."""
    if name in _STANDARD_COLORS:
        return _STANDARD_COLORS[name]
    if name.startswith("Ignore"):
        return _STANDARD_COLORS["Ignore*"]
    if name.startswith("Region"):
        return _STANDARD_COLORS["Region*"]
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return (64 + digest[0] % 192, 64 + digest[1] % 192, 64 + digest[2] % 192)


def polygonal_part(geom: BaseGeometry) -> Polygon | MultiPolygon | None:
    """The valid polygonal part of ``geom`` (``make_valid``, lines/points dropped, collections
    inside collections flattened); None if empty."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, GeometryCollection):
        polys, stack = [], list(geom.geoms)
        while stack:  # iterative: a crafted file may nest collections deeply
            g = stack.pop()
            if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty:
                polys.append(g if g.is_valid else shapely.make_valid(g))
            elif isinstance(g, GeometryCollection):
                stack.extend(g.geoms)
        if not polys:
            return None
        geom = polygonal_part(shapely.union_all(polys)) if len(polys) > 1 else polygonal_part(polys[0])
        return geom
    if not isinstance(geom, (Polygon, MultiPolygon)) or geom.is_empty or geom.area <= 0:
        return None
    return geom


def clip_to_slide(objs: Sequence[QPObject], size_px: tuple[float, float], *,
                  report: list[str] | None = None) -> list[QPObject]:
    """Clip objects to the slide ``(0, 0, width, height)`` (level-0 px); drop what lies outside.

    Returns new objects (inputs are not modified); clipped and dropped objects are reported.
    Children are clipped too.
    """
    w, h = size_px
    frame = shapely.box(0, 0, w, h)
    notes: list[str] = []
    out: list[QPObject] = []
    for o in objs:
        kids = clip_to_slide(o.children, size_px, report=notes)
        geom = o.geometry
        label = o.name or o.classification or o.id
        if not frame.contains(geom):
            clipped = geom.intersection(frame)
            poly = polygonal_part(clipped) if o.is_area else clipped
            if poly is None or poly.is_empty:
                notes.append(f"object {label!r} lies outside the slide ({w}x{h} px); dropped")
                continue
            notes.append(f"object {label!r} extends beyond the slide ({w}x{h} px); clipped")
            geom = poly
        out.append(copy_object(o, geometry=geom, children=kids))
    pass_on_notes(notes, report, log)
    return out


def pass_on_notes(notes: Sequence[str], report: list[str] | None, logger: logging.Logger) -> None:
    """Hand ``notes`` (repairs, dropped shapes...) to the caller: appended to ``report`` and logged
    at DEBUG when the caller collects them (it shows them itself), else logged as warnings."""
    for n in notes:
        logger.log(logging.DEBUG if report is not None else logging.WARNING, "%s", n)
    if report is not None:
        report.extend(notes)


def copy_object(obj: QPObject, **changes: Any) -> QPObject:
    """A deep copy of ``obj`` with ``changes`` applied (geometry objects are shared; immutable)."""
    new = copy.copy(obj)
    new.measurements = dict(obj.measurements)
    new.metadata = dict(obj.metadata)
    new.children = [copy_object(c) for c in obj.children]
    for k, v in changes.items():
        setattr(new, k, v)
    return new
