"""The QuPath-free project door: real QuPath 0.3.2 / 0.6.0-rc3 projects, URIs, moved projects,
bad input, locking, and projects we write."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from shapely.geometry import Polygon, box

from qupath_camseg.annotations import CAMSEG_METADATA, QPObject, is_ours
from qupath_camseg.errors import (
    ImageMissingError,
    ProjectError,
    ProjectExistsError,
    ProjectLockedError,
    ProjectNotFoundError,
)
from qupath_camseg.qupath import (
    FileProject,
    ImageInfo,
    argb_to_rgb,
    create_project,
    open_project,
    path_to_uri,
    rgb_to_argb,
    uri_to_path,
)

INFO = ImageInfo(1000, 800, ((1000, 800), (500, 400)), 0.5, 256)


def _image(folder: Path, name: str = "slide 1.tif") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(b"not really a tiff")  # the file door never reads pixels
    return p


# ------------------------------------------------------------------ real projects written by QuPath
def test_reads_qupath_032_project_with_windows_uris(shared_data: Path) -> None:
    p = FileProject(shared_data / "qupath" / "projects" / "qupath032_tcga_coad")
    assert p.version == "0.3.2"
    assert len(p.entries) == 434
    first = p.entries[0]
    assert first.entry_id == "1"
    assert first.image_name == "TCGA-D5-5539-01Z-00-DX1.9c46fe78-2adb-4f49-9141-cda135c2c90b.svs"
    assert isinstance(first.recorded_path, PureWindowsPath)
    assert first.recorded_path.drive == "I:"
    assert len(p.missing_images()) == 434  # the images are not on this machine
    assert p.entry("459").image_name.startswith("TCGA-CM-4743")
    with pytest.raises(ImageMissingError) as err:
        p.image_path(first)
    msg = str(err.value)
    assert first.image_name in msg and "COAD-TCGA-Diagnostic-Slide" in msg and "Check project URIs" in msg
    assert "\n" not in msg


def test_reads_qupath_060rc3_project_and_its_classes(shared_data: Path) -> None:
    p = FileProject(shared_data / "qupath" / "projects" / "qupath060rc3" / "project.qpproj")
    assert p.version == "0.6.0-rc3" and len(p.entries) == 107
    last = p.entries[-1]
    assert last.entry_id == "107" and last.metadata == {}
    assert "ŞUBAT18.02.25_HE_0" in str(last.recorded_path)  # %C5%9E decoded as UTF-8
    classes = dict(p.path_classes)
    assert classes["Tumor"] == (200, 0, 0)  # QuPath's default Tumor colour, stored as signed ARGB
    assert classes["Ignore*"] == (180, 180, 180)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:/I:/COAD%20Slides/a.svs", PureWindowsPath("I:/COAD Slides/a.svs")),
        ("file:///C:/x/y.tif", PureWindowsPath("C:/x/y.tif")),
        ("file:////server/share/d/a.svs", PureWindowsPath("//server/share/d/a.svs")),
        ("file://server/share/a.svs", PureWindowsPath("//server/share/a.svs")),
        ("file:/home/me/My%20Slides/b.tif", PurePosixPath("/home/me/My Slides/b.tif")),
        ("file:///home/me/b.tif", PurePosixPath("/home/me/b.tif")),
        ("https://example.org/slide.svs", None),
        ("omero://server/123", None),
    ],
)
def test_uri_to_path(uri: str, expected: object) -> None:
    assert uri_to_path(uri) == expected


def test_path_to_uri_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "a b (1)" / "Şlide µ.tif"
    uri = path_to_uri(p)
    assert uri.startswith("file:/") and " " not in uri
    assert uri_to_path(uri) == PurePosixPath(p)


def test_argb_colours_match_qupath() -> None:
    # values from classes.json written by QuPath 0.6 (Tumor, Stroma)
    assert rgb_to_argb((200, 0, 0)) == -3670016
    assert argb_to_rgb(-6895466) == (150, 200, 150)
    assert argb_to_rgb(0xFF00FF00) == (0, 255, 0)


# ------------------------------------------------------------------ bad input
def test_missing_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFoundError, match="no QuPath project") as err:
        open_project(tmp_path / "nope", door="files")
    assert isinstance(err.value, FileNotFoundError)


def test_create_refuses_existing_project(tmp_path: Path) -> None:
    create_project(tmp_path).close()
    with pytest.raises(ProjectExistsError) as err:
        create_project(tmp_path)
    assert isinstance(err.value, FileExistsError) and "r+" in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"version": "0.5.1", "images": [', "not valid JSON"),
        ("[]", "not a QuPath project"),
        ('{"images": []}', "neither 'version' nor 'lastID'"),
        ('{"version": "0.5.1", "images": [3]}', r"images\[0\]"),
    ],
)
def test_malformed_qpproj(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "project.qpproj").write_text(text, encoding="utf-8")
    with pytest.raises(ProjectError, match=match) as err:
        open_project(tmp_path, door="files")
    assert str(tmp_path / "project.qpproj") in str(err.value)


def test_empty_project_and_unknown_image(tmp_path: Path) -> None:
    create_project(tmp_path).close()
    p = open_project(tmp_path, door="files")
    assert p.entries == []
    with pytest.raises(ProjectError, match="has no images"):
        p.entry("slide.tif")


def test_unknown_image_lists_available(tmp_path: Path) -> None:
    with create_project(tmp_path / "p") as p:
        p.add_image(_image(tmp_path / "img", "A.tif"), info=INFO)
        p.add_image(_image(tmp_path / "img", "B.tif"), info=INFO)
        assert p.entry("a.tif").image_name == "A.tif"  # case-insensitive
        assert p.entry("B").image_name == "B.tif"  # without extension
        assert p.entry("2").image_name == "B.tif"  # entry ID
        with pytest.raises(ProjectError, match=r"no image 'C.tif'.*'A.tif', 'B.tif'"):
            p.entry("C.tif")


def test_two_writers_fail_fast_and_readers_are_free(tmp_path: Path) -> None:
    create_project(tmp_path).close()
    with open_project(tmp_path, "r+", door="files"):
        with pytest.raises(ProjectLockedError, match="in use by qcamseg pid") as err:
            open_project(tmp_path, "r+", door="files")
        assert "wait for it to finish" in str(err.value)
        open_project(tmp_path, "r", door="files")  # readers never block
    open_project(tmp_path, "r+", door="files").close()  # the lock went with the first writer


def test_read_only_project_refuses_writes(tmp_path: Path) -> None:
    with create_project(tmp_path) as p:
        entry = p.add_image(_image(tmp_path / "img"), info=INFO)
    p = open_project(tmp_path, "r", door="files")
    with pytest.raises(ProjectError, match="read-only"):
        p.write_annotations(entry, [])


# ------------------------------------------------------------------ moved projects
def test_project_moved_with_its_images_resolves_like_qupath(tmp_path: Path) -> None:
    old = tmp_path / "old"
    with create_project(old / "project") as p:
        p.add_image(_image(old / "project" / "images"), info=INFO)  # images inside the project
        p.add_image(_image(old / "slides", "next door.tif"), info=INFO)  # images beside it
    shutil.move(old, tmp_path / "new")
    p = open_project(tmp_path / "new" / "project", door="files")
    assert p.image_path("slide 1.tif") == tmp_path / "new" / "project" / "images" / "slide 1.tif"
    assert p.image_path("next door.tif") == tmp_path / "new" / "slides" / "next door.tif"
    assert p.entries[0].recorded_path == PurePosixPath(old / "project" / "images" / "slide 1.tif")


def test_moved_image_is_reported_with_name_path_and_fix(tmp_path: Path) -> None:
    with create_project(tmp_path / "p") as p:
        p.add_image(_image(tmp_path / "img"), info=INFO)
    (tmp_path / "img" / "slide 1.tif").rename(tmp_path / "elsewhere.tif")
    p = open_project(tmp_path / "p", door="files")
    assert [e.image_name for e in p.missing_images()] == ["slide 1.tif"]
    with pytest.raises(ImageMissingError) as err:
        p.image_path("slide 1.tif")
    msg = str(err.value)
    assert "'slide 1.tif'" in msg and str(tmp_path / "img" / "slide 1.tif") in msg and "put the file back" in msg


# ------------------------------------------------------------------ projects we write
def test_written_project_has_what_qupath_needs(tmp_path: Path) -> None:
    with create_project(tmp_path / "p") as p:
        e = p.add_image(_image(tmp_path / "img"), name="first", info=INFO, metadata={"k": "v"})
    data = json.loads((tmp_path / "p" / "project.qpproj").read_text(encoding="utf-8"))
    # DefaultProject.loadProject needs both timestamps (as longs) and a version or lastID
    assert isinstance(data["createTimestamp"], int) and isinstance(data["modifyTimestamp"], int)
    assert data["version"] and data["lastID"] == 1
    assert data["uri"] == path_to_uri(tmp_path / "p" / "project.qpproj")
    img = data["images"][0]
    assert img["entryID"] == 1 and e.entry_id == "1" and img["imageName"] == "first"
    uuid.UUID(img["randomizedName"])
    sb = img["serverBuilder"]
    assert sb["builderType"] == "uri" and isinstance(sb["args"], list)
    assert sb["providerClassName"].startswith("qupath.lib.images.servers.")
    assert uri_to_path(sb["uri"]) == PurePosixPath(tmp_path / "img" / "slide 1.tif")
    assert sb["metadata"]["pixelCalibration"]["pixelWidth"] == {"value": 0.5, "unit": "µm"}
    assert [lv["downsample"] for lv in sb["metadata"]["levels"]] == [1.0, 2.0]
    assert img["metadata"] == {"k": "v"}
    classes = json.loads((tmp_path / "p" / "classifiers" / "classes.json").read_text(encoding="utf-8"))
    tumor = next(c for c in classes["pathClasses"] if c["name"] == "Tumor")
    assert tumor["color"] == -3670016  # what QuPath itself writes for Tumor
    # a reopened project sees the same entry
    q = open_project(tmp_path / "p", door="files")
    assert q.entries == [e]


def test_annotations_keep_user_objects_and_back_up(tmp_path: Path) -> None:
    with create_project(tmp_path / "p") as p:
        entry = p.add_image(_image(tmp_path / "img"), info=INFO)
        donut = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60), (40, 60)]])
        user = QPObject(geometry=donut, classification="Tumor", name="pathologist")
        assert p.add_annotations(entry, [user]) is None  # nothing to back up yet
        ours = QPObject(geometry=box(200, 200, 300, 300), classification="Tumor", metadata=dict(CAMSEG_METADATA))
        backup1 = p.write_annotations(entry, [ours])
        backup2 = p.write_annotations(entry, [ours, ours])  # replaces ours, keeps the user's
        got = p.read_annotations(entry)
        assert [o.name for o in got if not is_ours(o)] == ["pathologist"]
        assert sum(is_ours(o) for o in got) == 2
        assert len(list(got[0].geometry.interiors)) == 1 and got[0].geometry.area == pytest.approx(9600)
        assert backup1 is not None and backup2 is not None and backup1 != backup2 and backup1.is_file()
        assert backup1.parent == tmp_path / "p" / "camseg" / "backups"
        assert p.annotations_file(entry) == tmp_path / "p" / "camseg" / "annotations" / "1.geojson"


def test_changing_a_project_backs_up_qpproj(tmp_path: Path) -> None:
    create_project(tmp_path / "p").close()
    before = (tmp_path / "p" / "project.qpproj").read_text(encoding="utf-8")
    with open_project(tmp_path / "p", "r+", door="files") as p:
        p.add_image(_image(tmp_path / "img"), info=INFO)
    backups = list((tmp_path / "p" / "camseg" / "backups").glob("project.qpproj.*.bak"))
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == before


def test_keeps_unknown_fields_of_existing_projects(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "qupath" / "projects" / "qupath060rc3"
    shutil.copytree(src, tmp_path / "p")
    with open_project(tmp_path / "p", "r+", door="files") as p:
        p.add_image(_image(tmp_path / "img"), info=INFO)
    old = json.loads((src / "project.qpproj").read_text(encoding="utf-8"))
    new = json.loads((tmp_path / "p" / "project.qpproj").read_text(encoding="utf-8"))
    assert new["images"][:107] == old["images"]  # untouched, including serverBuilder metadata
    assert new["images"][107]["entryID"] == 108 and new["lastID"] == 108
    assert new["version"] == old["version"] and new["uri"] == old["uri"]  # QuPath's moved-project anchor
