"""QuPath-dialect GeoJSON: reading what QuPath 0.2-0.6 write, writing 0.4+/0.3, the validator."""

from __future__ import annotations

import copy
import json
import math
import uuid

import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    OUR_NAME_PREFIX,
    QPObject,
    is_ours,
    iter_objects,
    objects_to_geojson,
    read_geojson,
    validate_qupath_geojson,
    write_geojson,
)
from qupath_camseg.errors import CamsegError, InvalidGeoJSONError

SQUARE = [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]


def feat(props=None, geometry=None, **extra):
    f = {"type": "Feature", "geometry": geometry or {"type": "Polygon", "coordinates": SQUARE},
         "properties": props if props is not None else {"objectType": "annotation"}}
    f.update(extra)
    return f


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


# ------------------------------------------------------------------ files written by real QuPath
def test_reads_qupath02_file(shared_data):
    objs = read_geojson(shared_data / "qupath/geojson/qupath02_histoqc_annotations.json")
    assert [o.object_type for o in objs] == ["annotation", "annotation"]
    assert [o.classification for o in objs] == ["Tumor", "Invborder"]
    # colorRGB -3670016 == 0xFFC80000 (signed ARGB) and -16711936 == 0xFF00FF00
    assert objs[0].color == (200, 0, 0) and objs[1].color == (0, 255, 0)
    assert all(isinstance(o.geometry, MultiPolygon) for o in objs)
    assert any(len(p.interiors) for o in objs for p in o.geometry.geoms)  # the file has a hole
    validate_qupath_geojson(shared_data / "qupath/geojson/qupath02_histoqc_annotations.json")


def test_reads_qupath04_cells(shared_data):
    objs = read_geojson(shared_data / "qupath/geojson/qupath04_luna_cells_edited.geojson")
    assert {o.object_type for o in objs} == {"cell"}
    assert all(o.nucleus_geometry is not None and o.nucleus_geometry.area > 0 for o in objs)
    assert objs[0].classification == "Other" and objs[0].color == (0, 128, 128)
    assert objs[0].id == "5868af7c-9aaf-4646-b618-e0a3cf74b94f"
    assert "Nucleus: Area µm^2" in objs[0].measurements


def test_reads_qupath05_compact(shared_data):
    objs = read_geojson(shared_data / "qupath/geojson/qupath05_dlup_compact.geojson")
    assert [o.name for o in objs] == ["UT", "I", "I"]
    assert all(o.classification is None and o.object_color == (255, 0, 0) for o in objs)


@pytest.mark.parametrize("name", ["qupath02_histoqc_annotations.json",
                                  "qupath04_luna_cells_edited.geojson",
                                  "qupath05_dlup_compact.geojson"])
@pytest.mark.parametrize("version", ["0.4", "0.3"])
def test_real_files_round_trip(shared_data, tmp_path, name, version):
    objs = read_geojson(shared_data / "qupath/geojson" / name)
    out = write_geojson(tmp_path / "out.geojson", objs, qupath_version=version)
    validate_qupath_geojson(out, qupath_version=version)
    back = read_geojson(out)
    assert len(back) == len(objs)
    for a, b in zip(objs, back):
        assert iou(a.geometry, b.geometry) > 0.999
        assert (a.classification, a.color, a.object_type, a.name) == (
            b.classification, b.color, b.object_type, b.name)
        assert b.measurements.keys() == a.measurements.keys()


# ------------------------------------------------------------------------------ reading variants
def test_top_level_forms_all_read():
    f = feat({"objectType": "detection", "classification": {"name": "Tumor", "color": [1, 2, 3]}})
    for data in ({"type": "FeatureCollection", "features": [f]}, [f], f):
        (o,) = read_geojson(data)
        assert (o.object_type, o.classification, o.color) == ("detection", "Tumor", (1, 2, 3))
    (g,) = read_geojson({"type": "Polygon", "coordinates": SQUARE})
    assert g.object_type == "annotation" and g.geometry.area == 100
    (t,) = read_geojson(json.dumps([f]))  # JSON text


@pytest.mark.parametrize("props,fid,expected", [
    ({"objectType": "tile"}, None, "tile"),
    ({"object_type": "detection"}, None, "detection"),  # 0.3 spelling
    ({"type": "cell"}, None, "cell"),  # alias
    ({"object_type": "tma_core"}, None, "tmaCore"),
    ({}, "PathDetectionObject", "detection"),  # 0.2 legacy id
    ({}, None, "annotation"),  # QuPath's default
    ({"objectType": "whatever"}, None, "annotation"),  # unknown: annotation, like QuPath
])
def test_object_type_spellings(props, fid, expected):
    f = feat(props)
    if fid:
        f["id"] = fid
    (o,) = read_geojson([f])
    assert o.object_type == expected
    uuid.UUID(o.id)  # legacy ids never become the object id


