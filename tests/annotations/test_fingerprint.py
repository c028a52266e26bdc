"""Shape fingerprints: a camseg object survives QuPath's round trips as ours, and one the user
reshaped, moved or reclassified becomes the user's (kept by every rewrite, used for training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    FINGERPRINT_KEY,
    QPObject,
    copy_object,
    fingerprint_matches,
    has_our_marker,
    is_edited,
    is_ours,
    read_geojson,
    shape_fingerprint,
    write_geojson,
)


def _blob(cx: float = 60_000.5, cy: float = 140_000.25, r: float = 300.0) -> Polygon:
    """An irregular outline far from the origin (where 32-bit floats round the most), with a hole."""
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    rad = r * (1 + 0.2 * np.cos(3 * t) + 0.05 * np.sin(7 * t))
    hole = shapely.Point(cx + 50, cy - 30).buffer(40)
    return Polygon(np.column_stack([cx + rad * np.cos(t), cy + rad * np.sin(t)])).difference(hole)


def _prediction(geom: Polygon, cls: str = "Tumor") -> QPObject:
    return QPObject(geom, classification=cls, name=f"camseg {cls}", metadata=dict(CAMSEG_METADATA),
                    measurements={FINGERPRINT_KEY: float(shape_fingerprint(geom, cls))})


def _as_qupath_keeps_it(geom: Polygon) -> Polygon:
    """What QuPath does to an outline it imports: 32-bit float vertices (``PolygonROI``), another
    start vertex and the other orientation (``java.awt`` shapes), written back with 2 decimals."""
    def ring(coords: np.ndarray, shift: int) -> np.ndarray:
        c = np.asarray(coords)[:-1].astype(np.float32).astype(np.float64)
        return np.round(np.roll(c, shift, axis=0)[::-1], 2)

    return Polygon(ring(geom.exterior.coords, 17), [ring(h.coords, 5) for h in geom.interiors])


def test_fingerprint_survives_float32_vertices_reordering_and_geojson(tmp_path: Path) -> None:
    obj = _prediction(_blob())
    back = copy_object(obj, geometry=_as_qupath_keeps_it(obj.geometry))
    assert back.geometry.area != obj.geometry.area  # really rounded
    assert is_ours(back) and not is_edited(back)
    write_geojson(tmp_path / "p.geojson", [back])
    data = json.loads((tmp_path / "p.geojson").read_text(encoding="utf-8"))
    assert data["features"][0]["properties"]["measurements"][FINGERPRINT_KEY] == obj.measurements[FINGERPRINT_KEY]
    (read,) = read_geojson(tmp_path / "p.geojson")
    assert is_ours(read)
    # QuPath 0.4 drops object metadata on import: the name is the marker, the fingerprint still works
    bare = copy_object(read, metadata={})
    assert has_our_marker(bare) and is_ours(bare)


@pytest.mark.parametrize("edit", ["brush stroke", "moved", "reclassified", "vertex dragged", "cut in two"])
def test_an_edited_prediction_is_the_users(edit: str) -> None:
    obj = _prediction(_blob())
    g = obj.geometry
    cx, cy = g.centroid.x, g.centroid.y
    if edit == "brush stroke":  # a 50 px brush dab on the border: +0.35 % area
        changed = copy_object(obj, geometry=g.union(shapely.Point(cx + 360, cy).buffer(25)))
    elif edit == "moved":
        changed = copy_object(obj, geometry=shapely.affinity.translate(g, 3.0, 0.0))
    elif edit == "reclassified":
        changed = copy_object(obj, classification="Normal")
    elif edit == "vertex dragged":
        coords = list(g.exterior.coords)
        coords[0] = coords[-1] = (coords[0][0] + 150, coords[0][1])  # a spike: +0.3 % area
        changed = copy_object(obj, geometry=Polygon(coords, list(g.interiors)))
    else:
        changed = copy_object(obj, geometry=g.difference(shapely.box(cx - 2, cy - 1e4, cx + 2, cy + 1e4)))
    assert has_our_marker(changed) and is_edited(changed) and not is_ours(changed)


def test_objects_without_a_fingerprint_keep_the_old_rule() -> None:
    tile = QPObject(shapely.box(0, 0, 10, 10), object_type="tile", name="camseg tile", metadata=dict(CAMSEG_METADATA))
    user = QPObject(shapely.box(0, 0, 10, 10), classification="Tumor", name="mine")
    assert is_ours(tile) and not is_edited(tile) and not is_ours(user)
    assert shape_fingerprint(shapely.LineString([(0, 0), (1, 1)]), "Tumor") is None
    assert not fingerprint_matches(float("nan"), shapely.box(0, 0, 1, 1), "Tumor")


def test_file_door_rewrite_keeps_edited_predictions(tmp_path: Path) -> None:
    from qupath_camseg.qupath import ImageInfo, create_project

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "s.tif").write_bytes(b"not read")
    with create_project(tmp_path / "p") as p:
        entry = p.add_image(tmp_path / "img" / "s.tif", info=ImageInfo(1000, 800, ((1000, 800),), 0.5, 256))
        kept_as_is = _prediction(shapely.box(10, 10, 200, 200))
        reshaped = _prediction(shapely.box(300, 300, 500, 500))
        reshaped = copy_object(reshaped, geometry=shapely.box(300, 300, 520, 500))
        reclassified = copy_object(_prediction(shapely.box(600, 10, 700, 90)), classification="Normal")
        p.add_annotations(entry, [kept_as_is, reshaped, reclassified])
        new = _prediction(shapely.box(20, 20, 210, 210))
        p.write_objects(entry, [new])
        got = {o.id: o for o in p.read_annotations(entry)}
    assert set(got) == {reshaped.id, reclassified.id, new.id}
    assert got[reclassified.id].classification == "Normal" and not is_ours(got[reclassified.id])


class _PaquoClass:
    """Test double for paquo's ``QuPathPathClass``: ``.id`` is the whole name, ``.name`` its last part."""

    def __init__(self, name: str) -> None:
        self.id, self.name, self.color = name, name.split(": ")[-1], None


class _PaquoObject:
    """Test double for paquo's path-object proxy (no QuPath here): name, class, ROI, measurements."""

    def __init__(self, obj: QPObject) -> None:
        self.name, self.roi, self.locked = obj.name, obj.geometry, False
        self.path_class = _PaquoClass(obj.classification) if obj.classification else None
        self.measurements = dict(obj.measurements)


def test_paquo_door_replaces_only_unedited_predictions() -> None:
    from qupath_camseg.qupath.paquo_project import _replaceable

    pred = _prediction(_blob())
    edited = copy_object(pred, geometry=pred.geometry.buffer(5))
    tile = QPObject(shapely.box(0, 0, 10, 10), object_type="tile", name="camseg tile")
    user = QPObject(shapely.box(0, 0, 10, 10), classification="Tumor", name="mine")
    assert _replaceable(_PaquoObject(pred), "annotation")
    assert _replaceable(_PaquoObject(copy_object(pred, geometry=_as_qupath_keeps_it(pred.geometry))), "annotation")
    assert not _replaceable(_PaquoObject(edited), "annotation")
    assert _replaceable(_PaquoObject(tile), "detection") and not _replaceable(_PaquoObject(user), "annotation")
