"""``qcamseg synth``, ``import-annotations`` and ``doctor`` end to end (``main([...])``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from shapely.geometry import box
from shapely.ops import unary_union

from qupath_camseg.annotations import QPObject, is_ours, write_geojson
from qupath_camseg.cli import main
from qupath_camseg.qupath import open_project
from qupath_camseg.synthetic import make_truth

SIZE = ["--width", "2048", "--height", "2048"]


@pytest.fixture(scope="module")
def synth_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "demo project"
    rc = main(["synth", str(out), "--slides", "3", *SIZE, "--seed", "3", "--negatives", "1", "--door", "files"])
    assert rc == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_synth_project_rereads_to_its_truth(synth_project: Path) -> None:
    p = open_project(synth_project, door="files")
    assert [e.image_name for e in p.entries] == ["tumor_001.tif", "tumor_002.tif", "normal_003.tif"]
    assert [e.entry_id for e in p.entries] == ["1", "2", "3"]
    holes = 0
    for e in p.entries:
        assert p.image_path(e) == synth_project / "images" / e.image_name
        objs = p.read_annotations(e)
        # regenerate the ground truth independently from the seed recorded in the entry
        truth = make_truth(2048, 2048, seed=int(e.metadata["seed"]), mpp=0.25, tumor=e.metadata["tumor"] == "yes")
        if e.metadata["tumor"] == "no":
            assert objs == [] and truth.tumor.is_empty
            continue
        assert objs and all(o.classification == "Tumor" and o.object_type == "annotation" for o in objs)
        assert not any(is_ours(o) for o in objs)  # ground truth: training and evaluation must use it
        got = unary_union([o.geometry for o in objs])
        assert got.symmetric_difference(truth.tumor).area < 1e-3 * truth.tumor.area
        holes += sum(len(list(o.geometry.interiors)) for o in objs)
    assert holes > 0  # seed 3's first slide has normal islands inside a metastasis
    assert holes == sum(
        len(list(g.interiors))
        for e in p.entries if e.metadata["tumor"] == "yes"
        for g in make_truth(2048, 2048, seed=int(e.metadata["seed"]), mpp=0.25).tumor.geoms
    )


def test_synth_images_are_readable_slides_with_mpp(synth_project: Path) -> None:
    from qupath_camseg.wsi import open_slide

    with open_slide(synth_project / "images" / "tumor_001.tif") as s:
        assert s.dimensions == (2048, 2048)
        assert s.mpp == pytest.approx(0.25, rel=1e-3)
    data = json.loads((synth_project / "project.qpproj").read_text(encoding="utf-8"))
    assert data["uri"].endswith("/demo%20project/project.qpproj")  # the final place, not the build folder
    assert not list(synth_project.parent.glob(".demo project.synth-*"))  # no leftovers


def test_add_image_records_what_qupath_shows(synth_project: Path, tmp_path: Path) -> None:
    proj = _copy(synth_project, tmp_path / "p")
    with open_project(proj, "r+", door="files") as p:
        e = p.add_image(proj / "images" / "tumor_001.tif", name="again")  # size/levels/mpp read from the file
    assert e.entry_id == "4" and e.path == proj / "images" / "tumor_001.tif"
    meta = json.loads((proj / "project.qpproj").read_text(encoding="utf-8"))["images"][3]["serverBuilder"]
    assert meta["providerClassName"].endswith("OpenslideServerBuilder")  # OpenSlide reads our TIFFs
    assert meta["metadata"]["pixelCalibration"]["pixelWidth"]["value"] == pytest.approx(0.25, rel=1e-3)
    assert [(lv["width"], lv["height"]) for lv in meta["metadata"]["levels"]] == [(2048, 2048), (1024, 1024), (512, 512)]


def test_synth_refuses_non_empty_folder_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["synth", str(out), "--slides", "1", "--width", "512", "--height", "512", "--door", "files"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").is_file()
    assert main(["synth", str(out), "--slides", "1", "--width", "512", "--height", "512", "--door", "files",
                 "--overwrite"]) == 0
    # issue 16 point 4: --overwrite writes the project beside the user's files, never over them
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine" and (out / "project.qpproj").is_file()


_SYNTH = ["--width", "512", "--height", "512", "--door", "files"]


def test_synth_overwrite_replaces_only_what_synth_wrote(tmp_path: Path) -> None:
    """Issue 16 point 4: a second synth --overwrite rewrites its own files (a changed one backed up
    first), removes the ones it no longer writes, and keeps everything else in the folder."""
    out = tmp_path / "demo"
    assert main(["synth", str(out), "--slides", "2", "--seed", "1", *_SYNTH]) == 0
    manifest = json.loads((out / "camseg" / "synth.json").read_text(encoding="utf-8"))["files"]
    assert {"project.qpproj", "images/tumor_001.tif", "images/tumor_002.tif", "camseg/annotations/1.geojson"} <= set(manifest)
    (out / "my_notes.txt").write_text("mine", encoding="utf-8")
    (out / "camseg" / "predictions").mkdir()
    (out / "camseg" / "predictions" / "1.geojson").write_text("{}", encoding="utf-8")
    edited = out / "camseg" / "annotations" / "1.geojson"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Tumor 1", "Tumor one"), encoding="utf-8")
    assert main(["synth", str(out), "--slides", "1", "--seed", "2", "--overwrite", *_SYNTH]) == 0
    assert (out / "my_notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / "camseg" / "predictions" / "1.geojson").read_text(encoding="utf-8") == "{}"
    assert not (out / "images" / "tumor_002.tif").exists()  # synth's own, no longer written
    assert "Tumor one" not in edited.read_text(encoding="utf-8")
    (backup,) = (out / "camseg" / "backups").glob("1.geojson.*.bak")
    assert "Tumor one" in backup.read_text(encoding="utf-8")
    assert json.loads((out / "project.qpproj").read_text(encoding="utf-8"))["images"][0]["imageName"] == "tumor_001.tif"


def test_synth_never_replaces_a_project_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 point 4: --overwrite used to delete a whole QuPath project (data/, .qpdata, the
    user's files), and the refusal without it suggested adding it."""
    from qupath_camseg.qupath import create_project

    theirs = tmp_path / "their project"
    create_project(theirs).close()
    (theirs / "data" / "1").mkdir(parents=True)
    (theirs / "data" / "1" / "data.qpdata").write_bytes(b"\xac\xed java")
    before = {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    for extra in ([], ["--overwrite"]):
        assert main(["synth", str(theirs), "--slides", "1", *extra, *_SYNTH]) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and "--overwrite" not in err, err
    assert {p: p.read_bytes() for p in theirs.rglob("*") if p.is_file()} == before
    # a synth project that QuPath has since changed (data/ written) is the user's too
    ours = tmp_path / "ours"
    assert main(["synth", str(ours), "--slides", "1", *_SYNTH]) == 0
    (ours / "data" / "1").mkdir(parents=True)
    (ours / "data" / "1" / "data.qpdata").write_bytes(b"annotated in QuPath")
    assert main(["synth", str(ours), "--slides", "1", "--overwrite", *_SYNTH]) == 2
    assert "data/1/data.qpdata" in capsys.readouterr().err
    assert (ours / "data" / "1" / "data.qpdata").read_bytes() == b"annotated in QuPath"


def test_synth_rejects_more_negatives_than_slides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "x"), "--slides", "1", "--negatives", "2", "--door", "files"]) == 2
    assert "--negatives" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_import_geojson_adds_and_keeps_existing(synth_project: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    proj = _copy(synth_project, tmp_path / "p")
    before = open_project(proj, door="files").read_annotations("tumor_001.tif")
    user = tmp_path / "mine.geojson"
    write_geojson(user, [QPObject(geometry=box(10, 10, 90, 90), classification="Stroma", name="s1")])
    assert main(["import-annotations", str(proj), str(user), "--image", "tumor_001", "--door", "files"]) == 0
    out = capsys.readouterr().out
    assert "1 annotation(s)" in out and "backup:" in out
    after = open_project(proj, door="files").read_annotations("tumor_001.tif")
    assert len(after) == len(before) + 1
    assert [o.name for o in after] == [o.name for o in before] + ["s1"]
    backups = list((proj / "camseg" / "backups").glob("1.geojson.*.bak"))
    assert len(backups) == 1 and len(json.loads(backups[0].read_text(encoding="utf-8"))["features"]) == len(before)


def test_import_asap_xml_with_replace(synth_project: Path, tmp_path: Path, shared_data: Path) -> None:
    proj = _copy(synth_project, tmp_path / "p")
    xml = shared_data / "camelyon17" / "patient_004_node_4.xml"
    assert main(["import-annotations", str(proj), str(xml), "--image", "normal_003.tif", "--door", "files"]) == 0
    assert main(["import-annotations", str(proj), str(xml), "--image", "tumor_002.tif", "--replace",
                 "--door", "files"]) == 0
    p = open_project(proj, door="files")
    for name in ("normal_003.tif", "tumor_002.tif"):
        objs = p.read_annotations(name)
        assert len(objs) == 3 and {o.classification for o in objs} == {"Tumor"}  # the file's 3 polygons
        assert not any(is_ours(o) for o in objs)
    assert list((proj / "camseg" / "backups").glob("2.geojson.*.bak"))  # --replace still backs up


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "no_such_slide.tif"], "no image 'no_such_slide.tif'"),
        (["--image", "tumor_001.tif", "--door", "paquo"], "PAQUO_QUPATH_DIR"),
    ],
)
def test_import_bad_input(synth_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          args: list[str], message: str) -> None:
    from qupath_camseg.qupath import find_qupath_installation

    if "paquo" in args and find_qupath_installation()[0] is not None:  # pragma: no cover - QuPath installed
        pytest.skip("QuPath is installed, so the paquo door works")
    proj = _copy(synth_project, tmp_path / "p")
    user = tmp_path / "mine.geojson"
    write_geojson(user, [QPObject(geometry=box(1, 1, 9, 9), classification="Tumor")])
    if "--door" not in args:
        args = [*args, "--door", "files"]
    assert main(["import-annotations", str(proj), str(user), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_import_into_missing_project_and_from_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["import-annotations", str(tmp_path / "none"), str(bad), "--image", "x", "--door", "files"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    good = tmp_path / "good.geojson"
    write_geojson(good, [QPObject(geometry=box(1, 1, 9, 9), classification="Tumor")])
    assert main(["import-annotations", str(tmp_path / "none"), str(good), "--image", "x", "--door", "files"]) == 2
    assert "no QuPath project" in capsys.readouterr().err


def test_moved_project_and_missing_images(tmp_path: Path) -> None:
    built = tmp_path / "built"
    assert main(["synth", str(built), "--slides", "2", "--width", "512", "--height", "512", "--door", "files"]) == 0
    proj = tmp_path / "elsewhere" / "moved"
    proj.parent.mkdir()
    shutil.move(built, proj)  # moved together with its images: found as QuPath finds them
    p = open_project(proj, door="files")
    assert p.missing_images() == [] and p.image_path("tumor_001.tif") == proj / "images" / "tumor_001.tif"
    shutil.rmtree(proj / "images")
    p = open_project(proj, door="files")
    assert len(p.missing_images()) == 2
    assert p.read_annotations("tumor_001.tif")  # annotations stay readable without the image


def test_doctor_reports_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    from qupath_camseg.qupath import find_qupath_installation

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in ("Python: ", "platform: ", "torch: ", "CUDA: ", "MPS", "tiffslide: ", "openslide: ", "temp folder: "):
        assert key in out
    assert find_qupath_installation()[1] in out  # paquo's answer, verbatim
    assert "paquo 0.9" in out and "ok: qcamseg can run here" in out


def test_doctor_warns_about_a_small_dev_shm(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import qupath_camseg._runtime as io_mod

    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 64 << 20)  # Docker's default
    assert main(["doctor"]) == 0  # a slowdown, not a failure
    out = capsys.readouterr().out
    assert "/dev/shm): 64 MB free" in out and "--shm-size" in out
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 24 << 30)
    assert main(["doctor"]) == 0
    assert "/dev/shm): 24 GB free" in capsys.readouterr().out