@pytest.mark.parametrize("cls,name,color", [
    ("Tumor", "Tumor", None),
    ({"name": "Stroma", "color": [150, 200, 150]}, "Stroma", (150, 200, 150)),
    ({"names": ["Tumor", "Positive"], "color": [1, 2, 3]}, "Tumor: Positive", (1, 2, 3)),
    ({"name": "Tumor", "colorRGB": -3670016}, "Tumor", (200, 0, 0)),
    ({"parentClass": {"name": "Tumor", "colorRGB": -3670016}, "name": "Positive",
      "colorRGB": -65536}, "Tumor: Positive", (255, 0, 0)),
    (None, None, None),
])
def test_classification_forms(cls, name, color):
    (o,) = read_geojson([feat({"classification": cls})])
    assert (o.classification, o.color) == (name, color)


def test_measurement_forms_and_nonfinite():
    obj_form = feat({"measurements": {"a": 1.5, "b": "NaN", "c": "-Infinity"}})
    list_form = feat({"measurements": [{"name": "a", "value": 1.5}, {"name": "b", "value": "NaN"}]})
    (o1,), (o2,) = read_geojson([obj_form]), read_geojson([list_form])
    assert o1.measurements["a"] == 1.5 and math.isnan(o1.measurements["b"])
    assert o1.measurements["c"] == -math.inf
    assert o2.measurements["a"] == 1.5 and math.isnan(o2.measurements["b"])


def test_children_locked_metadata_name():
    child = feat({"objectType": "detection", "name": "kid"})
    for key in ("childObjects", "children"):
        parent = feat({"isLocked": True, "name": "p", "metadata": {"k": "v"}, key: [child]})
        (o,) = read_geojson([parent])
        assert o.locked and o.name == "p" and o.metadata == {"k": "v"}
        assert [c.name for c in o.children] == ["kid"]
        assert [x.name for x in iter_objects([o])] == ["p", "kid"]


# --------------------------------------------------------------------------------------- writing
def _obj(**kw):
    kw.setdefault("geometry", box(0, 0, 10, 10))
    return QPObject(**kw)


def test_writes_qupath04_form():
    o = _obj(classification="Tumor", measurements={"p": 0.5, "n": math.nan, "i": math.inf},
             metadata=dict(CAMSEG_METADATA), name="ours", locked=False)
    (f,) = objects_to_geojson([o])["features"]
    uuid.UUID(f["id"])
    p = f["properties"]
    assert p["objectType"] == "annotation" and p["name"] == "ours"
    assert p["classification"] == {"name": "Tumor", "color": [200, 0, 0]}  # QuPath's Tumor colour
    assert p["measurements"] == {"p": 0.5, "n": "NaN", "i": "Infinity"}  # qupath#1296 strings
    assert "isLocked" not in p  # QuPath writes it only when locked
    assert p["metadata"] == CAMSEG_METADATA
    assert objects_to_geojson([_obj(locked=True)])["features"][0]["properties"]["isLocked"] is True
    derived = objects_to_geojson([_obj(classification="Tumor: Positive", color=(1, 2, 3))])
    assert derived["features"][0]["properties"]["classification"] == {
        "names": ["Tumor", "Positive"], "color": [1, 2, 3]}


def test_writes_qupath03_form():
    o = _obj(object_type="tmaCore", classification="Tumor", color=(200, 0, 0),
             measurements={"p": 0.5, "n": math.nan})
    (f,) = objects_to_geojson([o], qupath_version="0.3")["features"]
    p = f["properties"]
    assert p["object_type"] == "tma_core" and "objectType" not in p
    assert p["classification"] == {"name": "Tumor", "colorRGB": -3670016}
    assert p["measurements"] == [{"name": "p", "value": 0.5}, {"name": "n", "value": "NaN"}]
    assert p["isLocked"] is False


def test_cell_nucleus_and_children_written_and_read_back(tmp_path):
    cell = _obj(object_type="cell", nucleus_geometry=box(2, 2, 4, 4), classification="Other")
    parent = _obj(geometry=box(0, 0, 100, 100), classification="Tumor", children=[cell])
    path = write_geojson(tmp_path / "x.geojson", [parent])
    (back,) = read_geojson(path)
    (kid,) = back.children
    assert kid.object_type == "cell" and kid.nucleus_geometry.equals(box(2, 2, 4, 4))
    with pytest.raises(ValueError, match="child objects"):
        objects_to_geojson([parent], qupath_version="0.3")


