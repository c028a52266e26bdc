"""``qcamseg convert``: ASAP XML ↔ QuPath GeoJSON end to end, and its one-line errors."""

from __future__ import annotations

import json

import pytest

from qupath_camseg.annotations import (
    read_asap_xml,
    read_geojson,
    validate_qupath_geojson,
)
from qupath_camseg.cli import main


@pytest.fixture
def camelyon_xml(shared_data):
    return shared_data / "camelyon17/patient_004_node_4.xml"


def test_xml_to_geojson_and_back(camelyon_xml, tmp_path, capsys):
    gj = tmp_path / "p.geojson"
    assert main(["convert", str(camelyon_xml), str(gj)]) == 0
    assert "wrote 3 objects" in capsys.readouterr().out
    validate_qupath_geojson(gj)
    objs = read_geojson(gj)
    assert [o.classification for o in objs] == ["Tumor"] * 3
    xml = tmp_path / "p.xml"
    assert main(["convert", str(gj), str(xml)]) == 0
    original, back = read_asap_xml(camelyon_xml), read_asap_xml(xml)
    for a, b in zip(original, back):
        # level-0 coordinates kept (GeoJSON stores 2 decimals, as QuPath does)
        assert a.geometry.symmetric_difference(b.geometry).area < 1e-3 * a.geometry.area


def test_qupath03_dialect_and_class_map(camelyon_xml, tmp_path):
    out = tmp_path / "old.json"
    args = ["convert", str(camelyon_xml), str(out), "--qupath-version", "0.3",
            "--class-map", "Tumor=Metastasis"]
    assert main(args) == 0
    validate_qupath_geojson(out, qupath_version="0.3")
    feats = json.loads(out.read_text())["features"]
    assert {f["properties"]["object_type"] for f in feats} == {"annotation"}
    assert {f["properties"]["classification"]["name"] for f in feats} == {"Metastasis"}


def test_geojson_upgrade_qupath02_file(shared_data, tmp_path):
    out = tmp_path / "new.geojson"
    assert main(["convert", str(shared_data / "qupath/geojson/qupath02_histoqc_annotations.json"),
                 str(out)]) == 0
    validate_qupath_geojson(out)
    assert json.loads(out.read_text())["features"][0]["properties"]["objectType"] == "annotation"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_refuses_to_overwrite_input(tmp_path, camelyon_xml, capsys):
    gj = tmp_path / "p.geojson"
    assert main(["convert", str(camelyon_xml), str(gj)]) == 0
    before = gj.read_bytes()
    capsys.readouterr()
    assert main(["convert", str(gj), str(gj), "--overwrite"]) == 2
    assert "input file" in _error(capsys)
    assert gj.read_bytes() == before


def test_existing_output_needs_overwrite(tmp_path, camelyon_xml, capsys):
    out = tmp_path / "p.geojson"
    out.write_text("keep me")
    assert main(["convert", str(camelyon_xml), str(out)]) == 2
    assert "--overwrite" in _error(capsys)
    assert out.read_text() == "keep me"
    assert main(["convert", str(camelyon_xml), str(out), "--overwrite"]) == 0
    validate_qupath_geojson(out)


@pytest.mark.parametrize("case", ["missing", "extension", "malicious", "nan", "class-map"])
def test_one_line_errors(tmp_path, capsys, case):
    src = tmp_path / "in.xml"
    out = tmp_path / "out.geojson"
    args = ["convert", str(src), str(out)]
    if case == "extension":
        src = tmp_path / "in.txt"
        src.write_text("x")
        args = ["convert", str(src), str(out)]
    elif case == "malicious":
        src.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                       "<ASAP_Annotations>&x;</ASAP_Annotations>")
    elif case == "nan":
        src = tmp_path / "in.geojson"
        src.write_text('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 1]}}')
        args = ["convert", str(src), str(tmp_path / "out.xml")]
    elif case == "class-map":
        src.write_text("<ASAP_Annotations/>")
        args += ["--class-map", "nonsense"]
    rc = main(args)
    assert rc == 2
    if case == "class-map":
        assert "OLD=NEW" in capsys.readouterr().err
    else:
        assert src.name in _error(capsys)
    assert not out.exists() and not (tmp_path / "out.xml").exists()
