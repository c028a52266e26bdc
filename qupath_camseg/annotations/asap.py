"""ASAP XML (Camelyon16/17 annotations) ↔ :class:`~qupath_camseg.annotations.geojson.QPObject`.

Reading (parsed only with ``defusedxml``: DTDs, entities and external references are refused, so
"billion laughs" and XXE files fail with :class:`InvalidXMLError`):

* vertices are sorted by their ``Order`` attribute; coordinates are level-0 pixels;
* groups ``Tumor``, ``_0``, ``_1`` (Camelyon16) and ``metastases`` (Camelyon17) are tumour:
  classification ``"Tumor"``; the original group name is kept in ``metadata["asap_group"]``;
* group ``_2`` (Camelyon16: normal tissue inside a tumour outline) is subtracted as holes from
  every tumour polygon it overlaps; a ``_2`` outline that overlaps no tumour is kept as an
  object of class ``"_2"`` (reported);
* ``Polygon`` → polygon; ``Rectangle`` → polygon through its corners; ``Spline`` → the polygon
  through its control points (ASAP draws a Catmull–Rom curve through the same points, so the
  polygon differs from what ASAP shows by at most the curve's bulge between vertices);
  ``Dot`` → point, ``PointSet`` → multipoint (kept and reported; they have no area);
* any other group keeps its name as the class; ``PartOfGroup="None"`` means unclassified;
* self-intersecting polygons are repaired (``shapely.make_valid``), zero-area ones dropped; both
  reported.

Writing produces ASAP XML with ``AnnotationGroups``: tumour objects go to their original group
(``metadata["asap_group"]``) or ``Tumor``, and their holes become ``_2`` annotations, so
:func:`read_asap_xml` restores the same geometry.
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import shapely
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedET
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg._io import atomic_write_bytes
from qupath_camseg.annotations.objects import (
    QPObject,
    default_class_color,
    iter_objects,
    pass_on_notes,
    polygonal_part,
)
from qupath_camseg.errors import InvalidXMLError

__all__ = ["read_asap_xml", "write_asap_xml", "POSITIVE_GROUPS", "EXCLUSION_GROUPS"]

log = logging.getLogger(__name__)

POSITIVE_GROUPS = frozenset({"tumor", "tumour", "_0", "_1", "metastases"})
EXCLUSION_GROUPS = frozenset({"_2"})
TUMOR_CLASS = "Tumor"
_MAX_ABS_COORD = 1e9


def _float(text: str | None, where: str) -> float:
    if text is None:
        raise InvalidXMLError(f"{where}: Coordinate without X or Y; fix or remove it in ASAP")
    t = text.strip()
    if "," in t and "." not in t:  # decimal comma written by some locales
        t = t.replace(",", ".")
    try:
        v = float(t)
    except ValueError as err:
        raise InvalidXMLError(f"{where}: coordinate {text[:30]!r} is not a number; fix or "
                              "remove this annotation in ASAP") from err
    if not math.isfinite(v) or abs(v) > _MAX_ABS_COORD:
        raise InvalidXMLError(f"{where}: coordinate {text[:30]!r} is not a finite level-0 "
                              "pixel position; fix or remove this annotation in ASAP")
    return v


def _vertices(ann: ET.Element, where: str) -> list[tuple[float, float]]:
    coords = []
    for k, c in enumerate(ann.iter("Coordinate")):
        order_text = c.get("Order")
        try:
            order = float(order_text) if order_text is not None else float(k)
        except ValueError as err:
            raise InvalidXMLError(f"{where}: Order {order_text[:20]!r} is not a number; fix or remove this "
                                  "annotation in ASAP") from err
        coords.append((order, k, _float(c.get("X"), where), _float(c.get("Y"), where)))
    coords.sort()
    return [(x, y) for _, _, x, y in coords]


def _hex_color(text: str | None) -> tuple[int, int, int] | None:
    t = (text or "").strip().lstrip("#")
    if len(t) != 6:
        return None
    try:
        v = int(t, 16)
    except ValueError:
        return None
    return ((v >> 16) & 255, (v >> 8) & 255, v & 255)


def _parse(path: Path) -> ET.Element:
    try:
        tree = DefusedET.parse(str(path), forbid_dtd=True, forbid_entities=True,
                               forbid_external=True)
    except FileNotFoundError as err:
        raise InvalidXMLError(f"{path}: file not found; check the path") from err
    except DefusedXmlException as err:
        raise InvalidXMLError(f"{path}: refused unsafe XML ({type(err).__name__}: DTDs, entities "
                              "and external references are not allowed); export the "
                              "annotations from ASAP again") from err
    except ET.ParseError as err:
        raise InvalidXMLError(f"{path}: malformed XML ({err}); export the annotations from ASAP "
                              "again or fix the file") from err
    except (OSError, ValueError, RecursionError) as err:
        raise InvalidXMLError(f"{path}: cannot read XML ({err}); export the annotations from ASAP again") from err
    root = tree.getroot()
    if root.tag != "ASAP_Annotations":
        raise InvalidXMLError(f"{path}: root element is <{root.tag[:40]}>, not "
                              "<ASAP_Annotations>; this is not an ASAP annotation file - convert it to ASAP XML "
                              "or QuPath GeoJSON first")
    return root


def read_asap_xml(path: str | os.PathLike[str], *, report: list[str] | None = None) -> list[QPObject]:
    """Read an ASAP XML file into annotations (level-0 px). See the module docstring for rules.

    Events worth a look (repairs, dropped shapes, points, unknown types) are appended to
    ``report`` and logged. Raises :class:`InvalidXMLError` naming the file for malformed,
    unsafe or non-ASAP XML and for NaN / non-numeric coordinates.
    """
    path = Path(path)
    root = _parse(path)
    notes: list[str] = []
    group_colors = {g.get("Name", ""): _hex_color(g.get("Color")) for g in root.iter("Group")}
    objects: list[QPObject] = []
    exclusions: list[tuple[BaseGeometry, str]] = []
    for i, ann in enumerate(root.iter("Annotation")):
        name = ann.get("Name") or f"Annotation {i}"
        group = (ann.get("PartOfGroup") or "None").strip()
        geom = _geometry(ann, f"{path}: annotation {i} ({name[:40]})", notes)
        if geom is None:
            continue
        if group.lower() in EXCLUSION_GROUPS and geom.area > 0:
            exclusions.append((geom, group))
            continue
        cls, color = _class_and_color(group, ann.get("Color"), group_colors)
        objects.append(QPObject(geometry=geom, classification=cls, color=color, name=name,
                                metadata={"asap_group": group}))
    _subtract_exclusions(objects, exclusions, path, notes)
    objects = _drop_emptied(objects, path, notes)
    pass_on_notes(notes, report, log)
    return objects


def _geometry(ann: ET.Element, where: str, notes: list[str]) -> BaseGeometry | None:
    """The annotation's shape (level-0 px) by its ``Type``; None (noted) when there is none."""
    kind = (ann.get("Type") or "Polygon").strip()
    pts = _vertices(ann, where)
    geom: BaseGeometry | None
    if kind == "Dot":
        geom = Point(pts[0]) if pts else None
        notes.append(f"{where}: Dot read as a point (no area)")
    elif kind == "PointSet":
        geom = MultiPoint(pts) if pts else None
        notes.append(f"{where}: PointSet read as points (no area)")
    else:
        return _polygon(pts, kind, where, notes)
    if geom is None:
        notes.append(f"{where}: no coordinates; dropped")
    return geom