def test_is_ours_survives_round_trip(tmp_path):
    mine = _obj(metadata=dict(CAMSEG_METADATA), name="qcamseg tumour")
    theirs = _obj(metadata={"created_by": "someone"})
    path = write_geojson(tmp_path / "x.geojson", [mine, theirs, _obj()])
    assert [is_ours(o) for o in read_geojson(path)] == [True, False, False]


def test_is_ours_falls_back_to_the_name_without_metadata(tmp_path):
    """QuPath 0.4 keeps metadata only on annotations (and paquo writes none), so a re-saved
    ``camseg tile`` detection is still ours by its name; metadata, when present, decides."""
    tile = _obj(object_type="detection", name="camseg tile")
    other_tool = _obj(name="camseg Tumor", metadata={"created_by": "someone"})
    user = _obj(name="Tumor 1")
    path = write_geojson(tmp_path / "x.geojson", [tile, other_tool, user])
    assert [is_ours(o) for o in read_geojson(path)] == [True, False, False]
    assert is_ours(_obj(name=f"{OUR_NAME_PREFIX} Tumor"))


def test_geometry_round_trip_iou_and_classes(tmp_path):
    shapes = [Point(500, 400).buffer(300.123), box(0, 0, 50.5, 70.25).difference(box(10, 10, 20, 20)),
              MultiPolygon([box(0, 0, 5, 5), box(10, 10, 17.77, 19.01)])]
    objs = [_obj(geometry=g, classification=c) for g, c in zip(shapes, ["Tumor", "Stroma", "Ignore*"])]
    back = read_geojson(write_geojson(tmp_path / "r.geojson", objs))
    for a, b in zip(objs, back):
        assert iou(a.geometry, b.geometry) > 0.999
        assert a.classification == b.classification
    assert len(back[1].geometry.interiors) == 1


def test_failed_write_leaves_existing_file(tmp_path):
    path = tmp_path / "x.geojson"
    path.write_text("old")
    bad = _obj(geometry=Polygon([(0, 0), (math.nan, 0), (1, 1)]))
    with pytest.raises(InvalidGeoJSONError):
        write_geojson(path, [bad])
    assert path.read_text() == "old"


# --------------------------------------------------------------------------------------- hygiene
def test_nan_coordinates_name_file_and_feature(tmp_path):
    path = tmp_path / "nan.geojson"
    bad = [[[0, 0], [10, 0], [float("nan"), 10], [0, 0]]]
    path.write_text(json.dumps([feat(), feat(geometry={"type": "Polygon", "coordinates": bad})]))
    with pytest.raises(InvalidGeoJSONError, match=r"nan\.geojson: feature 1.*NaN"):
        read_geojson(path)


@pytest.mark.parametrize("geometry,match", [
    ({"type": "Polygon", "coordinates": [[["0", 0], [1, 0], [1, 1], ["0", 0]]]}, "not a number"),
    ({"type": "Polygon", "coordinates": [[[True, 0], [1, 0], [1, 1], [0, 0]]]}, "not a number"),
    ({"type": "Polygon", "coordinates": [[[1e300, 0], [1, 0], [1, 1], [0, 0]]]}, "1e9"),
    ({"type": "Polygon", "coordinates": "nope"}, "array"),
    ({"type": "Circle", "coordinates": [0, 0]}, "unknown geometry type"),
    ("Polygon", "geometry must be an object"),
])
def test_wrong_geometry_types_raise(geometry, match):
    with pytest.raises(InvalidGeoJSONError, match=match):
        read_geojson([feat(geometry=geometry)])


@pytest.mark.parametrize("text,match", [("{not json", "not valid JSON"), ("[" * 100000, "JSON|deep"),
                                        ("42", "expected a GeoJSON")])
def test_not_json_raises(text, match):
    with pytest.raises(InvalidGeoJSONError, match=match):
        read_geojson(text if text != "42" else 42)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CamsegError, match="not found"):
        read_geojson(tmp_path / "missing.geojson")


