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

import copy
import hashlib
import json
import logging
import math
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
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
from qupath_camseg._geojson_validate import validate_qupath_geojson
from qupath_camseg.errors import InvalidGeoJSONError

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

CAMSEG_METADATA: dict[str, str] = {"created_by": "qupath-camseg"}
#: Our objects' names start with this too: QuPath 0.4 keeps metadata only on annotations, and
#: paquo cannot write it at all, so the name is the marker that survives (see :func:`is_ours`).
OUR_NAME_PREFIX = "camseg"
OBJECT_TYPES = ("annotation", "detection", "tile", "cell", "tmaCore", "root")
#: every spelling QuPath accepts (``PathObjectTypeAdapter.read`` switch) → our canonical name.
_TYPE_ALIASES = {
    "annotation": "annotation", "PathAnnotationObject": "annotation", "unknown": "annotation",
    "detection": "detection", "PathDetectionObject": "detection",
    "tile": "tile", "PathTileObject": "tile",
    "cell": "cell", "PathCellObject": "cell",
    "tmaCore": "tmaCore", "tma_core": "tmaCore", "TMACoreObject": "tmaCore",
    "root": "root", "PathRootObject": "root",
}
_LEGACY_TYPE_IDS = {"PathTileObject", "PathCellObject", "TMACoreObject", "PathDetectionObject",
                    "PathRootObject", "PathAnnotationObject"}
#: QuPath's built-in class colours (``PathClassFactory.StandardPathClasses``); ``Ignore*`` is
#: QuPath's convention for "leave out of training".
_STANDARD_COLORS = {
    "Tumor": (200, 0, 0), "Stroma": (150, 200, 150), "Immune cells": (160, 90, 160),
    "Necrosis": (50, 50, 50), "Other": (255, 200, 0), "Region*": (0, 0, 180),
    "Ignore*": (180, 180, 180), "Positive": (200, 50, 50), "Negative": (112, 112, 225),
}
_NONFINITE_OUT = {math.inf: "Infinity", -math.inf: "-Infinity"}
_NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_MAX_ABS_COORD = 1e9  # larger is not a slide pixel; also keeps float → int conversions safe
_DECIMALS = 2  # as ROITypeAdapters.numDecimalPlaces


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


