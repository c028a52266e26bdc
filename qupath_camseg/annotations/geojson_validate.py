"""A strict validator for QuPath GeoJSON: each check is one rule of QuPath's parser.

Rules and where they come from (qupath-core, ``qupath.lib.io``):

==================  =========================================================================
rule                source
==================  =========================================================================
``json``            Python's strict JSON; bare ``NaN``/``Infinity`` are not JSON (qupath#1293)
``top-level``       ``PathIO.addPathObjects``: FeatureCollection / Feature / geometry / array;
                    anything else is skipped silently by QuPath
``feature-type``    ``addPathObjects``: a feature's ``"type"`` is ``"Feature"``
``feature-id``      ``PathObjectTypeAdapter.read``: ``id.getAsString()``; 0.4+ expects a UUID
                    (or a 0.2 legacy type name such as ``PathAnnotationObject``)
``geometry``        ``ROITypeAdapters.parseGeometry``: an object whose ``type`` is one of the
                    seven GeoJSON geometry types
``coordinates``     ``parseGeometry``: ``coordinates`` array nested as the type requires
``position``        ``parseCoordinate``: ``[x, y]`` or ``[x, y, z]`` of finite numbers
``ring``            JTS ``LinearRing``: closed, at least 4 positions
``linestring``      JTS ``LineString``: at least 2 positions
``properties``      ``read``: ``properties.getAsJsonObject()``
``object-type``     ``read``: ``objectType`` / ``object_type`` / ``type`` among QuPath's names
                    (0.3 reads only ``object_type``/``type``)
``classification``  ``GsonTools.PathClassTypeAdapter.read``: null, string (0.4+),
                    ``{name, colorRGB}`` (0.2/0.3) or ``{name|names, color}`` with BOTH parts
``class-color``     ``GsonTools.arrayToRgb``: 0, 1, 3 or 4 integers 0–255
``object-color``    ``read``: ``color`` is an int or ``[r, g, b]``
``name``            ``read``: ``name.getAsString()``
``isLocked``        ``read``: a boolean
``measurements``    ``MeasurementListTypeAdapter.read``: 0.4+ object ``{name: number}`` or list
                    ``[{name, value}]``; 0.3 reads only the list; non-finite values as the
                    strings ``"NaN"``/``"Infinity"``/``"-Infinity"`` (qupath#1296)
``metadata``        ``read``: an object of string values
``children``        ``QuPathTypeAdapters`` (0.5+): ``childObjects``/``children`` array of
                    features; QuPath 0.3 drops them
==================  =========================================================================
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

from qupath_camseg.errors import InvalidGeoJSONError

__all__ = ["validate_qupath_geojson", "RULES"]

RULES = ("json", "top-level", "feature-type", "feature-id", "geometry", "coordinates", "position",
         "ring", "linestring", "properties", "object-type", "classification", "class-color",
         "object-color", "name", "isLocked", "measurements", "metadata", "children")
_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                   "MultiPolygon", "GeometryCollection")
_TYPES_04 = {"annotation", "detection", "tile", "cell", "tmaCore", "tma_core", "root",
             "PathAnnotationObject", "PathDetectionObject", "PathTileObject", "PathCellObject",
             "TMACoreObject", "PathRootObject", "unknown"}
_TYPES_03 = _TYPES_04 - {"tmaCore"}
_LEGACY_IDS = {"PathTileObject", "PathCellObject", "TMACoreObject", "PathDetectionObject",
               "PathRootObject", "PathAnnotationObject"}
_NONFINITE = {"NaN", "Infinity", "-Infinity"}
_FIX = {
    "json": "write strict JSON (non-finite numbers as strings)",
    "top-level": "use a FeatureCollection, a Feature, a geometry or an array of Features",
    "feature-type": 'set "type": "Feature"',
    "feature-id": "use a UUID string as the feature id",
    "geometry": "give every feature a GeoJSON geometry object",
    "coordinates": "nest coordinates as GeoJSON requires for the type",
    "position": "positions are [x, y] finite numbers in level-0 pixels",
    "ring": "close each ring (last position = first) with at least 4 positions",
    "linestring": "a line needs at least 2 positions",
    "properties": "properties must be a JSON object",
    "object-type": 'use objectType "annotation", "detection", "tile", "cell", "tmaCore" or "root"',
    "classification": 'write {"name": ..., "color": [r, g, b]}',
    "class-color": "colour arrays hold 0, 1, 3 or 4 integers 0-255",
    "object-color": "color is an integer or [r, g, b]",
    "name": "name must be a string",
    "isLocked": "isLocked must be true or false",
    "measurements": 'use {"name": number} (0.4+) or [{"name": .., "value": number}] (0.3)',
    "metadata": "metadata values must be strings",
    "children": "childObjects must be an array of Features",
}


class _Checker:
    def __init__(self, where: str, version: str | None) -> None:
        self.where = where
        self.v03 = version == "0.3"
        self.problems: list[str] = []

    def fail(self, rule: str, at: str, detail: str, fix: str | None = None) -> None:
        self.problems.append(f"{at}: breaks QuPath rule '{rule}' ({detail}); "
                             f"fix: {fix or _FIX[rule]}")

    # -- geometry ------------------------------------------------------------------------------
    def position(self, p: Any, at: str) -> bool:
        if not isinstance(p, list) or len(p) not in (2, 3):
            self.fail("position", at, f"position {str(p)[:30]} is not [x, y]")
            return False
        for c in p:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                self.fail("position", at, f"coordinate {str(c)[:30]} is not a finite number")
                return False
        return True

    def positions(self, arr: Any, at: str) -> list[Any] | None:
        if not isinstance(arr, list):
            self.fail("coordinates", at, "expected an array of positions")
            return None
        return arr if all(self.position(p, at) for p in arr) else None

    def ring(self, arr: Any, at: str) -> None:
        pts = self.positions(arr, at)
        if pts is None:
            return
        if len(pts) < 4:
            self.fail("ring", at, f"ring has {len(pts)} positions")
        elif pts[0][:2] != pts[-1][:2]:
            self.fail("ring", at, "ring is not closed")

    def geometry(self, g: Any, at: str, depth: int = 0) -> None:
        if not isinstance(g, dict) or g.get("type") not in _GEOMETRY_TYPES:
            kind = g.get("type") if isinstance(g, dict) else type(g).__name__
            self.fail("geometry", at, f"geometry type {str(kind)[:30]!r}")
            return
        kind, c = g["type"], g.get("coordinates")
        if kind == "GeometryCollection":
            if not isinstance(g.get("geometries"), list) or depth > 8:
                self.fail("coordinates", at, "GeometryCollection needs a 'geometries' array")
                return
            for sub in g["geometries"]:
                self.geometry(sub, at, depth + 1)
            return
        if kind == "Point":
            self.position(c, at)
        elif kind in ("MultiPoint", "LineString"):
            pts = self.positions(c, at)
            if kind == "LineString" and pts is not None and len(pts) < 2:
                self.fail("linestring", at, f"line has {len(pts)} positions")
        elif kind in ("MultiLineString", "Polygon"):
            if not isinstance(c, list):
                self.fail("coordinates", at, f"{kind} needs an array of position arrays")
                return
            for part in c:
                if kind == "Polygon":
                    self.ring(part, at)
                else:
                    pts = self.positions(part, at)
                    if pts is not None and len(pts) < 2:
                        self.fail("linestring", at, f"line has {len(pts)} positions")
        else:  # MultiPolygon
            if not isinstance(c, list) or not all(isinstance(p, list) for p in c):
                self.fail("coordinates", at, "MultiPolygon needs an array of polygons")
                return
            for poly in c:
                for r in poly:
                    self.ring(r, at)

    # -- properties ----------------------------------------------------------------------------
    def color_array(self, c: Any, at: str, lengths: tuple[int, ...], rule: str) -> None:
        if isinstance(c, int) and not isinstance(c, bool) and rule == "object-color":
            return
        ok = isinstance(c, list) and len(c) in lengths and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in c)
        if not ok:
            self.fail(rule, at, f"colour {str(c)[:30]}")

    def classification(self, c: Any, at: str) -> None:
        if c is None:
            return
        if isinstance(c, str):
            if self.v03:
                self.fail("classification", at, "QuPath 0.3 does not read a string classification")
            elif not c.strip():
                self.fail("classification", at, "empty class name")
            return
        if not isinstance(c, dict):
            self.fail("classification", at, f"{type(c).__name__} is not a classification")
            return
        if not c or "colorRGB" in c or "parentClass" in c:  # 0.2/0.3 default Gson form
            if c and not isinstance(c.get("name"), str):
                self.fail("classification", at, "legacy classification without a string name")
            rgb = c.get("colorRGB")
            if rgb is not None and (isinstance(rgb, bool) or not isinstance(rgb, int)
                                    or not -(2**31) <= rgb < 2**31):
                self.fail("class-color", at, f"colorRGB {str(rgb)[:30]} is not a 32-bit integer")
            if "parentClass" in c:
                self.classification(c["parentClass"], at)
            return
        if self.v03:
            self.fail("classification", at, "QuPath 0.3 reads only {name, colorRGB}")
            return
        has_name = isinstance(c.get("name"), str) and c["name"].strip()
        names = c.get("names")
        has_names = isinstance(names, list) and names and all(
            isinstance(n, str) and n.strip() for n in names)
        if not (has_name or has_names):
            self.fail("classification", at, "no 'name' (or 'names') string")
        if "color" not in c:
            self.fail("classification", at, "no 'color'; QuPath needs name AND color")
            return
        self.color_array(c["color"], at, (0, 1, 3, 4), "class-color")

    def measurements(self, m: Any, at: str) -> None:
        def number(v: Any) -> bool:
            if isinstance(v, str):
                return v in _NONFINITE
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if isinstance(m, dict):
            if self.v03:
                self.fail("measurements", at, "QuPath 0.3 ignores a measurements object")
                return
            bad = [k for k, v in m.items() if not number(v)]
        elif isinstance(m, list):
            bad = [str(e)[:30] for e in m if not (isinstance(e, dict) and isinstance(
                e.get("name"), str) and number(e.get("value")))]
        else:
            self.fail("measurements", at, f"{type(m).__name__} is not an object or list")
            return
        if bad:
            self.fail("measurements", at, f"non-numeric value for {str(bad[0])[:40]!r}")

    def feature(self, f: Any, at: str, depth: int = 0) -> None:
        if not isinstance(f, dict) or f.get("type") != "Feature":
            kind = f.get("type") if isinstance(f, dict) else type(f).__name__
            self.fail("feature-type", at, f"type is {str(kind)[:30]!r}, not 'Feature'")
            return
        fid = f.get("id")
        if fid is not None:
            if not isinstance(fid, str):
                self.fail("feature-id", at, "id is not a string")
            elif not self.v03 and fid not in _LEGACY_IDS:
                try:
                    uuid.UUID(fid)
                except ValueError:
                    self.fail("feature-id", at, f"id {fid[:40]!r} is not a UUID")
        if "geometry" not in f:
            self.fail("geometry", at, "feature has no geometry")
        else:
            self.geometry(f["geometry"], at)
        if "nucleusGeometry" in f:
            self.geometry(f["nucleusGeometry"], f"{at} nucleusGeometry")
        props = f.get("properties", {})
        if not isinstance(props, dict):
            self.fail("properties", at, f"properties is {type(props).__name__}")
            return
        self.properties(props, at, depth)

    def properties(self, p: dict[str, Any], at: str, depth: int) -> None:
        keys = ("object_type", "type") if self.v03 else ("objectType", "object_type", "type")
        key = next((k for k in keys if k in p), None)
        if key is None and self.v03 and "objectType" in p:
            self.fail("object-type", at, "QuPath 0.3 ignores 'objectType'",
                      "write it as 'object_type' (or use --qupath-version 0.4)")
        elif key is not None and (not isinstance(p[key], str)
                                  or p[key] not in (_TYPES_03 if self.v03 else _TYPES_04)):
            self.fail("object-type", at, f"unknown object type {str(p[key])[:30]!r}")
        if "classification" in p:
            self.classification(p["classification"], at)
        if "color" in p:
            self.color_array(p["color"], at, (3,), "object-color")
        if "name" in p and not isinstance(p["name"], str):
            self.fail("name", at, f"name is {type(p['name']).__name__}")
        if "isLocked" in p and not isinstance(p["isLocked"], bool):
            self.fail("isLocked", at, f"isLocked is {type(p['isLocked']).__name__}")
        if "measurements" in p:
            self.measurements(p["measurements"], at)
        if "metadata" in p and not (isinstance(p["metadata"], dict) and all(
                isinstance(v, str) for v in p["metadata"].values())):
            self.fail("metadata", at, "metadata is not an object of strings")
        for kids_key in ("childObjects", "children"):
            if kids_key not in p:
                continue
            kids = p[kids_key]
            if self.v03:
                self.fail("children", at, "QuPath 0.3 drops child objects")
            elif not isinstance(kids, list) or depth > 64:
                self.fail("children", at, f"{kids_key} is not an array of features")
            else:
                for j, k in enumerate(kids):
                    self.feature(k, f"{at} child {j}", depth + 1)

    def top(self, data: Any) -> None:
        if isinstance(data, list):
            for i, f in enumerate(data):
                self.feature(f, f"{self.where}: feature {i}")
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "FeatureCollection":
            feats = data.get("features")
            if not isinstance(feats, list):
                self.fail("top-level", self.where, "FeatureCollection without a features array")
                return
            for i, f in enumerate(feats):
                self.feature(f, f"{self.where}: feature {i}")
        elif kind == "Feature":
            self.feature(data, f"{self.where}: feature 0")
        elif kind in _GEOMETRY_TYPES:
            self.geometry(data, self.where)
        else:
            self.fail("top-level", self.where, f"top-level type {str(kind)[:30]!r} is skipped")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name} is not JSON")


def _load_strict(data: Any) -> tuple[Any, str]:
    if not isinstance(data, (str, bytes, os.PathLike)):
        try:
            # round-trip catches NaN floats and non-JSON types in an in-memory object
            json.dumps(data, allow_nan=False)
        except (ValueError, TypeError) as err:
            raise InvalidGeoJSONError(f"<GeoJSON object>: breaks QuPath rule 'json' ({err}); "
                                      f"fix: {_FIX['json']}") from err
        return data, "<GeoJSON object>"
    if isinstance(data, str) and data.lstrip()[:1] in ("{", "["):
        text, where = data, "<GeoJSON text>"
    else:
        path = Path(os.fspath(data))
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidGeoJSONError(f"{path}: cannot read ({err}); check the path") from err
    try:
        return json.loads(text, parse_constant=_reject_constant), where
    except (ValueError, RecursionError) as err:
        msg = str(err).splitlines()[0][:120]
        raise InvalidGeoJSONError(f"{where}: breaks QuPath rule 'json' ({msg}); "
                                  f"fix: {_FIX['json']}") from err


def validate_qupath_geojson(data: Any, *, qupath_version: str | None = None) -> None:
    """Raise :class:`InvalidGeoJSONError` unless QuPath would read ``data`` exactly as meant.

    ``data``: a path, JSON text, or parsed JSON. ``qupath_version``: ``"0.3"`` for QuPath 0.3's
    reader, anything else (or None) for QuPath 0.4–0.7. The message names the file, the feature,
    the rule (see the module docstring for each rule's source) and the fix; when several features
    break rules, the first is shown with a count of the others.
    """
    obj, where = _load_strict(data)
    checker = _Checker(where, "0.3" if str(qupath_version) in ("0.2", "0.3") else None)
    try:
        checker.top(obj)
    except RecursionError as err:
        raise InvalidGeoJSONError(f"{where}: breaks QuPath rule 'json' (nested too deeply); "
                                  f"fix: {_FIX['json']}") from err
    if checker.problems:
        more = len(checker.problems) - 1
        extra = f" (+{more} more problem{'s' if more > 1 else ''})" if more else ""
        raise InvalidGeoJSONError(checker.problems[0] + extra)
