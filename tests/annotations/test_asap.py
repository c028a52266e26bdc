"""ASAP XML (Camelyon16/17): import rules, safety against malicious XML, export and round trips."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon, box

from qupath_camseg.annotations import (
    QPObject,
    read_asap_xml,
    read_geojson,
    validate_qupath_geojson,
    write_asap_xml,
    write_geojson,
)
from qupath_camseg.errors import InvalidXMLError


def ann(group, pts, kind="Polygon", name="A", orders=None):
    orders = orders if orders is not None else range(len(pts))
    coords = "".join(f'<Coordinate Order="{o}" X="{x}" Y="{y}" />' for o, (x, y) in zip(orders, pts))
    return (f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">'
            f"<Coordinates>{coords}</Coordinates></Annotation>")


def xml(*anns, groups=""):
    return (f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{"".join(anns)}</Annotations>'
            f"<AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>")


def write(tmp_path, text, name="a.xml"):
    p = tmp_path / name
    p.write_text(text)
    return p


SQ = [(0, 0), (100, 0), (100, 100), (0, 100)]


def iou(a, b):
    return a.intersection(b).area / a.union(b).area


def test_real_camelyon17_file(shared_data, tmp_path):
    src = shared_data / "camelyon17/patient_004_node_4.xml"
    objs = read_asap_xml(src)
    assert len(objs) == 3
    assert {o.classification for o in objs} == {"Tumor"}
    first = list(objs[0].geometry.exterior.coords)
    assert first[0] == pytest.approx((12711.2998, 88778.1016))  # Order 0 of "Annotation 0"
    assert first[1] == pytest.approx((12612.7998, 88895.5))
    out = write_geojson(tmp_path / "p.geojson", objs)
    validate_qupath_geojson(out)
    back = read_geojson(out)
    assert [o.classification for o in back] == ["Tumor"] * 3
    for a, b in zip(objs, back):
        assert iou(a.geometry, b.geometry) > 0.999


def test_vertices_sorted_by_order(tmp_path):
    shuffled = [SQ[2], SQ[0], SQ[3], SQ[1]]
    (o,) = read_asap_xml(write(tmp_path, xml(ann("Tumor", shuffled, orders=[2, 0, 3, 1]))))
    assert o.geometry.is_valid and o.geometry.area == 10000  # unsorted would be a bowtie


@pytest.mark.parametrize("group,cls", [("Tumor", "Tumor"), ("_0", "Tumor"), ("_1", "Tumor"),
                                       ("metastases", "Tumor"), ("Stroma", "Stroma"),
                                       ("None", None)])
def test_groups(tmp_path, group, cls):
    (o,) = read_asap_xml(write(tmp_path, xml(ann(group, SQ))))
    assert o.classification == cls
    assert o.metadata["asap_group"] == group


def test_group_2_becomes_holes_in_the_tumour_it_lies_in(tmp_path):
    inner = [(40, 40), (60, 40), (60, 60), (40, 60)]
    elsewhere = [(500, 500), (510, 500), (510, 510), (500, 510)]
    report: list[str] = []
    objs = read_asap_xml(write(tmp_path, xml(ann("_0", SQ), ann("_2", inner), ann("_2", elsewhere))),
                         report=report)
    tumour = [o for o in objs if o.classification == "Tumor"]
    assert len(tumour) == 1 and len(tumour[0].geometry.interiors) == 1
    assert tumour[0].geometry.area == 10000 - 400
    assert [o.classification for o in objs if o.classification != "Tumor"] == ["_2"]
    assert any("overlaps no tumour" in r for r in report)


def test_dot_pointset_rectangle_spline(tmp_path):
    report: list[str] = []
    objs = read_asap_xml(write(tmp_path, xml(
        ann("Tumor", [(5, 5)], kind="Dot"),
        ann("Tumor", [(1, 1), (2, 2)], kind="PointSet"),
        ann("Tumor", SQ, kind="Rectangle"),
        ann("Tumor", SQ, kind="Spline"),
    )), report=report)
    assert isinstance(objs[0].geometry, Point) and isinstance(objs[1].geometry, MultiPoint)
    assert objs[2].geometry.area == objs[3].geometry.area == 10000
    assert sum("no area" in r for r in report) == 2


def test_self_intersecting_repaired_and_degenerate_dropped(tmp_path):
    bowtie = [(0, 0), (10, 10), (10, 0), (0, 10)]
    line = [(0, 0), (5, 0), (10, 0)]
    report: list[str] = []
    objs = read_asap_xml(write(tmp_path, xml(ann("Tumor", bowtie), ann("Tumor", line),
                                             ann("Tumor", [(1, 1), (1, 1)]))), report=report)
    assert len(objs) == 1 and objs[0].geometry.is_valid and objs[0].geometry.area == 50
    text = " ".join(report)
    assert "repaired" in text and "zero-area" in text and "fewer than 3" in text


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ASAP_Annotations><Annotations><Annotation Name="&lol3;"/></Annotations></ASAP_Annotations>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ASAP_Annotations><Annotations><Annotation Name="&xxe;"/></Annotations></ASAP_Annotations>"""