def is_ours(obj: QPObject) -> bool:
    """True when ``obj`` was created by qupath-camseg. The one rule, shared with the Groovy bridge
    (``Camseg.isOurs``) and the paquo door: metadata ``created_by`` decides when present (it must be
    ``qupath-camseg``); without it, a name starting with :data:`OUR_NAME_PREFIX` marks ours."""
    if "created_by" in obj.metadata:
        return all(obj.metadata.get(k) == v for k, v in CAMSEG_METADATA.items())
    return bool(obj.name) and str(obj.name).startswith(OUR_NAME_PREFIX)


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
    """The valid polygonal part of ``geom`` (``make_valid``, lines/points dropped); None if empty."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, GeometryCollection):
        polys = [g for g in geom.geoms if isinstance(g, (Polygon, MultiPolygon)) and not g.is_empty]
        if not polys:
            return None
        geom = shapely.union_all(polys)
    if not isinstance(geom, (Polygon, MultiPolygon)) or geom.is_empty or geom.area <= 0:
        return None
    return geom


# ---------------------------------------------------------------------------------------- read
def _load(src: Any) -> tuple[Any, str]:
    """Return (parsed JSON, description of the source for messages)."""
    if not isinstance(src, (str, bytes, os.PathLike)):
        return src, "<GeoJSON object>"  # parsed JSON (checked by the caller)
    if isinstance(src, bytes):
        src = src.decode("utf-8", errors="replace")
    if isinstance(src, str) and src.lstrip()[:1] in ("{", "["):
        text, where = src, "<GeoJSON text>"
    else:
        path = Path(os.fspath(src))
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError as err:
            raise InvalidGeoJSONError(f"{path}: file not found; check the path") from err
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidGeoJSONError(f"{path}: cannot read as UTF-8 text ({err}); "
                                      "export the annotations from QuPath as GeoJSON") from err
    try:
        return json.loads(text), where
    except (ValueError, RecursionError) as err:
        msg = str(err).splitlines()[0][:200]
        raise InvalidGeoJSONError(f"{where}: not valid JSON ({msg}); export the annotations "
                                  "from QuPath as GeoJSON (File > Export objects)") from err


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidGeoJSONError(f"{where}: coordinate {v!r:.40} is not a number; "
                                  "positions must be [x, y] numbers in level-0 pixels")
    try:
        f = float(v)
    except OverflowError as err:
        raise InvalidGeoJSONError(f"{where}: coordinate out of range; "
                                  "positions must be level-0 pixels") from err
    if not math.isfinite(f):
        raise InvalidGeoJSONError(f"{where}: NaN or infinite coordinate; remove or redraw "
                                  "this object (positions must be finite level-0 pixels)")
    if abs(f) > _MAX_ABS_COORD:
        raise InvalidGeoJSONError(f"{where}: coordinate {f:g} is beyond ±1e9 px; "
                                  "positions must be level-0 pixels")
    return f


def _positions(arr: Any, where: str, min_len: int = 0) -> list[tuple[float, float]]:
    if not isinstance(arr, list):
        raise InvalidGeoJSONError(f"{where}: expected an array of [x, y] positions")
    out = []
    for p in arr:
        if not isinstance(p, list) or len(p) not in (2, 3):
            raise InvalidGeoJSONError(f"{where}: position {str(p)[:40]} is not [x, y] or "
                                      "[x, y, z]")
        out.append((_num(p[0], where), _num(p[1], where)))
    if len(out) < min_len:
        raise InvalidGeoJSONError(f"{where}: needs at least {min_len} positions")
    return out


def _ring(arr: Any, where: str, notes: list[str]) -> list[tuple[float, float]] | None:
    pts = _positions(arr, where)
    if pts and pts[0] != pts[-1]:
        notes.append(f"{where}: ring was not closed; closed it")
        pts.append(pts[0])
    if len(set(pts)) < 3:
        notes.append(f"{where}: ring with fewer than 3 distinct points dropped")
        return None
    return pts


def _polygon(coords: Any, where: str, notes: list[str]) -> Polygon | None:
    if not isinstance(coords, list):
        raise InvalidGeoJSONError(f"{where}: polygon coordinates must be an array of rings")
    rings = [_ring(r, where, notes) for r in coords]
    if not rings or rings[0] is None:
        return None
    return Polygon(rings[0], [r for r in rings[1:] if r is not None])


def _geometry(g: Any, where: str, notes: list[str], depth: int = 0) -> BaseGeometry:
    if not isinstance(g, dict):
        raise InvalidGeoJSONError(f"{where}: geometry must be an object with 'type' and "
                                  "'coordinates'")
    kind = g.get("type")
    if kind == "GeometryCollection":
        if depth > 8 or not isinstance(g.get("geometries"), list):
            raise InvalidGeoJSONError(f"{where}: GeometryCollection needs a 'geometries' array")
        return GeometryCollection([_geometry(x, where, notes, depth + 1) for x in g["geometries"]])
    c = g.get("coordinates")
    if kind == "Point":
        return Point(_positions([c], where)[0])
    if kind == "MultiPoint":
        return MultiPoint(_positions(c, where))
    if kind == "LineString":
        return LineString(_positions(c, where, 2))
    if kind == "MultiLineString":
        if not isinstance(c, list):
            raise InvalidGeoJSONError(f"{where}: MultiLineString needs an array of lines")
        return MultiLineString([_positions(x, where, 2) for x in c])
    if kind == "Polygon":
        return _polygon(c, where, notes) or Polygon()
    if kind == "MultiPolygon":
        if not isinstance(c, list):
            raise InvalidGeoJSONError(f"{where}: MultiPolygon needs an array of polygons")
        polys = [p for p in (_polygon(x, where, notes) for x in c) if p is not None]
        return MultiPolygon(polys) if polys else Polygon()
    raise InvalidGeoJSONError(f"{where}: unknown geometry type {str(kind)[:40]!r}; QuPath reads "
                              "Point, MultiPoint, LineString, MultiLineString, Polygon, "
                              "MultiPolygon, GeometryCollection")


def _clean(geom: BaseGeometry, where: str, notes: list[str]) -> BaseGeometry | None:
    """Repair polygonal geometry; None when nothing with area is left (reported)."""
    if isinstance(geom, GeometryCollection) and not isinstance(
        geom, (MultiPoint, MultiLineString, MultiPolygon)
    ):
        poly = polygonal_part(geom)
        if poly is not None:
            if len(geom.geoms) and any(not isinstance(g, (Polygon, MultiPolygon)) for g in geom.geoms):
                notes.append(f"{where}: GeometryCollection: kept its polygons, dropped points/lines")
            return poly
        return geom if not geom.is_empty else None
    if isinstance(geom, (Polygon, MultiPolygon)):
        if geom.is_empty:
            notes.append(f"{where}: empty or zero-area polygon dropped")
            return None
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            fixed = polygonal_part(geom)
            if fixed is None:
                notes.append(f"{where}: invalid polygon ({reason}) has no area; dropped")
                return None
            notes.append(f"{where}: invalid polygon ({reason}) repaired with make_valid")
            return fixed
        if geom.area <= 0:
            notes.append(f"{where}: zero-area polygon dropped")
            return None
        return geom
    if geom.is_empty:
        notes.append(f"{where}: empty geometry dropped")
        return None
    notes.append(f"{where}: {geom.geom_type} kept (it has no area)")
    return geom


def _rgb(v: Any, where: str) -> tuple[int, int, int] | None:
    """Colour from a signed ARGB int (``colorRGB``/``color`` primitive) or an [r, g, b(, a)] array."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        i = int(v)
        return ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    if isinstance(v, list) and len(v) in (3, 4) and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v
    ):
        return tuple(int(c) & 255 for c in v[:3])  # type: ignore[return-value]
    if v is not None:
        log.debug("%s: colour %r ignored", where, v)
    return None