def _polygon(pts: list[tuple[float, float]], kind: str, where: str, notes: list[str]) -> BaseGeometry | None:
    """The polygon through ``pts`` (a two-point ``Rectangle``: its corners), repaired when
    self-intersecting; None when it has fewer than 3 distinct vertices or no area (noted)."""
    if kind not in ("Polygon", "Rectangle", "Spline"):
        notes.append(f"{where}: unknown Type {kind[:20]!r} read as a polygon")
    if kind == "Rectangle" and len(pts) == 2:
        (x0, y0), (x1, y1) = pts
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if len(set(pts)) < 3:
        notes.append(f"{where}: fewer than 3 distinct vertices; dropped")
        return None
    raw = Polygon(pts)
    geom = polygonal_part(raw)
    if geom is None:
        notes.append(f"{where}: zero-area polygon dropped")
        return None
    if not raw.is_valid:
        notes.append(f"{where}: invalid polygon ({shapely.is_valid_reason(raw)}) "
                     "repaired with make_valid")
    return geom


def _class_and_color(group: str, ann_color: str | None,
                     group_colors: dict[str, tuple[int, int, int] | None]) -> tuple[str | None, tuple[int, int, int] | None]:
    """Class and colour of an annotation of ``group``: tumour groups → ``Tumor``; ``None`` →
    unclassified; any other group keeps its name (colour of the group, else of the annotation)."""
    gkey = group.lower()
    if gkey in POSITIVE_GROUPS:
        return TUMOR_CLASS, default_class_color(TUMOR_CLASS)
    if gkey in ("none", ""):
        return None, None
    return group, group_colors.get(group) or _hex_color(ann_color) or default_class_color(group)


def _subtract_exclusions(objects: list[QPObject], exclusions: list[tuple[BaseGeometry, str]], path: Path,
                         notes: list[str]) -> None:
    """Cut each ``_2`` outline out of the tumour polygons it overlaps (in place); one that overlaps
    no tumour is appended as an object of its own group's class (noted)."""
    for excl, group in exclusions:
        hit = False
        for obj in objects:
            if obj.classification == TUMOR_CLASS and obj.is_area and obj.geometry.intersects(excl):
                cut = polygonal_part(obj.geometry.difference(excl))
                if cut is not None and cut.area < obj.geometry.area:
                    obj.geometry = cut
                    hit = True
        if not hit:
            notes.append(f"{path}: a '{group}' (exclusion) outline overlaps no tumour; kept as "
                         f"class '{group}'")
            objects.append(QPObject(geometry=excl, classification=group,
                                    color=default_class_color(group), name=f"{group} outline",
                                    metadata={"asap_group": group}))