@pytest.mark.parametrize("text,match", [
    (BILLION_LAUGHS, "unsafe XML"),
    (XXE, "unsafe XML"),
    ("<ASAP_Annotations><Annotations>", "malformed XML"),
    ("", "malformed XML"),
    ("<svg></svg>", "not an ASAP annotation file"),
    (xml(ann("Tumor", [(0, 0), ("nan", 1), (5, 5)])), "not a finite"),
    (xml(ann("Tumor", [(0, 0), ("inf", 1), (5, 5)])), "not a finite"),
    (xml(ann("Tumor", [(0, 0), ("abc", 1), (5, 5)])), "not a number"),
    (xml(ann("Tumor", SQ, orders=["a", "b", "c", "d"])), "Order"),
])
def test_bad_and_malicious_xml(tmp_path, text, match):
    p = write(tmp_path, text, "evil.xml")
    with pytest.raises(InvalidXMLError, match=match) as exc:
        read_asap_xml(p)
    assert "evil.xml" in str(exc.value) and "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidXMLError, match="not found"):
        read_asap_xml(tmp_path / "nope.xml")


def test_xml_geojson_xml_round_trip_with_holes(tmp_path):
    src = write(tmp_path, xml(
        ann("_1", [(0, 0), (300.25, 0), (300.25, 200.5), (0, 200.5)], name="T1"),
        ann("_2", [(50, 50), (80, 50), (80, 90), (50, 90)], name="hole"),
        ann("Stroma", [(400, 400), (450, 400), (430, 470)], name="S"),
        ann("metastases", [(1000, 1000), (1100, 1010), (1050, 1100)], name="M"),
    ))
    objs = read_asap_xml(src)
    gj = write_geojson(tmp_path / "mid.geojson", objs)
    validate_qupath_geojson(gj)
    out = write_asap_xml(tmp_path / "back.xml", read_geojson(gj))
    back = read_asap_xml(out)
    for cls in ("Tumor", "Stroma"):
        a = shapely.union_all([o.geometry for o in objs if o.classification == cls])
        b = shapely.union_all([o.geometry for o in back if o.classification == cls])
        assert iou(a, b) > 0.999
    assert sorted(o.metadata["asap_group"] for o in back) == ["Stroma", "_1", "metastases"]
    text = out.read_text()
    assert "<AnnotationGroups>" in text and 'PartOfGroup="_2"' in text


def test_export_reports_what_asap_cannot_hold(tmp_path):
    objs = [QPObject(geometry=box(0, 0, 10, 10).difference(box(2, 2, 4, 4)), classification="Stroma"),
            QPObject(geometry=shapely.LineString([(0, 0), (1, 1)])),
            QPObject(geometry=MultiPolygon([box(0, 0, 1, 1), box(5, 5, 6, 6)]),
                     classification="Tumor")]
    report: list[str] = []
    out = write_asap_xml(tmp_path / "x.xml", objs, report=report)
    assert any("hole 0" in r for r in report) and any("no area" in r for r in report)
    back = read_asap_xml(out)
    assert sorted(round(o.geometry.area) for o in back) == [1, 1, 100]


def test_point_export_round_trip(tmp_path):
    objs = [QPObject(geometry=Point(3, 4), classification="Tumor"),
            QPObject(geometry=MultiPoint([(1, 1), (2, 2)]), classification="Tumor")]
    back = read_asap_xml(write_asap_xml(tmp_path / "p.xml", objs))
    assert back[0].geometry.equals(Point(3, 4)) and len(back[1].geometry.geoms) == 2


def test_polygon_is_valid_input_for_later_steps(tmp_path):
    (o,) = read_asap_xml(write(tmp_path, xml(ann("Tumor", SQ))))
    assert isinstance(o.geometry, Polygon) and o.is_area