def _classification(c: Any, where: str) -> tuple[str | None, tuple[int, int, int] | None]:
    """Parse ``classification`` as ``GsonTools.PathClassTypeAdapter.read`` does (leniently)."""
    if c is None:
        return None, None
    if isinstance(c, str):
        return (c.strip() or None), None
    if not isinstance(c, dict):
        raise InvalidGeoJSONError(f"{where}: classification must be a string or an object "
                                  "with 'name' and 'color'")
    color = _rgb(c.get("color", c.get("colorRGB")), where)
    if isinstance(c.get("names"), list) and c["names"]:
        return ": ".join(str(n) for n in c["names"]), color
    name = c.get("name")
    if isinstance(c.get("parentClass"), dict):  # 0.2/0.3 derived class
        parent, _ = _classification(c["parentClass"], where)
        if parent and isinstance(name, str):
            return f"{parent}: {name}", color
    return (name if isinstance(name, str) and name else None), color


def _measurements(m: Any, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    items: Iterable[tuple[Any, Any]]
    if isinstance(m, dict):
        items = m.items()
    elif isinstance(m, list):
        items = ((e.get("name"), e.get("value")) for e in m if isinstance(e, dict))
    else:
        return out
    for k, v in items:
        if not isinstance(k, str):
            continue
        if isinstance(v, str) and v in _NONFINITE_IN:
            out[k] = _NONFINITE_IN[v]
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                out[k] = float(v)
            except OverflowError:
                out[k] = math.inf if v > 0 else -math.inf
        else:
            log.debug("%s: measurement %r ignored (not a number)", where, k)
    return out


def _feature(f: Any, where: str, notes: list[str], depth: int = 0) -> QPObject | None:
    if not isinstance(f, dict):
        raise InvalidGeoJSONError(f"{where}: a feature must be a JSON object")
    props = f.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidGeoJSONError(f"{where}: 'properties' must be an object")
    if "geometry" not in f or f["geometry"] is None:
        raise InvalidGeoJSONError(f"{where}: feature has no geometry; QuPath needs one per object")
    geom = _clean(_geometry(f["geometry"], where, notes), where, notes)
    fid = f.get("id")
    kind = "unknown"
    if isinstance(fid, str) and fid in _LEGACY_TYPE_IDS:
        kind, fid = fid, None
    for key in ("objectType", "object_type", "type"):
        if isinstance(props.get(key), str):
            kind = props[key]
            break
    object_type = _TYPE_ALIASES.get(kind)
    if object_type is None:
        notes.append(f"{where}: unknown object type {kind[:40]!r} read as annotation (as QuPath)")
        object_type = "annotation"
    try:
        oid = str(uuid.UUID(str(fid))) if fid is not None else str(uuid.uuid4())
    except ValueError:
        oid = str(uuid.uuid4())
    cls, color = _classification(props.get("classification"), where)
    children: list[QPObject] = []
    kids = props.get("childObjects", props.get("children"))
    if isinstance(kids, list):
        if depth > 64:
            raise InvalidGeoJSONError(f"{where}: child objects nested deeper than 64 levels")
        for j, k in enumerate(kids):
            child = _feature(k, f"{where} child {j}", notes, depth + 1)
            if child is not None:
                children.append(child)
    if geom is None:
        return None
    nucleus = None
    if object_type == "cell" and f.get("nucleusGeometry") is not None:
        nucleus = _clean(_geometry(f["nucleusGeometry"], f"{where} nucleus", notes),
                         f"{where} nucleus", notes)
    meta = props.get("metadata")
    name = props.get("name")
    return QPObject(
        geometry=geom,
        object_type=object_type,
        classification=cls,
        color=color if cls else None,
        name=name if isinstance(name, str) else None,
        measurements=_measurements(props.get("measurements"), where),
        metadata={str(k): str(v) for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        if isinstance(meta, dict) else {},
        locked=props.get("isLocked") is True,
        id=oid,
        children=children,
        nucleus_geometry=nucleus,
        object_color=_rgb(props.get("color"), where),
    )


def _collect(el: Any, where: str, notes: list[str], out: list[QPObject], depth: int = 0) -> None:
    """``PathIO.addPathObjects``: arrays recurse; Feature, FeatureCollection, bare geometry."""
    if isinstance(el, list):
        if depth > 8:
            raise InvalidGeoJSONError(f"{where}: arrays nested too deeply")
        for i, e in enumerate(el):
            _collect(e, f"{where} item {i}" if depth else f"{where}: feature {i}", notes, out, depth + 1)
        return
    kind = el.get("type") if isinstance(el, dict) else None
    if kind == "Feature":
        obj = _feature(el, where, notes)
        if obj is not None:
            out.append(obj)
    elif kind == "FeatureCollection":
        feats = el.get("features")
        if not isinstance(feats, list):
            raise InvalidGeoJSONError(f"{where}: FeatureCollection without a 'features' array")
        for i, f in enumerate(feats):
            obj = _feature(f, f"{where}: feature {i}", notes)
            if obj is not None:
                out.append(obj)
    elif kind in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                  "MultiPolygon", "GeometryCollection"):
        geom = _clean(_geometry(el, where, notes), where, notes)
        if geom is not None:
            out.append(QPObject(geometry=geom))
    elif depth == 0:  # QuPath would read nothing: say so rather than return an empty list
        raise InvalidGeoJSONError(f"{where}: not GeoJSON (top-level 'type' is {str(kind)[:40]!r}, not "
                                  "FeatureCollection, Feature or a geometry); export the objects from "
                                  "QuPath (File > Export objects as GeoJSON)")
    else:
        notes.append(f"{where}: skipped (not a Feature, FeatureCollection or geometry)")


def read_geojson(src: Any, *, report: list[str] | None = None) -> list[QPObject]:
    """Read QuPath (0.2–0.6) GeoJSON from a path, JSON text, or parsed JSON.

    Returns the top-level objects (children in ``QPObject.children``). Invalid polygons are
    repaired (``shapely.make_valid``, polygonal parts kept); zero-area polygons are dropped; points
    and lines are kept (``obj.is_area`` is False for them). Every such event is appended to
    ``report`` (and logged as a warning). Raises :class:`InvalidGeoJSONError`, naming the file and
    feature index, for input that is not GeoJSON or has NaN/infinite/non-numeric coordinates.
    """
    data, where = _load(src)
    notes: list[str] = []
    out: list[QPObject] = []
    if not isinstance(data, (dict, list)):
        raise InvalidGeoJSONError(f"{where}: expected a GeoJSON object or array, got "
                                  f"{type(data).__name__}; export objects from QuPath as GeoJSON")
    try:
        _collect(data, where, notes, out)
    except RecursionError as err:
        raise InvalidGeoJSONError(f"{where}: nested too deeply to be QuPath GeoJSON") from err
    for n in notes:  # the caller shows what it collects; otherwise warn
        log.log(logging.DEBUG if report is not None else logging.WARNING, "%s", n)
    if report is not None:
        report.extend(notes)
    return out


# --------------------------------------------------------------------------------------- write
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
    for n in notes:
        log.log(logging.DEBUG if report is not None else logging.WARNING, "%s", n)
    if report is not None:
        report.extend(notes)
    return out


def copy_object(obj: QPObject, **changes: Any) -> QPObject:
    """A deep copy of ``obj`` with ``changes`` applied (geometry objects are shared; immutable)."""
    new = copy.copy(obj)
    new.measurements = dict(obj.measurements)
    new.metadata = dict(obj.metadata)
    new.children = [copy_object(c) for c in obj.children]
    for k, v in changes.items():
        setattr(new, k, v)
    return new
