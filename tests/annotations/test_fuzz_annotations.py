"""Property-based fuzzing (hypothesis) of the GeoJSON and ASAP XML readers and of polygon ↔ mask.

Readers: whatever the input, the only exception allowed is our own one-line CamsegError.
Masks: rasterize agrees with point-in-polygon at pixel centres, vectorize inverts rasterize
exactly at pixel centres, and polygon → mask → polygon keeps IoU > 0.98.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import Polygon

from qupath_camseg.annotations import (
    objects_to_geojson,
    rasterize,
    read_asap_xml,
    read_geojson,
    validate_qupath_geojson,
    vectorize,
    write_geojson,
)
from qupath_camseg.errors import CamsegError, InvalidGeoJSONError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# ------------------------------------------------------------------------------------ GeoJSON
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=25)
numbers = st.one_of(st.floats(-1e4, 1e4), st.integers(-10**4, 10**4), st.just(math.nan),
                    st.just(math.inf), st.just(1e300), st.text(max_size=3), st.booleans())
positions = st.lists(numbers, min_size=0, max_size=4)
rings = st.lists(positions, max_size=7)
geometries = st.one_of(
    st.builds(lambda t, c: {"type": t, "coordinates": c},
              st.sampled_from(["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                               "MultiPolygon", "GeometryCollection", "Circle"]),
              st.one_of(positions, rings, st.lists(rings, max_size=3),
                        st.lists(st.lists(rings, max_size=2), max_size=2), json_values)),
    json_values)
prop_values = {
    "objectType": st.one_of(st.sampled_from(["annotation", "detection", "cell", "tile", "tmaCore",
                                             "root", "x"]), json_values),
    "object_type": json_values, "name": json_values, "color": json_values, "isLocked": json_values,
    "classification": st.one_of(st.text(max_size=5), st.fixed_dictionaries(
        {}, optional={"name": json_values, "names": json_values, "color": json_values,
                      "colorRGB": json_values, "parentClass": json_values}), json_values),
    "measurements": json_values, "metadata": json_values,
    "childObjects": st.lists(st.fixed_dictionaries({"type": st.just("Feature"),
                                                    "geometry": geometries}), max_size=2),
}
features = st.fixed_dictionaries(
    {"type": st.sampled_from(["Feature", "Feature", "feature"])},
    optional={"id": json_values, "geometry": geometries, "nucleusGeometry": geometries,
              "properties": st.one_of(st.fixed_dictionaries({}, optional=prop_values), json_values)})
documents = st.one_of(
    st.builds(lambda fs: {"type": "FeatureCollection", "features": fs}, st.lists(features, max_size=4)),
    st.lists(features, max_size=4), features, geometries, json_values)


def _survives(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except CamsegError as err:
        assert "\n" not in str(err)
        return None


@FAST
@given(documents)
def test_geojson_reader_never_crashes(doc):
    objs = _survives(read_geojson, doc)
    _survives(validate_qupath_geojson, doc)
    if objs is not None:  # whatever we read, we can write and QuPath's rules accept it
        data = objects_to_geojson(objs)
        validate_qupath_geojson(data)
        assert len(read_geojson(data)) == len(data["features"])


@FAST
@given(documents)
def test_geojson_text_reader_never_crashes(doc):
    text = json.dumps(doc)  # may contain bare NaN / Infinity, as old QuPath wrote
    _survives(read_geojson, text)
    _survives(validate_qupath_geojson, text)


@FAST
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_geojson_reader_on_garbage_text(text):
    with pytest.raises(CamsegError):
        read_geojson("{" + text)


# ---------------------------------------------------------------------------------- ASAP XML
attr_text = st.one_of(st.text(max_size=8), st.sampled_from(["0", "1.5", "-3", "nan", "inf", "1e400",
                                                           "12,5", ""]))
coordinate = st.builds(
    lambda o, x, y: f"<Coordinate Order={quoteattr(o)} X={quoteattr(x)} Y={quoteattr(y)} />",
    st.one_of(st.integers(0, 6).map(str), attr_text),
    st.one_of(st.floats(-1e3, 1e3).map(repr), attr_text),
    st.one_of(st.floats(-1e3, 1e3).map(repr), attr_text))
annotation = st.builds(
    lambda t, g, cs: (f"<Annotation Name=\"a\" Type={quoteattr(t)} PartOfGroup={quoteattr(g)}>"
                      f"<Coordinates>{''.join(cs)}</Coordinates></Annotation>"),
    st.one_of(st.sampled_from(["Polygon", "Rectangle", "Spline", "Dot", "PointSet"]), attr_text),
    st.one_of(st.sampled_from(["Tumor", "_0", "_1", "_2", "metastases", "None"]), attr_text),
    st.lists(coordinate, max_size=7))
asap_docs = st.builds(
    lambda anns, tail: f"<ASAP_Annotations><Annotations>{''.join(anns)}</Annotations>{tail}"
                       "</ASAP_Annotations>",
    st.lists(annotation, max_size=4),
    st.sampled_from(["", "<AnnotationGroups><Group Name=\"Tumor\" Color=\"#FF0000\"/>"
                         "</AnnotationGroups>"]))


@FAST
@given(st.one_of(asap_docs, st.text(max_size=80), asap_docs.map(lambda s: s[: len(s) // 2])))
def test_asap_reader_never_crashes(scratch, text):
    path = scratch / "fuzz.xml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    objs = _survives(read_asap_xml, path)
    if objs is not None:
        validate_qupath_geojson(objects_to_geojson(objs))


# --------------------------------------------------------------------------- polygon ↔ mask
def star(cx, cy, radii, phase):
    n = len(radii)
    ang = phase + np.arange(n) * 2 * np.pi / n
    return Polygon(np.column_stack((cx + np.asarray(radii) * np.cos(ang),
                                    cy + np.asarray(radii) * np.sin(ang))))


stars = st.builds(star, st.floats(90, 110), st.floats(90, 110),
                  st.lists(st.floats(60, 85), min_size=3, max_size=24), st.floats(0, 6.3))


@FAST
@given(stars, st.sampled_from([1.0, 2.0, 0.5]), st.floats(-50, 50), st.floats(-50, 50))
def test_rasterize_matches_pixel_centre_oracle(poly, downsample, ox, oy):
    box_px = (ox, oy, 200 * downsample, 180 * downsample)
    size = (200, 180)
    poly = shapely.affinity.scale(poly, downsample, downsample, origin=(0, 0))
    m = rasterize([(poly, 1)], box_px, size).astype(bool)
    xs = ox + (np.arange(size[0]) + 0.5) * downsample
    ys = oy + (np.arange(size[1]) + 0.5) * downsample
    gx, gy = np.meshgrid(xs, ys)
    oracle = shapely.contains_xy(poly, gx, gy)
    on_edge = shapely.distance(poly.boundary, shapely.points(gx, gy)) < 1e-7
    assert np.array_equal(m[~on_edge], oracle[~on_edge])


@FAST
@given(stars, st.sampled_from([1.0, 4.0]))
def test_polygon_mask_polygon_iou(poly, downsample):
    poly = shapely.affinity.scale(poly, downsample, downsample, origin=(0, 0))
    box_px = (0.0, 0.0, 220 * downsample, 220 * downsample)
    m = rasterize([(poly, 1)], box_px, (220, 220))
    back = shapely.union_all(vectorize(m, origin_px=(0, 0), downsample=downsample))
    assert back.intersection(poly).area / back.union(poly).area > 0.98


@FAST
@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))))
def test_vectorize_inverts_rasterize_exactly(mask):
    polys = vectorize(mask, origin_px=(10.0, -5.0), downsample=3.0)
    assert all(p.is_valid for p in polys)
    h, w = mask.shape
    again = rasterize([(p, 1) for p in polys], (10.0, -5.0, 3.0 * w, 3.0 * h), (w, h))
    assert np.array_equal(again.astype(bool), mask)


@FAST
@given(st.lists(st.tuples(st.floats(-20, 60), st.floats(-20, 60)), min_size=0, max_size=9),
       st.integers(1, 40), st.integers(1, 40))
def test_rasterize_never_crashes_on_invalid_polygons(pts, w, h):
    geom = Polygon(pts) if len(pts) >= 3 else Polygon()
    m = rasterize([(geom, 7)], (0, 0, 40, 40), (w, h))
    assert m.shape == (h, w) and set(np.unique(m)) <= {0, 7}
    vectorize(m, origin_px=(0, 0), downsample=40 / max(w, h))


def test_reading_and_writing_fuzzed_objects_round_trip(tmp_path):
    """One concrete sanity check that the fuzz helpers exercise real writes (not only memory)."""
    objs = read_geojson([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[0, 0], [5, 0], [5, 5], [0, 0]]]}, "properties": {"classification": "Tumor"}}])
    path = write_geojson(tmp_path / "x.geojson", objs)
    validate_qupath_geojson(path)
    with pytest.raises(InvalidGeoJSONError):
        validate_qupath_geojson('{"type": "Feature"}')
