"""The Groovy bridge (``groovy/*.groovy``), tested outside QuPath with the real Groovy 4.0.26
(QuPath 0.6's), all in one JVM run of ``tests/groovy/Harness.groovy``:

(a) every script parses (``CompilationUnit`` to ``Phases.CONVERSION``), a broken one does not;
(b) every script compiles to ``Phases.CLASS_GENERATION`` against test doubles of QuPath's API
    (``tests/groovy/stubs``), with QuPath 0.4's and 0.5+'s default imports prepended;
(c) the export, predict and import scripts run against those doubles on a project made by
    ``qcamseg synth``: predict really launches ``python -m qupath_camseg predict`` and the doubles
    record the objects the script adds and removes.

Needs Java (skipped without ``java``) and npm the first time: ``scripts/fetch_groovy.sh`` puts the
Groovy jars into ``.tools/`` (idempotent; a failed fetch fails the tests, it does not skip them).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    TISSUE_CLASS,
    QPObject,
    is_ours,
    read_geojson,
    write_geojson,
)
from qupath_camseg.cli import _COMMANDS, cli, main

REPO = Path(__file__).resolve().parents[2]
GROOVY = REPO / "groovy"
HARNESS = REPO / "tests" / "groovy" / "Harness.groovy"
STUBS = REPO / "tests" / "groovy" / "stubs"
SCRIPTS = sorted(GROOVY.glob("*.groovy"))
OWN = [
    "camseg_Accept_predictions.groovy",
    "camseg_Configure_Python.groovy",
    "camseg_Export_annotations_for_training.groovy",
    "camseg_Import_predictions.groovy",
    "camseg_Mark_as_normal.groovy",
    "camseg_Predict_current_image.groovy",
    "camseg_Predict_for_project.groovy",
    "camseg_Review_next.groovy",
    "camseg_Train_on_this_project.groovy",
    "camseg_lib.groovy",
]
PYTHON = str(Path(sys.executable).absolute())
# The same environment's Python under another name: tells the preference from $QCAMSEG_PYTHON.
PYTHON_ALT = next((str(p) for p in (Path(PYTHON).with_name(n) for n in ("python3", "python", "python3.11"))
                   if p.name != Path(PYTHON).name and p.exists()), PYTHON)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def groovy_jar() -> Path:
    if shutil.which("java") is None:
        pytest.skip("Java not found: install a JDK (17+) to run the Groovy bridge tests")
    out = subprocess.run(["bash", str(REPO / "scripts" / "fetch_groovy.sh")], check=True,
                         capture_output=True, text=True, timeout=300)
    jar = Path(out.stdout.strip().splitlines()[-1]) / "groovy-4.0.26.jar"
    assert jar.is_file(), out.stderr
    return jar


def _feature(name: str, cls: str | None, box: tuple[float, float, float, float], *,
             object_type: str = "annotation", metadata: dict[str, str] | None = None) -> dict:
    """A QuPath GeoJSON feature: a rectangle ``box`` = (x, y, width, height), level-0 px."""
    x, y, w, h = box
    props: dict = {"objectType": object_type, "name": name}
    if cls:
        props["classification"] = {"name": cls, "color": [0, 128, 0]}
    if metadata:
        props["metadata"] = metadata
    import uuid

    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": props}


def _truth(project: Path, entry: str) -> list[dict]:
    """The tumour outlines synth wrote for ``entry`` (QuPath GeoJSON features), as user annotations."""
    data = json.loads((project / "camseg" / "annotations" / f"{entry}.geojson").read_text(encoding="utf-8"))
    return data["features"]


@pytest.fixture(scope="session")
def bridge(groovy_jar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Make the project and model, run every harness job in one JVM, return the report + context."""
    tmp = tmp_path_factory.mktemp("groovy")
    project = tmp / "proj"
    assert main(["synth", str(project), "--slides", "3", "--width", "1024", "--height", "1024",
                 "--tile-px", "256", "--door", "files"]) == 0
    entries = {str(img["entryID"]): img["imageName"]
               for img in json.loads((project / "project.qpproj").read_text(encoding="utf-8"))["images"]}
    assert sorted(entries) == ["1", "2", "3"]
    truth = {e: _truth(project, e) for e in entries}

    # A tiny untrained U-Net whose head says "Tumor" everywhere: enough for the mechanics.
    import torch

    from qupath_camseg.model import ModelConfig, build_model, save_bundle

    torch.set_num_threads(1)
    cfg = ModelConfig(arch={"name": "unet", "width": 4, "depth": 2, "norm": "batch"}, mpp=2.0, tile_px=128,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    net = build_model(cfg.arch, pretrained=False)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 5.0]))
    save_bundle(project / "camseg" / "models" / "tiny", net, cfg)

    # User objects and objects of an earlier camseg run, per entry.
    stroma = _feature("Stroma 1", "Stroma", (50, 50, 200, 100), metadata={"created_by": "someone-else"})
    roi = _feature("ROI 1", None, (0, 0, 512, 1024))
    stale_named = _feature("camseg old outline", "Tumor", (600, 600, 50, 50))  # QuPath 0.4: name only
    stale_meta = _feature("Prediction tile", "Tumor", (700, 700, 64, 64), object_type="detection",
                          metadata=dict(CAMSEG_METADATA))
    ours_written = [
        # the analysed tissue, written unlocked (an older or hand-edited file): the import locks it
        QPObject(geometry=_box(0, 0, 900, 900), classification=TISSUE_CLASS, name=TISSUE_CLASS,
                 metadata=dict(CAMSEG_METADATA)),
        QPObject(geometry=_box(100, 100, 300, 200), classification="Tumor", name="camseg Tumor",
                 metadata=dict(CAMSEG_METADATA)),
        QPObject(geometry=_box(500, 500, 100, 100), classification="Tumor", name="camseg Tumor",
                 metadata=dict(CAMSEG_METADATA)),
        QPObject(geometry=_box(0, 0, 64, 64), object_type="detection", classification="Tumor",
                 name="camseg tile", metadata=dict(CAMSEG_METADATA)),
    ]
    write_geojson(project / "camseg" / "predictions" / "3.geojson", ours_written)

    broken = tmp / "broken" / "camseg_Broken.groovy"
    broken.parent.mkdir()
    text = (GROOVY / "camseg_Predict_for_project.groovy").read_text(encoding="utf-8")
    broken.write_text(text.replace("camseg.guard(title) {", "camseg.guard(title) {{", 1), encoding="utf-8")
    alone = tmp / "alone" / "camseg_Predict_for_project.groovy"
    alone.parent.mkdir()
    shutil.copy(GROOVY / alone.name, alone)
    failing = tmp / "proj_missing_image"
    shutil.copytree(project, failing, ignore=shutil.ignore_patterns("predictions", "probability", "heatmaps",
                                                                    "reports", "*.lock"))
    (failing / "images" / entries["1"]).unlink()
    # synth wrote absolute URIs into the copy's project.qpproj: point them at the copy.
    qpproj = failing / "project.qpproj"
    text = qpproj.read_text(encoding="utf-8")
    for old, new in ((project.as_uri(), failing.as_uri()), (f"file:{project.as_posix()}/", f"file:{failing.as_posix()}/")):
        text = text.replace(old, new)
    qpproj.write_text(text, encoding="utf-8")

    merge = _merge_project(project, tmp / "proj mérge \\ x", truth)  # a space, a backslash, a non-ASCII letter

    script = {n: str(GROOVY / n) for n in OWN}
    runs = [
        {"name": "export", "script": script["camseg_Export_annotations_for_training.groovy"],
         "project": str(project), "currentEntry": "1",
         "entryObjects": {"1": truth["1"] + [stroma, stale_named, stale_meta], "2": truth["2"], "3": truth["3"]}},
        {"name": "cancel", "script": script["camseg_Predict_for_project.groovy"],
         "project": str(project), "currentEntry": "2", "entryObjects": {"2": truth["2"]},
         "interruptWhenOutputContains": "(process ", "interruptAfterMs": 300},
        {"name": "predict_project", "script": script["camseg_Predict_for_project.groovy"], "flavour": "qupath-0.4",
         "batchSize": 3, "project": str(project), "currentEntry": "1",
         "entryObjects": {"1": truth["1"] + [stroma, stale_named, stale_meta]}},
        {"name": "predict_roi", "script": script["camseg_Predict_current_image.groovy"],
         "prefs": {"camseg.python": PYTHON_ALT}, "project": str(project), "currentEntry": "2",
         "entryObjects": {"2": truth["2"] + [roi]}, "selected": ["ROI 1"]},
        {"name": "import", "script": script["camseg_Import_predictions.groovy"],
         "project": str(project), "currentEntry": "3", "entryObjects": {"3": truth["3"] + [stale_named]}},
        {"name": "configure", "script": script["camseg_Configure_Python.groovy"], "dialogAnswers": [f'"{PYTHON}"']},
        {"name": "failure", "script": script["camseg_Predict_current_image.groovy"],
         "project": str(failing), "currentEntry": "1", "entryObjects": {"1": truth["1"]}},
        {"name": "lib_missing", "script": str(alone), "project": str(project), "currentEntry": "1"},
        # issue 16 point 3: entries 2 and 3 never opened in QuPath (empty hierarchy), then a second
        # export after the user deleted one annotation, with another image's outlines under new IDs
        {"name": "export_unopened", "script": script["camseg_Export_annotations_for_training.groovy"],
         "project": str(merge["folder"]), "currentEntry": "1",
         "entryObjects": {"1": truth["1"] + [stroma, merge["extra"]]}},
        {"name": "export_merge", "script": script["camseg_Export_annotations_for_training.groovy"],
         "project": str(merge["folder"]), "currentEntry": "1",
         "entryObjects": {"1": truth["1"] + [stroma], "2": merge["renamed"], "3": truth["3"] + [merge["new3"]]}},
        {"name": "predict_odd_path", "script": script["camseg_Predict_current_image.groovy"],
         "project": str(merge["folder"]), "currentEntry": "2", "entryObjects": {"2": merge["renamed"]}},
        {"name": "predict_slide", "script": script["camseg_Predict_current_image.groovy"],
         "image": str(project / "images" / entries["3"]), "entryObjects": {"image": [stroma]},
         "prefs": {"camseg.model": str(project / "camseg" / "models" / "tiny")}},
    ]
    loop = _loop_jobs(tmp, project, truth, script)
    runs += loop.pop("runs")
    if "train" in _COMMANDS:  # last: it leaves an unfinished model folder behind
        runs.append({"name": "train", "script": script["camseg_Train_on_this_project.groovy"],
                     "settings": {"EPOCHS": "1"}, "project": str(project), "currentEntry": "1",
                     "entryObjects": runs[0]["entryObjects"],  # same as the export job: same files
                     "interruptWhenOutputContains": "(process ", "interruptAfterMs": 5000})
        runs.append({"name": "train_init", "script": script["camseg_Train_on_this_project.groovy"],
                     "settings": {"FROM_LAST_MODEL": "true"}, "project": str(project), "currentEntry": "1",
                     "entryObjects": runs[0]["entryObjects"],
                     "interruptWhenOutputContains": "(process ", "interruptAfterMs": 5000})
    jobs = {"parse": [str(p) for p in SCRIPTS] + [str(broken)], "compile": [str(p) for p in SCRIPTS], "runs": runs}
    jobs_file, report_file = tmp / "jobs.json", tmp / "report.json"
    jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
    env = {**os.environ, "QCAMSEG_PYTHON": PYTHON, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("QCAMSEG_GROOVY_DIR", None)
    classpath = os.pathsep.join([str(groovy_jar), str(groovy_jar.with_name("groovy-xml-4.0.26.jar"))])
    proc = subprocess.run(
        ["java", "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", classpath, "groovy.ui.GroovyMain",
         str(HARNESS), str(STUBS), str(tmp / "classes"), str(jobs_file), str(report_file)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp,
    )
    assert proc.returncode == 0 and report_file.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text(encoding="utf-8"))
    return {"report": report, "runs": {r["name"]: r for r in report["runs"]}, "project": project, "merge": merge,
            "failing": failing, "truth": truth, "entries": entries, "broken": broken.name,
            "stroma": stroma, "roi": roi, "stale": [stale_named, stale_meta], "ours_written": ours_written,
            "loop": loop}


def _merge_project(project: Path, folder: Path, truth: dict[str, list[dict]]) -> dict:
    """A copy of the synth project (a folder name with a space) for the merge scenarios: entry 3's
    file also holds two annotations ``import-annotations`` added (not in QuPath); ``extra`` a user
    annotation on entry 1 that the second export no longer shows; ``renamed`` entry 2's outlines as
    QuPath holds them after the paquo door wrote them (same outlines, other IDs); ``new3`` a new
    user annotation on entry 3."""
    import uuid

    from qupath_camseg.qupath import path_to_uri

    shutil.copytree(project, folder, ignore=shutil.ignore_patterns("*.lock", "*.owner"))
    qpproj = folder / "project.qpproj"
    text = qpproj.read_text(encoding="utf-8")
    for old, new in ((project.as_uri(), folder.as_uri()), (path_to_uri(project) + "/", path_to_uri(folder) + "/")):
        text = text.replace(old, new)
    qpproj.write_text(text, encoding="utf-8")
    imported = [_feature("Imported 1", "Tumor", (10, 900, 40, 40)), _feature("Imported 2", "Tumor", (60, 900, 40, 40))]
    f3 = folder / "camseg" / "annotations" / "3.geojson"
    data = json.loads(f3.read_text(encoding="utf-8"))
    data["features"] += imported
    f3.write_text(json.dumps(data), encoding="utf-8")
    renamed = [{**f, "id": str(uuid.uuid4())} for f in truth["2"]]
    return {"folder": folder, "imported": imported, "renamed": renamed,
            "extra": _feature("Extra", "Tumor", (800, 100, 60, 60)), "new3": _feature("New 3", "Stroma", (900, 900, 50, 50))}


def _box(x: float, y: float, w: float, h: float):
    from shapely.geometry import box

    return box(x, y, x + w, y + h)


def _ids(objects: list[dict]) -> set[str]:
    return {o["id"] for o in objects}


def _commands(output: str) -> list[list[str]]:
    return [shlex.split(line.split("Running: ", 1)[1]) for line in output.splitlines() if "Running: " in line]


def _ok(run: dict) -> dict:
    assert run["ok"], f"{run['name']}: {run.get('errorClass')}: {run.get('error')}\n{run['output']}"
    return run


# ----------------------------------------------------------------------------- (a) and (b)


def test_every_script_parses(bridge: dict) -> None:
    parsed = bridge["report"]["parse"]
    assert set(parsed) >= {p.name for p in SCRIPTS}
    assert {name: err for name, err in parsed.items() if name in {p.name for p in SCRIPTS} and err} == {}


def test_a_broken_script_fails_to_parse(bridge: dict) -> None:
    error = bridge["report"]["parse"][bridge["broken"]]
    assert error and "camseg_Broken.groovy" in error


def test_every_script_compiles_against_the_qupath_doubles(bridge: dict) -> None:
    compiled = bridge["report"]["compile"]
    assert set(compiled) == {p.name for p in SCRIPTS}
    for name, flavours in compiled.items():
        expected = {"evaluate()"} if name == "camseg_lib.groovy" else {"qupath-0.4", "qupath-0.5+"}
        assert set(flavours) == expected
        assert {f: e for f, e in flavours.items() if e} == {}, name


def test_own_scripts_share_one_loader_block() -> None:
    """The only duplicated code: each script's `camsegLib()` locator, identical everywhere."""
    blocks = set()
    for name in OWN[:-1]:
        text = (GROOVY / name).read_text(encoding="utf-8")
        start = text.index("/** The shared helper camseg_lib.groovy")
        blocks.add(text[start:])
        assert "evaluate(camsegLib()).newInstance(Dialogs, this)" in text
    assert len(blocks) == 1


# ----------------------------------------------------------------------------- (c) runs


def test_export_writes_each_entrys_user_annotations_only(bridge: dict) -> None:
    run = _ok(bridge["runs"]["export"])
    folder = bridge["project"] / "camseg" / "annotations"
    for entry, truth in bridge["truth"].items():
        objs = read_geojson(folder / f"{entry}.geojson")
        extra = 1 if entry == "1" else 0  # Stroma 1 on entry 1; the two camseg objects are left out
        assert len(objs) == len(truth) + extra
        assert not any(is_ours(o) for o in objs)
        assert Counter(o.classification for o in objs) == Counter({"Tumor": len(truth), **({"Stroma": 1} if extra else {})})
    assert not list(folder.glob(".*.tmp"))
    assert run["world"]["dialogs"][-1]["kind"] == "infoNotification"


def test_export_keeps_annotations_of_images_never_opened(bridge: dict) -> None:
    """Issue 16 point 3: QuPath's readHierarchy() is empty for an image never opened; the export
    used to replace the annotations synth/import-annotations put in the file by an empty file."""
    run = _ok(bridge["runs"]["export_unopened"])
    exported = [Path(e["path"]).name for e in run["world"]["exports"]]
    assert exported == [".1.geojson.tmp"], "entries 2 and 3 (never opened) must not be rewritten"
    truth = bridge["truth"]
    for entry, n in (("2", len(truth["2"])), ("3", len(truth["3"]) + 2)):
        assert f"{n:4d} annotation(s) -> {entry}.geojson  (kept the {n} in {entry}.geojson; QuPath shows none" in run["output"]
    # entry 1 (open): QuPath's annotations, which carry the file's IDs, are not doubled
    assert f"{len(truth['1']) + 2:4d} annotation(s) -> 1.geojson" in run["output"]


def test_second_export_merges_by_object_id_and_backs_up(bridge: dict) -> None:
    run = _ok(bridge["runs"]["export_merge"])
    merge, truth = bridge["merge"], bridge["truth"]
    folder = merge["folder"] / "camseg" / "annotations"
    one = json.loads((folder / "1.geojson").read_text(encoding="utf-8"))["features"]
    assert _ids(one) == _ids(truth["1"]) | {bridge["stroma"]["id"]}, "the deleted one must go, the rest stay"
    assert "dropped 1 deleted in QuPath" in run["output"]
    backups = sorted((merge["folder"] / "camseg" / "backups").glob("annotations-1.*.geojson"))
    assert any(merge["extra"]["id"] in _ids(json.loads(b.read_text(encoding="utf-8"))["features"]) for b in backups)
    two = json.loads((folder / "2.geojson").read_text(encoding="utf-8"))["features"]
    assert len(two) == len(truth["2"]), "same outlines under other IDs are one object each, not two"
    assert _ids(two) == _ids(merge["renamed"])
    three = json.loads((folder / "3.geojson").read_text(encoding="utf-8"))["features"]
    assert _ids(three) == _ids(truth["3"]) | _ids(merge["imported"]) | {merge["new3"]["id"]}
    assert "kept 2 from 3.geojson" in run["output"]
    assert not list(folder.glob(".*.tmp"))


def test_predict_for_project_replaces_only_its_own_objects(bridge: dict) -> None:
    run = _ok(bridge["runs"]["predict_project"])  # QuPath 0.4 flavour: no PathObject.getMetadata()
    world = run["world"]
    predicted = json.loads((bridge["project"] / "camseg" / "predictions" / "1.geojson").read_text(encoding="utf-8"))
    features = predicted["features"]
    assert features, "the all-tumour model should predict something"
    assert len(world["added"]) == len(features)
    assert Counter(o["classification"] for o in world["added"]) == Counter(
        f["properties"]["classification"]["name"] for f in features)
    assert Counter(o["type"] for o in world["added"]) == Counter(
        "annotation" if f["properties"]["objectType"] == "annotation" else "detection" for f in features)
    user = _ids(bridge["truth"]["1"]) | {bridge["stroma"]["id"]}
    after = _ids(world["objects"])
    assert user <= after, "a user annotation was removed"
    assert _ids(world["removed"]) == {s["id"] for s in bridge["stale"]}
    assert after == user | _ids(world["added"])
    assert world["hierarchyUpdates"] >= 1
    assert "%" in run["output"] and "tiles" in run["output"]  # progress from --progress jsonl
    (tissue,) = [o for o in world["added"] if o["classification"] == TISSUE_CLASS]
    assert tissue["locked"] and tissue["type"] == "annotation"
    assert not any(o["locked"] for o in world["added"] if o["classification"] != TISSUE_CLASS)


def test_predict_current_image_uses_the_selection_as_roi(bridge: dict) -> None:
    run = _ok(bridge["runs"]["predict_roi"])
    (cmd,) = _commands(run["output"])
    assert cmd[0] == PYTHON_ALT  # the preference wins over $QCAMSEG_PYTHON
    assert "--roi" in cmd
    world = run["world"]
    assert bridge["roi"]["id"] in _ids(world["objects"])
    assert _ids(bridge["truth"]["2"]) <= _ids(world["objects"])
    features = json.loads((bridge["project"] / "camseg" / "predictions" / "2.geojson").read_text())["features"]
    assert len(world["added"]) == len(features) > 0
    from shapely.geometry import shape

    roi = shape(bridge["roi"]["geometry"])
    for f in features:
        if f["properties"]["objectType"] == "annotation":
            assert shape(f["geometry"]).difference(roi).area <= 0.01 * shape(f["geometry"]).area
    assert world["dialogs"][-1]["kind"] == "infoNotification"


def test_import_predictions_replaces_only_its_own_objects(bridge: dict) -> None:
    run = _ok(bridge["runs"]["import"])
    world = run["world"]
    assert [o["name"] for o in world["added"]] == [o.name for o in bridge["ours_written"]]
    assert [o["type"] for o in world["added"]] == ["annotation", "annotation", "annotation", "detection"]
    assert [o["locked"] for o in world["added"]] == [True, False, False, False]  # only camseg Tissue
    assert _ids(world["removed"]) == {bridge["stale"][0]["id"]}
    assert _ids(bridge["truth"]["3"]) <= _ids(world["objects"])
    assert _commands(run["output"]) == []  # no Python needed


def test_configure_saves_python_and_runs_doctor(bridge: dict) -> None:
    run = _ok(bridge["runs"]["configure"])
    world = run["world"]
    assert world["prefs"]["camseg.python"] == PYTHON  # quotes around the pasted path are dropped
    (cmd,) = _commands(run["output"])
    assert cmd == [PYTHON, "-X", "utf8", "-u", "-m", "qupath_camseg", "doctor"]
    kinds = [d["kind"] for d in world["dialogs"]]
    assert kinds == ["input", "message"]
    assert PYTHON in world["dialogs"][1]["message"] and "torch" in world["dialogs"][1]["message"]


def test_kill_running_script_stops_python(bridge: dict) -> None:
    run = bridge["runs"]["cancel"]
    assert run["interrupted"], "the run ended before it could be interrupted"
    assert not run["ok"] and run["errorClass"] == "java.lang.InterruptedException"
    pid = int(run["output"].split("(process ", 1)[1].split(";", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert run["world"]["dialogs"][-1]["kind"] == "warningNotification"
    assert run["world"]["added"] == []


def test_failure_shows_the_process_last_lines(bridge: dict) -> None:
    run = bridge["runs"]["failure"]
    assert not run["ok"] and run["errorClass"] == "CamsegProblem"
    (dialog,) = [d for d in run["world"]["dialogs"] if d["kind"] == "error"]
    assert "exit code 2" in dialog["message"] and "Last lines from qcamseg" in dialog["message"]
    assert "error:" in dialog["message"]  # the CLI's own one-line error
    assert "not found at" in dialog["message"]  # the per-image reason, from the jsonl error event
    assert run["world"]["added"] == [] and run["world"]["removed"] == []


def test_missing_helper_says_how_to_install(bridge: dict) -> None:
    run = bridge["runs"]["lib_missing"]
    assert not run["ok"] and run["errorClass"] == "java.io.FileNotFoundException"
    assert "qcamseg install-scripts" in run["error"]


def test_a_project_path_with_spaces_and_a_backslash_reaches_python_intact(bridge: dict) -> None:
    """Issue 16 point 7: the command line from Groovy keeps a project path with a space, a
    backslash and a non-ASCII letter as one argument, and Python finds the project by it."""
    run = _ok(bridge["runs"]["predict_odd_path"])
    (cmd,) = _commands(run["output"])
    folder = str(bridge["merge"]["folder"])
    assert "\\" in folder and " " in folder
    assert cmd[6:8] == ["predict", folder] and cmd[-4:-2] == ["--door", "files"]
    assert (bridge["merge"]["folder"] / "camseg" / "predictions" / "2.geojson").is_file()
    assert len(run["world"]["added"]) > 0


def test_predict_a_slide_outside_a_project(bridge: dict) -> None:
    run = _ok(bridge["runs"]["predict_slide"])
    (cmd,) = _commands(run["output"])
    slide = bridge["project"] / "images" / bridge["entries"]["3"]
    tiny = bridge["project"] / "camseg" / "models" / "tiny"
    assert cmd[6:] == ["predict", str(slide), "--model", str(tiny), "--progress", "jsonl"]
    (written,) = (slide.parent / "camseg" / "predictions").glob("*.geojson")
    features = json.loads(written.read_text(encoding="utf-8"))["features"]
    world = run["world"]
    assert len(world["added"]) == len(features) > 0
    assert bridge["stroma"]["id"] in _ids(world["objects"])


def test_train_exports_then_runs_train(bridge: dict) -> None:
    assert "train" in _COMMANDS, "the Train script calls `qcamseg train`, which the CLI does not have yet"
    run = bridge["runs"]["train"]
    (cmd,) = _commands(run["output"])
    assert cmd[6:8] == ["train", str(bridge["project"])]
    assert cmd[8] == "--out" and Path(cmd[9]).parent == bridge["project"] / "camseg" / "models"
    assert cmd[10:] == ["--epochs", "1", "--door", "files"]  # it learns from the files it just exported
    # Still training when killed (a wrong option would have ended it with a usage error first).
    assert run["interrupted"] and run["errorClass"] == "java.lang.InterruptedException", run["output"]
    pid = int(run["output"].split("(process ", 1)[1].split(";", 1)[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "annotation(s) -> 1.geojson" in run["output"]


def test_train_from_the_last_model_passes_init(bridge: dict) -> None:
    run = bridge["runs"]["train_init"]
    (cmd,) = _commands(run["output"])
    tiny = bridge["project"] / "camseg" / "models" / "tiny"  # the newest folder with a model.json
    assert cmd[6:8] == ["train", str(bridge["project"])] and cmd[-2:] == ["--init", str(tiny)]
    # still training when killed: `--init` with this model was accepted
    assert run["interrupted"] and run["errorClass"] == "java.lang.InterruptedException", run["output"]


def test_every_command_line_is_one_the_cli_accepts(bridge: dict) -> None:
    """Each command a script ran, re-parsed by the real click CLI (options, types, paths)."""
    seen = set()
    for run in bridge["runs"].values():
        for cmd in _commands(run["output"]):
            assert cmd[0] in (PYTHON, PYTHON_ALT)
            assert cmd[1:6] == ["-X", "utf8", "-u", "-m", "qupath_camseg"]
            name, args = cmd[6], cmd[7:]
            if run["name"] == "failure":
                continue  # its project lost an image on purpose; the command itself ran (exit 2)
            command = cli.get_command(None, name)  # type: ignore[arg-type]
            assert command is not None, name
            command.make_context(name, list(args))
            seen.add(name)
    assert seen >= {"predict", "doctor"} | ({"train"} if "train" in _COMMANDS else set())


# ----------------------------------------------------------------------------- install-scripts (no Java)


def test_scripts_ship_with_the_package() -> None:
    from qupath_camseg.qupath import script_files, scripts_source_dir

    assert (scripts_source_dir() / "camseg_lib.groovy").is_file()
    assert {p.name for p in script_files()} == {p.name for p in SCRIPTS} >= set(OWN)


def test_install_scripts_copies_backs_up_edits_and_keeps_other_files(tmp_path: Path) -> None:
    from qupath_camseg.qupath import install_scripts

    target = tmp_path / "QuPath scripts"
    (target).mkdir()
    (target / "my_own.groovy").write_text("println 'mine'", encoding="utf-8")
    first = install_scripts(target)
    assert sorted(p.name for p in first.copied) == sorted(p.name for p in SCRIPTS)
    for src in SCRIPTS:
        assert (target / src.name).read_bytes() == src.read_bytes()
    edited = target / "camseg_Predict_current_image.groovy"
    edited.write_text(edited.read_text(encoding="utf-8").replace("MODEL_DIR = ''", "MODEL_DIR = '/m'"), encoding="utf-8")
    second = install_scripts(target)
    assert [p.name for p in second.copied] == [edited.name]
    assert len(second.unchanged) == len(SCRIPTS) - 1
    (backup,) = second.backups
    assert "MODEL_DIR = '/m'" in backup.read_text(encoding="utf-8")
    assert edited.read_bytes() == (GROOVY / edited.name).read_bytes()
    assert (target / "my_own.groovy").read_text(encoding="utf-8") == "println 'mine'"


def test_default_scripts_dir_is_the_newest_qupath_user_directory(tmp_path: Path) -> None:
    from qupath_camseg.errors import CamsegError
    from qupath_camseg.qupath import default_scripts_dir

    with pytest.raises(CamsegError, match="--dir"):
        default_scripts_dir(tmp_path)
    for name in ("v0.4", "v0.10", "v0.6", "backup-v0.9"):
        (tmp_path / "QuPath" / name).mkdir(parents=True)
    assert default_scripts_dir(tmp_path) == tmp_path / "QuPath" / "v0.10" / "scripts"


def test_install_scripts_cli_says_where_and_what_next(tmp_path: Path) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["install-scripts", "--dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert str((tmp_path / "s").resolve()) in result.output
    assert f"{len(SCRIPTS)} camseg scripts" in result.output
    assert '"camseg Configure Python"' in result.output and PYTHON in result.output
    assert sorted(p.name for p in (tmp_path / "s").glob("*.groovy")) == sorted(p.name for p in SCRIPTS)


def test_script_names_in_messages_exist() -> None:
    """Messages send users to other scripts by their menu name ("camseg Train on this project"):
    each must be a real script, and each qcamseg command named must exist."""
    import re

    menu = {p.stem.replace("_", " ") for p in SCRIPTS}
    texts = [(GROOVY / n).read_text(encoding="utf-8") for n in OWN]
    texts.append((REPO / "qupath_camseg" / "cli" / "scripts_cmd.py").read_text(encoding="utf-8"))
    named = {m for t in texts for m in re.findall(r'"(camseg [A-Z][A-Za-z ]+)"', t)}
    assert named and named <= menu, named - menu
    commands = {m for t in texts for m in re.findall(r"(?:`|: )qcamseg ([a-z][a-z-]+)", t)}
    # (train: see test_train_exports_then_runs_train)
    assert commands and commands <= set(_COMMANDS) | {"train"}, commands - set(_COMMANDS)


# ----------------------------------------------------------------------------- corrections (issue 17)


def _review_feature(rank: int, box: tuple[float, float, float, float]) -> dict:
    from qupath_camseg.annotations import objects_to_geojson

    obj = QPObject(_box(*box), classification="Review", name=f"camseg Review {rank}", metadata=dict(CAMSEG_METADATA),
                   measurements={"uncertainty": 0.5 - rank / 100, "review rank": float(rank)})
    return objects_to_geojson([obj])["features"][0]


def _prediction_feature(geom, name: str, *, cls: str = "Tumor", now=None, now_cls: str | None = None) -> dict:
    """A camseg outline as predict writes it (fingerprint of ``geom``, ``cls``); ``now``/``now_cls``:
    what the user changed it into since (the fingerprint stays the old one)."""
    from qupath_camseg.annotations import FINGERPRINT_KEY, objects_to_geojson, shape_fingerprint

    obj = QPObject(now if now is not None else geom, classification=now_cls or cls, name=name,
                   metadata=dict(CAMSEG_METADATA), measurements={FINGERPRINT_KEY: float(shape_fingerprint(geom, cls))})
    return objects_to_geojson([obj])["features"][0]


def _shapes(n: int = 24, seed: int = 7) -> list:
    """Irregular outlines anywhere on a 200,000 px slide (where 32-bit floats round), every third with a
    hole, every third a two-part MultiPolygon."""
    import numpy as np
    from shapely.geometry import MultiPolygon, Point, Polygon

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cx, cy, r = rng.uniform(1000, 190_000), rng.uniform(1000, 190_000), rng.uniform(30, 3000)
        t = np.linspace(0, 2 * np.pi, int(rng.integers(40, 300)), endpoint=False)
        rad = r * (1 + 0.25 * np.cos(3 * t + rng.uniform(0, 6)) + 0.1 * np.sin(7 * t))
        poly = Polygon(np.column_stack([cx + rad * np.cos(t), cy + rad * np.sin(t)]))
        if i % 3 == 1:
            poly = poly.difference(Point(cx, cy).buffer(0.3 * r))
        elif i % 3 == 2:
            poly = MultiPolygon([poly, Point(cx + 3 * r, cy).buffer(0.4 * r)])
        out.append(poly)
    return out


def _loop_jobs(tmp: Path, project: Path, truth: dict, script: dict) -> dict:
    """Harness jobs for accepting, correcting and reviewing predictions; the context the tests need."""
    import shapely

    g = {n: str(GROOVY / n) for n in ("camseg_Accept_predictions.groovy", "camseg_Mark_as_normal.groovy",
                                       "camseg_Review_next.groovy", "camseg_Export_annotations_for_training.groovy",
                                       "camseg_Import_predictions.groovy")}
    # fingerprints: Groovy's isOurs against Python's is_ours on the same features, both flavours
    shapes = _shapes()
    edits = [lambda s: s.buffer(max(3.0, 0.01 * s.length / 6)), lambda s: shapely.affinity.translate(s, 3.0, 0.0), None]
    features, expect = [], {}
    for i, shape in enumerate(shapes):
        features.append(_prediction_feature(shape, f"camseg Tumor {i}"))
        expect[f"camseg Tumor {i}"] = True
        edit = edits[i % 3]
        name = f"camseg Tumor {i} edited"
        features.append(_prediction_feature(shape, name, now=edit(shape) if edit else None,
                                            now_cls=None if edit else "Normal"))
        expect[name] = False
    check = tmp / "fingerprint_check.groovy"
    check.write_text("def camseg = evaluate(new File('" + script["camseg_lib.groovy"].replace("\\", "/") + "'))"
                     ".newInstance(Dialogs, this)\nfor (o in getAnnotationObjects())\n"
                     "    println 'CHECK\\t' + o.getName() + '\\t' + camseg.isOurs(o)\n", encoding="utf-8")
    # a copy of the project for accept -> export -> training data
    loop_proj = tmp / "loop_proj"
    shutil.copytree(project, loop_proj, ignore=shutil.ignore_patterns("predictions", "probability", "heatmaps",
                                                                       "reports", "*.lock", "models"))
    qpproj = loop_proj / "project.qpproj"
    text = qpproj.read_text(encoding="utf-8")
    for old, new in ((project.as_uri(), loop_proj.as_uri()), (f"file:{project.as_posix()}/", f"file:{loop_proj.as_posix()}/")):
        text = text.replace(old, new)
    qpproj.write_text(text, encoding="utf-8")
    accepted = [_prediction_feature(_box(600, 100, 150, 120), "camseg Tumor a"),
                _prediction_feature(_box(100, 700, 120, 200), "camseg Tumor b", now=_box(100, 700, 160, 200))]
    tile = _feature("camseg tile", "Tumor", (0, 0, 64, 64), object_type="tile", metadata=dict(CAMSEG_METADATA))
    reviews = [_review_feature(3, (800, 800, 64, 64)), _review_feature(1, (100, 100, 64, 64)),
               _review_feature(2, (500, 300, 64, 64))]
    roi = _feature("ROI 1", None, (300, 600, 100, 100))
    pred = _prediction_feature(_box(400, 400, 80, 80), "camseg Tumor")
    edited = [_prediction_feature(_box(700, 700, 50, 50), "camseg Tumor", now=_box(700, 700, 60, 50)),
              _prediction_feature(_box(800, 100, 50, 50), "camseg Tumor", now_cls="Normal")]
    unedited = _prediction_feature(_box(300, 300, 40, 40), "camseg Tumor")
    runs = [
        {"name": "fingerprints", "script": str(check), "entryObjects": {"image": features}, "image": str(check)},
        {"name": "fingerprints_04", "script": str(check), "entryObjects": {"image": features}, "image": str(check),
         "flavour": "qupath-0.4"},
        {"name": "import_keeps_edited", "script": g["camseg_Import_predictions.groovy"], "project": str(project),
         "currentEntry": "3", "entryObjects": {"3": truth["3"] + edited + [unedited]}},
        {"name": "accept_then_export", "scripts": [g["camseg_Accept_predictions.groovy"],
                                                    g["camseg_Export_annotations_for_training.groovy"]],
         "project": str(loop_proj), "currentEntry": "1",
         "entryObjects": {"1": truth["1"] + accepted + [tile, reviews[1]], "3": truth["3"]}},
        {"name": "accept_selected", "script": g["camseg_Accept_predictions.groovy"], "flavour": "qupath-0.4",
         "project": str(project), "currentEntry": "2", "entryObjects": {"2": accepted + [roi]},
         "selected": ["camseg Tumor a"]},
        {"name": "accept_wrong_selection", "script": g["camseg_Accept_predictions.groovy"], "project": str(project),
         "currentEntry": "2", "entryObjects": {"2": accepted + [roi]}, "selected": ["ROI 1"]},
        {"name": "mark_normal", "script": g["camseg_Mark_as_normal.groovy"], "project": str(project),
         "currentEntry": "2", "entryObjects": {"2": truth["2"] + reviews + [roi, pred]},
         "selected": ["camseg Review 1", "ROI 1"]},
        {"name": "mark_normal_nothing", "script": g["camseg_Mark_as_normal.groovy"], "project": str(project),
         "currentEntry": "2", "entryObjects": {"2": reviews}},
        {"name": "review", "scripts": [g["camseg_Review_next.groovy"]] * 4, "project": str(project),
         "currentEntry": "2", "entryObjects": {"2": reviews + [roi]}},
        {"name": "review_after_marking", "scripts": [g["camseg_Review_next.groovy"]] * 2
         + [g["camseg_Mark_as_normal.groovy"], g["camseg_Review_next.groovy"]],
         "project": str(project), "currentEntry": "2", "entryObjects": {"2": reviews + [roi]}},
        {"name": "review_none", "script": g["camseg_Review_next.groovy"], "project": str(project),
         "currentEntry": "2", "entryObjects": {"2": [roi]}},
    ]
    return {"runs": runs, "expect": expect, "features": features, "loop_proj": loop_proj, "accepted": accepted, "reviews": reviews,
            "roi": roi, "pred": pred, "edited": edited, "unedited": unedited, "tile": tile}


def _checks(run: dict) -> dict[str, bool]:
    lines = [line.split("\t") for line in run["output"].splitlines() if line.startswith("CHECK\t")]
    return {name: value == "true" for _, name, value in lines}


@pytest.mark.parametrize("job", ["fingerprints", "fingerprints_04"])
def test_groovy_and_python_agree_on_which_predictions_were_edited(bridge: dict, job: str) -> None:
    run = _ok(bridge["runs"][job])
    expect = bridge["loop"]["expect"]
    assert _checks(run) == expect  # 24 shapes far out on a slide, holes, two-part ones; 24 edited copies
    objs = read_geojson({"type": "FeatureCollection", "features": bridge["loop"]["features"]})
    assert {o.name: is_ours(o) for o in objs} == expect


def test_import_keeps_the_outlines_the_user_edited(bridge: dict) -> None:
    run = _ok(bridge["runs"]["import_keeps_edited"])
    world, loop = run["world"], bridge["loop"]
    assert _ids(world["removed"]) == {loop["unedited"]["id"]}
    assert _ids(loop["edited"]) <= _ids(world["objects"])
    assert "kept 2 camseg outline(s) you edited" in run["output"]


def test_accepted_predictions_are_exported_and_reach_the_tile_sampler(bridge: dict) -> None:
    import numpy as np
    import shapely

    from qupath_camseg.train import TrainConfig, TrainTileDataset, collect_images

    run = _ok(bridge["runs"]["accept_then_export"])
    world, loop = run["world"], bridge["loop"]
    assert _ids(world["removed"]) == _ids(loop["accepted"])  # both (one edited) and nothing else
    new = [o for o in world["added"]]
    assert len(new) == 2 and all(o["name"] is None and o["metadata"] == {} and o["measurements"] == {}
                                 and o["classification"] == "Tumor" for o in new)
    assert set(world["selected"]) == _ids(new)
    exported = read_geojson(loop["loop_proj"] / "camseg" / "annotations" / "1.geojson")
    mine = [o for o in exported if o.id in _ids(new)]
    assert len(mine) == 2 and not any(is_ours(o) for o in exported)
    assert not any(o.name in ("camseg tile", "camseg Review 1") for o in exported)
    name3 = bridge["entries"]["3"]
    data = collect_images(loop["loop_proj"], TrainConfig(mpp=2.0, tile_px=32, val_images=(name3,), workers=0))
    ds = TrainTileDataset(data.train_images, mpp=2.0, tile_px=32, seed=0, augment=None)
    hits = {o.id: 0 for o in mine}
    for i in range(600):
        idx, (x, y, w, h) = ds.sample_box(np.random.default_rng([0, i]))
        centre = shapely.Point(x + w / 2, y + h / 2)
        for o in mine:
            hits[o.id] += ds.images[idx].entry_id == "1" and o.geometry.buffer(w * 0.3).contains(centre)
    assert min(hits.values()) > 10, hits


def test_accept_only_the_selected_prediction(bridge: dict) -> None:
    run = _ok(bridge["runs"]["accept_selected"])  # QuPath 0.4 flavour
    world, loop = run["world"], bridge["loop"]
    assert len(world["removed"]) == 1 and world["removed"][0]["id"] == loop["accepted"][0]["id"]
    (new,) = world["added"]
    assert new["name"] is None and new["geometry"] == loop["accepted"][0]["geometry"]
    assert {loop["accepted"][1]["id"], loop["roi"]["id"]} <= _ids(world["objects"])


def test_accept_with_only_other_objects_selected_says_what_to_select(bridge: dict) -> None:
    run = bridge["runs"]["accept_wrong_selection"]
    assert not run["ok"] and run["errorClass"] == "CamsegProblem"
    assert "Select the camseg Tumor outlines" in run["error"] and run["world"]["removed"] == []


def test_mark_as_normal(bridge: dict) -> None:
    run = _ok(bridge["runs"]["mark_normal"])
    world, loop = run["world"], bridge["loop"]
    assert _ids(world["removed"]) == {loop["reviews"][1]["id"]}  # the camseg box is replaced...
    (new,) = world["added"]
    assert new["classification"] == "Normal" and new["name"] is None and new["metadata"] == {}
    assert new["geometry"] == loop["reviews"][1]["geometry"]
    objects = {o["id"]: o for o in world["objects"]}
    assert objects[loop["roi"]["id"]]["classification"] == "Normal"  # ...the user's own just changes class
    assert objects[loop["pred"]["id"]]["classification"] == "Tumor"
    assert set(world["selected"]) == {new["id"], loop["roi"]["id"]}
    bad = bridge["runs"]["mark_normal_nothing"]
    assert not bad["ok"] and "Select the region to mark as normal first" in bad["error"]


def _centre(feature: dict) -> list[float]:
    (ring,) = feature["geometry"]["coordinates"]
    xs, ys = [p[0] for p in ring[:-1]], [p[1] for p in ring[:-1]]
    return [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2]


def test_review_next_steps_through_the_boxes_by_rank(bridge: dict) -> None:
    run = _ok(bridge["runs"]["review"])
    rank = {int(f["properties"]["measurements"]["review rank"]): f for f in bridge["loop"]["reviews"]}
    world = run["world"]
    assert world["centered"] == [_centre(rank[1]), _centre(rank[2]), _centre(rank[3]), _centre(rank[1])]
    assert world["selected"] == [rank[1]["id"]]
    assert "camseg Review 2 (2 of 3), uncertainty 0.48" in run["output"]
    # a box marked as normal is gone: the next one is found from the rank last shown
    after = _ok(bridge["runs"]["review_after_marking"])["world"]
    assert after["centered"] == [_centre(rank[1]), _centre(rank[2]), _centre(rank[3])]
    none = bridge["runs"]["review_none"]
    assert not none["ok"] and "no camseg Review boxes" in none["error"]
