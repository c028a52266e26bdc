"""Reading QuPath-dialect GeoJSON into :class:`~qupath_camseg.annotations.objects.QPObject` (the rules,
from QuPath's sources, are listed in :mod:`qupath_camseg.annotations.geojson`).

Lenient where QuPath is (every spelling of the object type and class it accepts, 0.2-0.6 forms),
strict where QuPath would fail or lose data: each problem becomes a one-line error naming the
feature, and what was repaired (invalid rings, out-of-range colours) is reported.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterable
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

from qupath_camseg.annotations.objects import QPObject, pass_on_notes, polygonal_part
from qupath_camseg.errors import InvalidGeoJSONError

__all__ = ["read_geojson"]

log = logging.getLogger(__name__)

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
_NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_MAX_ABS_COORD = 1e9  # larger is not a slide pixel; also keeps float → int conversions safe


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
        raise InvalidGeoJSONError(f"{where}: coordinate {v!r:.40} is not a number; write positions as [x, y] "
                                  "numbers in level-0 pixels (export the objects from QuPath again)")
    try:
        f = float(v)
    except OverflowError as err:
        raise InvalidGeoJSONError(f"{where}: coordinate out of range; "
                                  "use level-0 pixel coordinates (export the objects from QuPath: File > Export objects as GeoJSON)") from err
    if not math.isfinite(f):
        raise InvalidGeoJSONError(f"{where}: NaN or infinite coordinate; remove or redraw "
                                  "this object (positions must be finite level-0 pixels)")
    if abs(f) > _MAX_ABS_COORD:
        raise InvalidGeoJSONError(f"{where}: coordinate {f:g} is beyond ±1e9 px; "
                                  "use level-0 pixel coordinates (export the objects from QuPath: File > Export objects as GeoJSON)")
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
    raise InvalidGeoJSONError(f"{where}: unknown geometry type {str(kind)[:40]!r} (QuPath reads "
                              "Point, MultiPoint, LineString, MultiLineString, Polygon, "
                              "MultiPolygon, GeometryCollection); export the objects from QuPath "
                              "(File > Export objects as GeoJSON)")


def _leaves(geom: GeometryCollection) -> list[BaseGeometry]:
    """The geometries of a collection, collections inside it flattened (iteratively)."""
    out, stack = [], list(geom.geoms)
    while stack:
        g = stack.pop()
        if type(g) is GeometryCollection:
            stack.extend(g.geoms)
        else:
            out.append(g)
    return out


def _clean(geom: BaseGeometry, where: str, notes: list[str]) -> BaseGeometry | None:
    """Repair polygonal geometry; None when nothing with area is left (reported)."""
    if isinstance(geom, GeometryCollection) and not isinstance(
        geom, (MultiPoint, MultiLineString, MultiPolygon)
    ):
        poly = polygonal_part(geom)
        if poly is not None:
            if any(not isinstance(g, (Polygon, MultiPolygon)) for g in _leaves(geom)):
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
    if isinstance(name, list) and name and all(isinstance(n, str) and n.strip() for n in name):
        name = ": ".join(n.strip() for n in name)  # ["Tumor", "Positive"]: a derived class as parts
    elif name is not None and not isinstance(name, str):
        raise InvalidGeoJSONError(f"{where}: classification name {json.dumps(name)[:60]} is not a class name; "
                                  'write it as "name": "Tumor" (or "names": ["Tumor", "Positive"])')
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


#: What to do about GeoJSON QuPath would not read.
_EXPORT_AGAIN = "export the objects from QuPath again (File > Export objects as GeoJSON)"


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
        raise InvalidGeoJSONError(f"{where}: nested too deeply to be QuPath GeoJSON; {_EXPORT_AGAIN}") from err
    except InvalidGeoJSONError as err:
        if "; " in str(err):
            raise
        raise InvalidGeoJSONError(f"{err}; {_EXPORT_AGAIN}") from err  # a structural problem: what to do
    pass_on_notes(notes, report, log)
    return out