def test_self_intersecting_repaired_zero_area_dropped_points_kept():
    bowtie = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
    flat = [[[0, 0], [10, 0], [20, 0], [0, 0]]]
    report: list[str] = []
    objs = read_geojson([
        feat(geometry={"type": "Polygon", "coordinates": bowtie}),
        feat(geometry={"type": "Polygon", "coordinates": flat}),
        feat(geometry={"type": "Point", "coordinates": [5, 5]}),
        feat(geometry={"type": "LineString", "coordinates": [[0, 0], [5, 5]]}),
        feat(geometry={"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4]]]}),
    ], report=report)
    assert len(objs) == 4  # the zero-area one is gone
    assert objs[0].geometry.is_valid and objs[0].geometry.area == pytest.approx(50)
    assert isinstance(objs[1].geometry, Point) and not objs[1].is_area
    assert isinstance(objs[2].geometry, LineString)
    assert objs[3].geometry.area == 16  # unclosed ring closed
    text = " | ".join(report)
    for words in ("repaired", "dropped", "Point kept", "not closed"):
        assert words in text


def test_huge_polygon_reads_and_writes(tmp_path):
    big = Point(50_000, 50_000).buffer(40_000, quad_segs=5000)  # 20k vertices, slide-sized
    back = read_geojson(write_geojson(tmp_path / "big.geojson", [_obj(geometry=big)]))
    assert iou(back[0].geometry, big) > 0.999


# ------------------------------------------------------------------------------------- validator
VALID = {"type": "FeatureCollection", "features": [feat({
    "objectType": "annotation", "name": "n", "classification": {"name": "Tumor", "color": [200, 0, 0]},
    "isLocked": True, "measurements": {"a": 1, "b": "NaN"}, "metadata": {"k": "v"},
    "childObjects": [feat({"objectType": "detection"})]}, id=str(uuid.uuid4()))]}


def _break(path, value):
    data = copy.deepcopy(VALID)
    target = data
    for k in path[:-1]:
        target = target[k]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


F0, P0 = ("features", 0), ("features", 0, "properties")
RING_OPEN = [[[0, 0], [10, 0], [10, 10], [0, 10]]]
RULE_CASES = [
    ("json", "[{\"type\": \"Feature\", \"geometry\": {\"type\": \"Point\", \"coordinates\": [NaN, 1]}}]"),
    ("top-level", {"type": "Topology"}),
    ("top-level", _break(("features",), {"a": 1})),
    ("feature-type", _break((*F0, "type"), "feature")),
    ("feature-id", _break((*F0, "id"), 7)),
    ("feature-id", _break((*F0, "id"), "not-a-uuid")),
    ("geometry", _break((*F0, "geometry"), KeyError)),
    ("geometry", _break((*F0, "geometry"), {"type": "Circle", "coordinates": [0, 0]})),
    ("coordinates", _break((*F0, "geometry"), {"type": "Polygon", "coordinates": 5})),
    ("position", _break((*F0, "geometry"), {"type": "Point", "coordinates": [1, "2"]})),
    ("position", _break((*F0, "geometry"), {"type": "Point", "coordinates": [1, 2, 3, 4]})),
    ("ring", _break((*F0, "geometry"), {"type": "Polygon", "coordinates": RING_OPEN})),
    ("ring", _break((*F0, "geometry"), {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]})),
    ("linestring", _break((*F0, "geometry"), {"type": "LineString", "coordinates": [[0, 0]]})),
    ("properties", _break((*F0, "properties"), ["a"])),
    ("object-type", _break((*P0, "objectType"), "blob")),
    ("classification", _break((*P0, "classification"), {"name": "Tumor"})),  # no color
    ("classification", _break((*P0, "classification"), {"color": [1, 2, 3]})),  # no name
    ("classification", _break((*P0, "classification"), 5)),
    ("class-color", _break((*P0, "classification"), {"name": "T", "color": [1, 2]})),
    ("class-color", _break((*P0, "classification"), {"name": "T", "color": [1, 2, 300]})),
    ("class-color", _break((*P0, "classification"), {"name": "T", "colorRGB": "red"})),
    ("object-color", _break((*P0, "color"), [1, 2, 3, 4])),
    ("name", _break((*P0, "name"), 5)),
    ("isLocked", _break((*P0, "isLocked"), "yes")),
    ("measurements", _break((*P0, "measurements"), {"a": "1.5"})),
    ("measurements", _break((*P0, "measurements"), [{"name": "a"}])),
    ("measurements", _break((*P0, "measurements"), 3)),
    ("metadata", _break((*P0, "metadata"), {"k": 1})),
    ("children", _break((*P0, "childObjects"), {"a": 1})),
]


def test_valid_example_passes():
    validate_qupath_geojson(VALID)
    validate_qupath_geojson(json.dumps(VALID))


@pytest.mark.parametrize("rule,data", RULE_CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(RULE_CASES)])
def test_each_rule_is_enforced_and_named(tmp_path, rule, data):
    path = tmp_path / "bad.geojson"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(InvalidGeoJSONError) as exc:
        validate_qupath_geojson(path)
    msg = str(exc.value)
    assert f"rule '{rule}'" in msg and "bad.geojson" in msg and "fix:" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("props,rule", [
    ({"objectType": "annotation"}, "object-type"),  # 0.3 reads only object_type
    ({"object_type": "annotation", "classification": "Tumor"}, "classification"),
    ({"object_type": "annotation", "classification": {"name": "T", "color": [1, 2, 3]}},
     "classification"),
    ({"object_type": "annotation", "measurements": {"a": 1}}, "measurements"),
    ({"object_type": "annotation", "childObjects": []}, "children"),
    ({"object_type": "tmaCore"}, "object-type"),
])
def test_qupath03_rules(props, rule):
    data = [feat(props)]
    validate_qupath_geojson(data)  # fine for QuPath 0.4+
    with pytest.raises(InvalidGeoJSONError, match=f"rule '{rule}'"):
        validate_qupath_geojson(data, qupath_version="0.3")