def _drop_emptied(objects: list[QPObject], path: Path, notes: list[str]) -> list[QPObject]:
    """``objects`` without the polygons the exclusions emptied (noted)."""
    kept = [o for o in objects if not (isinstance(o.geometry, (Polygon, MultiPolygon)) and o.geometry.is_empty)]
    if len(kept) < len(objects):
        notes.append(f"{path}: {len(objects) - len(kept)} tumour outline(s) fully covered by '_2' "
                     "exclusions dropped")
    return kept


def _fmt(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _add(parent: ET.Element, name: str, kind: str, group: str, color: str,
         pts: Sequence[tuple[float, float]]) -> None:
    ann = ET.SubElement(parent, "Annotation", Name=name, Type=kind, PartOfGroup=group, Color=color)
    coords = ET.SubElement(ann, "Coordinates")
    for k, (x, y) in enumerate(pts):
        ET.SubElement(coords, "Coordinate", Order=str(k), X=_fmt(x), Y=_fmt(y))


def _hex(rgb: tuple[int, int, int] | None, fallback: str = "#F4FA58") -> str:
    if rgb is None:
        return fallback
    return "#{:02X}{:02X}{:02X}".format(*(int(c) & 255 for c in rgb))


def write_asap_xml(path: str | os.PathLike[str], objs: Sequence[QPObject], *,
                   report: list[str] | None = None) -> Path:
    """Write ``objs`` (children included) as ASAP XML to ``path`` atomically; return the path.

    Polygons → ``Type="Polygon"`` (one annotation per polygon of a MultiPolygon); holes of tumour
    polygons → ``_2`` annotations; holes of other classes cannot be expressed in ASAP XML and are
    dropped (reported); points → ``Dot``/``PointSet``; lines are skipped (reported).
    """
    notes: list[str] = []
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}  # group name -> colour, in order of first use
    for obj in iter_objects(objs):
        _write_object(anns, obj, groups, path, notes)
    ag = ET.SubElement(root, "AnnotationGroups")
    for gname, gcolor in groups.items():
        g = ET.SubElement(ag, "Group", Name=gname, PartOfGroup="None", Color=gcolor)
        ET.SubElement(g, "Attributes")
    ET.indent(root, space="\t")
    data = ('<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n").encode()
    atomic_write_bytes(path, data)
    pass_on_notes(notes, report, log)
    return Path(path)


def _asap_group(obj: QPObject) -> tuple[str, bool]:
    """``(group, is tumour)``: tumour goes to its original tumour group (``metadata["asap_group"]``)
    or ``Tumor`` (a tumour class of another name is its own group); others to their class."""
    cls = obj.classification
    is_tumor = cls == TUMOR_CLASS or (cls or "").lower() in POSITIVE_GROUPS
    group = obj.metadata.get("asap_group") if obj.metadata else None
    if is_tumor and cls != TUMOR_CLASS:
        group = cls  # e.g. a class renamed to "metastases"
    elif is_tumor:
        group = group if group and group.lower() in POSITIVE_GROUPS else TUMOR_CLASS
    else:
        group = cls or "None"
    return group, is_tumor


def _write_object(anns: ET.Element, obj: QPObject, groups: dict[str, str], path: str | os.PathLike[str],
                  notes: list[str]) -> None:
    """Append ``obj`` to ``<Annotations>`` (one ``Annotation`` per polygon, tumour holes as ``_2``)
    and its group to ``groups``; shapes without area are skipped (noted)."""
    group, is_tumor = _asap_group(obj)
    cls = obj.classification
    color = _hex(obj.color if cls else None)
    if group != "None":
        groups.setdefault(group, _hex(obj.color or default_class_color(cls or group)))
    label = obj.name or f"Annotation {len(anns)}"  # numbered by the annotations written so far
    geom = obj.geometry
    if isinstance(geom, Point):
        _add(anns, label, "Dot", group, color, [(geom.x, geom.y)])
        return
    if isinstance(geom, MultiPoint):
        _add(anns, label, "PointSet", group, color, [(p.x, p.y) for p in geom.geoms])
        return
    poly = polygonal_part(geom)
    if poly is None:
        notes.append(f"{path}: object {label[:40]!r} ({geom.geom_type}) has no area; skipped")
        return
    parts = list(poly.geoms) if isinstance(poly, MultiPolygon) else [poly]
    for k, part in enumerate(parts):
        name = label if len(parts) == 1 else f"{label} part {k}"
        _add(anns, name, "Polygon", group, color, list(part.exterior.coords)[:-1])
        for h, ring in enumerate(part.interiors):
            if is_tumor:
                _add(anns, f"{name} hole {h}", "Polygon", "_2", "#64FE2E", list(ring.coords)[:-1])
                groups.setdefault("_2", "#64FE2E")
            else:
                notes.append(f"{path}: hole {h} of {name[:40]!r} (class {cls!r}) dropped; "
                             "ASAP XML holes exist only as '_2' inside tumour")
