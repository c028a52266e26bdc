"""QuPath-dialect GeoJSON ↔ shapely, without a JVM.

Every rule here comes from QuPath's own sources (qupath-core, package ``qupath.lib.io``):

* ``PathIO.readObjectsFromGeoJSON`` / ``addPathObjects``: the top level may be a
  ``FeatureCollection``, a ``Feature``, a bare geometry (becomes an annotation) or an array of
  those; anything else is skipped.
* ``PathObjectTypeAdapters.PathObjectTypeAdapter`` (0.2–0.4) and
  ``QuPathTypeAdapters.PathObjectTypeAdapter`` (0.4+): the object type is read from
  ``properties.objectType``, else ``object_type`` (0.3 spelling, warned), else ``type``, else a
  legacy feature ``id`` such as ``"PathAnnotationObject"`` (0.2); unknown types become
  annotations. A feature ``id`` that is a UUID is the object ID (0.4+). ``properties.color`` is
  the *object* colour (int or ``[r, g, b]``); ``isLocked``; ``measurements`` (0.4+: an object
  ``{name: value}``; 0.2/0.3: a list ``[{name, value}]``, the only form 0.3 reads);
  ``metadata`` (string values); ``childObjects``/``children`` (0.5+); ``nucleusGeometry`` for
  cells.
* ``GsonTools.PathClassTypeAdapter``: ``classification`` is ``null``, a string (0.4+), the 0.2/0.3
  default form ``{name, colorRGB: signed ARGB int[, parentClass]}``, or the 0.4+ proxy form
  ``{name | names, color: [r, g, b(, a)]}`` in which **both** a name and a colour are required
  (otherwise QuPath throws "Unable to parse PathClass"); colour arrays have 0, 1, 3 or 4 entries.
* ``ROITypeAdapters.parseGeometry``: geometry ``type`` is one of the seven GeoJSON types;
  positions are ``[x, y(, z)]``; JTS needs closed polygon rings of ≥ 4 positions and line
  strings of ≥ 2. QuPath writes coordinates with 2 decimals (``numDecimalPlaces = 2``).
* Non-finite measurements: QuPath ≥ 0.5 writes them as the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (qupath/qupath#1296, fixing #1293); QuPath 0.4.x cannot read them in the object
  form at all, but every version reads them in the list form (``getAsDouble`` parses the string),
  so write ``qupath_version="0.3"`` for QuPath 0.4.x when measurements may be NaN.

Coordinates are level-0 pixels. Objects we create carry ``metadata == CAMSEG_METADATA`` and a name
starting with ``"camseg"`` so a rerun replaces only its own objects (:func:`is_ours`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
)
from shapely.geometry.base import BaseGeometry

from qupath_camseg._io import atomic_write_text
from qupath_camseg.annotations.geojson_read import read_geojson
from qupath_camseg.annotations.geojson_validate import validate_qupath_geojson
from qupath_camseg.annotations.objects import (
    CAMSEG_METADATA,
    OBJECT_TYPES,
    OUR_NAME_PREFIX,
    QPObject,
    clip_to_slide,
    copy_object,
    default_class_color,
    is_ours,
    iter_objects,
    polygonal_part,
)

__all__ = [
    "CAMSEG_METADATA",
    "OUR_NAME_PREFIX",
    "OBJECT_TYPES",
    "QPObject",
    "read_geojson",
    "objects_to_geojson",
    "write_geojson",
    "validate_qupath_geojson",
    "is_ours",
    "iter_objects",
    "default_class_color",
    "polygonal_part",
    "copy_object",
    "clip_to_slide",
]

log = logging.getLogger(__name__)

_NONFINITE_OUT = {math.inf: "Infinity", -math.inf: "-Infinity"}
_DECIMALS = 2  # as ROITypeAdapters.numDecimalPlaces


def _round(v: float) -> float | int:
    r = round(float(v), _DECIMALS)
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def _coords(g: BaseGeometry) -> Any:
    if isinstance(g, Point):
        return [_round(g.x), _round(g.y)]
    if isinstance(g, (LineString,)):
        return [[_round(x), _round(y)] for x, y, *_ in g.coords]
    if isinstance(g, Polygon):
        return [_coords(LineString(r.coords)) for r in (g.exterior, *g.interiors)]
    return [_coords(p) for p in g.geoms]


def _homogenize(g: BaseGeometry) -> BaseGeometry:
    """Never write a GeometryCollection (QuPath's ROI types are homogeneous, as
    ``GeometryTools.homogenizeGeometryCollection``): keep its polygons, else points, else lines."""
    if not isinstance(g, GeometryCollection) or isinstance(
        g, (MultiPoint, MultiLineString, MultiPolygon)
    ):
        return g
    poly = polygonal_part(g)
    if poly is not None:
        return poly
    parts = [p for x in g.geoms for p in getattr(_homogenize(x), "geoms", [_homogenize(x)])]
    points = [p for p in parts if isinstance(p, Point)]
    if points:
        return MultiPoint(points)
    lines = [p for p in parts if isinstance(p, LineString)]
    return MultiLineString(lines) if lines else Polygon()


def _geometry_json(g: BaseGeometry) -> dict[str, Any]:
    return {"type": g.geom_type, "coordinates": _coords(g)}


def _measure_value(v: float) -> float | str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    return _NONFINITE_OUT.get(v, v)  # type: ignore[return-value]


def _class_json(name: str, color: tuple[int, int, int] | None, version: str) -> dict[str, Any]:
    r, g, b = (int(c) & 255 for c in (color or default_class_color(name)))
    names = [n.strip() for n in name.split(":") if n.strip()] or [name]
    if version == "0.3":
        argb = (0xFF << 24 | r << 16 | g << 8 | b) - (1 << 32)  # Java signed int
        out: dict[str, Any] = {"name": names[-1], "colorRGB": argb}
        if len(names) > 1:
            out = {"parentClass": _class_json(": ".join(names[:-1]), None, version), **out}
        return out
    if len(names) > 1:
        return {"names": names, "color": [r, g, b]}
    return {"name": names[0], "color": [r, g, b]}


def _feature_json(o: QPObject, version: str) -> dict[str, Any] | None:
    geom = _homogenize(o.geometry) if o.geometry is not None else None
    if geom is None or geom.is_empty:
        log.warning("object %s has empty geometry; not written", o.id)
        return None
    if o.object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, not {o.object_type!r}")
    feat: dict[str, Any] = {"type": "Feature", "id": str(uuid.UUID(str(o.id))),
                            "geometry": _geometry_json(geom)}
    if o.object_type == "cell" and o.nucleus_geometry is not None and not o.nucleus_geometry.is_empty:
        feat["nucleusGeometry"] = _geometry_json(_homogenize(o.nucleus_geometry))
    kind = "tma_core" if (version == "0.3" and o.object_type == "tmaCore") else o.object_type
    props: dict[str, Any] = {("object_type" if version == "0.3" else "objectType"): kind}
    if o.name is not None:
        props["name"] = str(o.name)
    if o.object_color is not None:
        props["color"] = [int(c) & 255 for c in o.object_color]
    if o.classification:
        props["classification"] = _class_json(o.classification, o.color, version)
    if o.locked or version == "0.3":
        props["isLocked"] = bool(o.locked)
    if o.measurements:
        if version == "0.3":
            props["measurements"] = [{"name": str(k), "value": _measure_value(v)}
                                     for k, v in o.measurements.items()]
        else:
            props["measurements"] = {str(k): _measure_value(v) for k, v in o.measurements.items()}
    if o.metadata:
        props["metadata"] = {str(k): str(v) for k, v in o.metadata.items()}
    if o.children:
        if version == "0.3":
            raise ValueError("QuPath 0.3 GeoJSON cannot hold child objects; flatten them "
                             "with iter_objects() first")
        props["childObjects"] = [c for c in (_feature_json(k, version) for k in o.children) if c]
    feat["properties"] = props
    return feat


def objects_to_geojson(objs: Sequence[QPObject], *, qupath_version: str = "0.4") -> dict[str, Any]:
    """A GeoJSON FeatureCollection dict that QuPath ``qupath_version`` reads.

    ``"0.4"`` (default; also right for 0.5–0.7): ``objectType``, ``classification {name,
    color}``, measurements object with non-finite values as ``"NaN"``/``"Infinity"``, UUID ``id``.
    ``"0.3"``: ``object_type``, ``classification {name, colorRGB}``, measurements list.
    """
    version = _version(qupath_version)
    feats = [f for f in (_feature_json(o, version) for o in objs) if f is not None]
    return {"type": "FeatureCollection", "features": feats}


def write_geojson(path: str | os.PathLike[str], objs: Sequence[QPObject], *,
                  qupath_version: str = "0.4", indent: int | None = None) -> Path:
    """Write ``objs`` as QuPath GeoJSON to ``path`` atomically (validated first); return the path."""
    data = objects_to_geojson(objs, qupath_version=qupath_version)
    validate_qupath_geojson(data, qupath_version=qupath_version)
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return Path(path)


def _version(v: str) -> str:
    v = str(v).strip()
    if v in ("0.2", "0.3"):
        return "0.3"
    if v in ("0.4", "0.5", "0.6", "0.7") or v.startswith(("0.4", "0.5", "0.6", "0.7")):
        return "0.4"
    raise ValueError(f"qupath_version must be 0.3 or 0.4 (0.4 also covers 0.5–0.7), not {v!r}")