def test_many_problems_are_counted():
    data = [feat(geometry={"type": "Circle"}), feat(geometry={"type": "Circle"})]
    with pytest.raises(InvalidGeoJSONError, match=r"feature 0.*\(\+1 more problem\)"):
        validate_qupath_geojson(data)


def test_every_file_we_write_passes(tmp_path):
    objs = [_obj(geometry=g, object_type=t, classification=c, measurements={"m": v})
            for g, t, c, v in [(box(0, 0, 3, 3), "annotation", "Tumor", math.nan),
                               (Point(1, 2), "detection", None, 1.0),
                               (LineString([(0, 0), (3, 4)]), "tile", "Ignore*", -math.inf),
                               (shapely.GeometryCollection([box(0, 0, 1, 1), Point(3, 3)]),
                                "annotation", "Tumor: Positive", 0.0)]]
    for version in ("0.4", "0.3"):
        path = write_geojson(tmp_path / f"w{version}.geojson", objs, qupath_version=version)
        validate_qupath_geojson(path, qupath_version=version)


def test_off_slide_objects_clipped_or_dropped():
    from qupath_camseg.annotations import clip_to_slide

    objs = [_obj(geometry=box(-10, -10, 10, 10), name="corner"),
            _obj(geometry=box(500, 500, 600, 600), name="outside"),
            _obj(geometry=Point(50, 50), name="dot"),
            _obj(geometry=box(0, 0, 100, 100), name="inside",
                 children=[_obj(geometry=box(90, 90, 120, 120), name="kid")])]
    report: list[str] = []
    out = clip_to_slide(objs, (100, 100), report=report)
    assert [o.name for o in out] == ["corner", "dot", "inside"]
    assert out[0].geometry.area == 100 and out[2].children[0].geometry.area == 100
    assert objs[0].geometry.area == 400  # inputs untouched
    assert sum("clipped" in r for r in report) == 2 and sum("dropped" in r for r in report) == 1


def test_geometry_collections_are_never_written():
    mixed = shapely.GeometryCollection([box(0, 0, 2, 2), Point(5, 5), LineString([(0, 0), (1, 1)])])
    pts = shapely.GeometryCollection([Point(1, 1), shapely.MultiPoint([(2, 2), (3, 3)])])
    feats = objects_to_geojson([_obj(geometry=mixed), _obj(geometry=pts)])["features"]
    assert [f["geometry"]["type"] for f in feats] == ["Polygon", "MultiPoint"]
    assert len(feats[1]["geometry"]["coordinates"]) == 3


def test_nested_geometry_collections_keep_their_polygons(tmp_path) -> None:
    """Issue 16 point 10: a polygon inside a GeometryCollection inside another was dropped with a
    false "has no area" note, and the class given as a list of parts was dropped silently."""
    import json

    from qupath_camseg.annotations import read_geojson

    square = {"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]]}
    nested = {"type": "GeometryCollection", "geometries": [{"type": "GeometryCollection", "geometries": [square]}]}
    feats = [{"type": "Feature", "geometry": nested, "properties": {"objectType": "annotation",
                                                                    "classification": {"name": "Tumor"}}},
             {"type": "Feature", "geometry": square, "properties": {"objectType": "annotation",
                                                                    "classification": {"name": ["Tumor", "Positive"]}}}]
    f = tmp_path / "nested.geojson"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    notes: list[str] = []
    objs = read_geojson(f, report=notes)
    assert [o.geometry.area for o in objs] == [10_000, 10_000]
    assert [o.classification for o in objs] == ["Tumor", "Tumor: Positive"]
    assert notes == []
