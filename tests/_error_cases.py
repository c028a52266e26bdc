"""Bad-input cases for every finished ``qcamseg`` command, shared by ``test_errors_cli.py`` (which
runs them and checks the error contract) and ``docs/errors.md`` (generated from them).

Each :class:`Case` builds its inputs in a fresh folder, returns the command line, and says what the
message must contain (the file it names and the fix). Inputs are tiny: a 2-slide 1024² synthetic
project, a 4-channel U-Net bundle, hand-written annotation files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["Case", "Ctx", "CASES", "COMMAND_ORDER"]

COMMAND_ORDER = ("convert", "import-annotations", "synth", "train", "predict", "evaluate", "figure",
                 "export-qupath", "install-scripts", "doctor", "any")


# ------------------------------------------------------------------------------ shared inputs
class _Templates:
    """Inputs built once per session and copied into each case's folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._project: Path | None = None
        self._model: Path | None = None

    def project(self) -> Path:
        if self._project is None:
            from qupath_camseg.synthetic import write_synthetic_project

            self._project = self.root / "proj"
            write_synthetic_project(self._project, slides=2, negatives=1, width=1024, height=1024,
                                    seed=3, door="files")
        return self._project

    def model(self) -> Path:
        if self._model is None:
            import torch

            from qupath_camseg.model import ModelConfig, build_model, save_bundle

            torch.manual_seed(0)
            arch = {"name": "unet", "width": 4, "depth": 2, "n_classes": 1}
            self._model = self.root / "model"
            save_bundle(self._model, build_model(arch), ModelConfig(
                arch=arch, mpp=2.0, tile_px=32, classes=[{"name": "Tumor", "color": [200, 0, 0]}]))
        return self._model


@dataclass
class Ctx:
    """What a case's setup gets: its own folder, a monkeypatch and cleanup callbacks."""

    tmp: Path
    mp: pytest.MonkeyPatch
    templates: _Templates
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def project(self, name: str = "proj") -> Path:
        """A copy of the synthetic project: images ``tumor_001.tif`` (entry 1, with Tumor
        annotations) and ``normal_002.tif`` (entry 2, none)."""
        dst = self.tmp / name
        shutil.copytree(self.templates.project(), dst)
        # the copy's URIs point into the template; re-point them at the copy
        qp = dst / "project.qpproj"
        qp.write_text(qp.read_text().replace(str(self.templates.project()), str(dst)))
        return dst

    def model(self, name: str = "model") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.templates.model(), dst)
        return dst

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def geojson(self, name: str, objs: list[Any]) -> Path:
        from qupath_camseg.annotations import write_geojson

        return write_geojson(self.tmp / name, objs)

    def predictions(self, project: Path, entry_id: str = "1", classification: str = "Tumor") -> Path:
        """Predictions for an entry: its ground truth, marked as ours (as ``qcamseg predict``)."""
        from qupath_camseg.annotations import (
            CAMSEG_METADATA,
            copy_object,
            read_geojson,
            write_geojson,
        )

        truth = read_geojson(project / "camseg" / "annotations" / f"{entry_id}.geojson")
        objs = [copy_object(o, metadata=dict(CAMSEG_METADATA), classification=classification, color=None)
                for o in truth]
        return write_geojson(project / "camseg" / "predictions" / f"{entry_id}.geojson", objs)

    def hold_lock(self, project: Path, lock: str = "camseg/camseg.lock") -> None:
        """Another process holds the project's lock (as a running ``qcamseg`` would)."""
        code = ("import sys, time\nfrom qupath_camseg._io import file_lock\n"
                "with file_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(project / lock)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"

        def stop() -> None:
            proc.kill()
            proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]

        self.cleanups.append(stop)

    def no_qupath(self) -> None:
        """Simulate a machine without QuPath (paquo's finder finds none), wherever it is asked."""
        import qupath_camseg.predict.project as predict_project
        import qupath_camseg.qupath.doors as doors
        import qupath_camseg.qupath.paquo_project as paquo_project

        def none() -> tuple[None, str]:
            return None, "paquo found no QuPath (simulated); install QuPath or use --door files"

        for module in (paquo_project, doors, predict_project):
            self.mp.setattr(module, "find_qupath_installation", none)

    def machine_with(self, gib: int) -> None:
        """Simulate a machine with ``gib`` GiB of memory available (CPU and GPU alike)."""
        import qupath_camseg._runtime as runtime

        self.mp.setattr(runtime, "available_memory", lambda device="cpu": gib << 30)

    def fail_os(self, target: str, err: int, *, only: Callable[..., bool] | None = None) -> None:
        """Make ``os.<target>`` (``replace``/``fsync``) or ``tempfile.mkstemp`` fail with ``err``,
        simulating a full disk or a folder we may not write (CI runs as root)."""
        owner = tempfile if target == "mkstemp" else os
        real = getattr(owner, target)

        def failing(*args: Any, **kwargs: Any) -> Any:
            if only is None or only(*args, **kwargs):
                raise OSError(err, os.strerror(err))
            return real(*args, **kwargs)

        self.mp.setattr(owner, target, failing)


@dataclass
class Case:
    """One bad input. ``setup(ctx)`` returns the ``qcamseg`` arguments; ``expect``: substrings of
    the message (the file it names and the fix); ``level``: ``error`` (exit 2, one ``error:`` line),
    ``warning`` (exit 0, a ``warning:``/``note:`` line) or ``report`` (doctor: exit 1, a stdout
    line). ``ignore``: path prefixes (relative to the case folder) allowed to change."""

    id: str
    command: str
    situation: str
    todo: str
    setup: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]
    level: str = "error"
    usage: bool = False  # a click usage error: no traceback to show under --debug
    ignore: tuple[str, ...] = ()
    after: Callable[[Ctx], None] | None = None  # extra checks after the run
    xfail: str | None = None  # a known gap, reported to the lead (strict: fixing it fails the test)


CASES: list[Case] = []


def case(id: str, command: str, situation: str, todo: str, *expect: str, **kw: Any) -> Callable[[Callable[[Ctx], list[str]]], Callable[[Ctx], list[str]]]:
    def register(fn: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
        CASES.append(Case(id, command, situation, todo, fn, tuple(expect), **kw))
        return fn

    return register


def _deep(ctx: Ctx) -> Path:
    """A copy of the project whose project.qpproj holds a list nested 100,000 levels deep."""
    proj = ctx.project()
    qp = proj / "project.qpproj"
    text = qp.read_text()
    qp.write_text(text[: text.rindex("}")] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return proj


# ------------------------------------------------------------------------------ annotation files
def _fc(*geometries: dict[str, Any], cls: str = "Tumor") -> str:
    feats = [{"type": "Feature", "geometry": g,
              "properties": {"objectType": "annotation", "classification": {"name": cls, "color": [200, 0, 0]}}}
             for g in geometries]
    return json.dumps({"type": "FeatureCollection", "features": feats})


def _poly(*pts: tuple[float, float]) -> dict[str, Any]:
    ring = [list(p) for p in pts] + [list(pts[0])]
    return {"type": "Polygon", "coordinates": [ring]}


_SQUARE = _poly((100, 100), (300, 100), (300, 300), (100, 300))
_ASAP_HEAD = '<?xml version="1.0"?>\n'
_ASAP = ('<ASAP_Annotations><Annotations><Annotation Name="A" Type="Polygon" PartOfGroup="Tumor">'
         '<Coordinates><Coordinate Order="0" X="10" Y="10"/><Coordinate Order="1" X="90" Y="10"/>'
         '<Coordinate Order="2" X="90" Y="90"/></Coordinates></Annotation></Annotations>'
         '<AnnotationGroups/></ASAP_Annotations>')


def _out(ctx: Ctx, name: str = "out.geojson") -> str:
    return str(ctx.tmp / name)


# ==================================================================================== convert
@case("convert-missing-input", "convert", "the annotation file does not exist", "check the path",
      "none.xml", "not found")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.tmp / "none.xml"), _out(ctx)]


@case("convert-unknown-extension", "convert", "input is neither .xml nor .geojson/.json",
      "rename it, or export it again from QuPath / ASAP", "notes.txt", ".geojson/.json")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("notes.txt", "hello")), _out(ctx)]


@case("convert-malformed-xml", "convert", "ASAP XML cut off or hand-edited badly",
      "export the annotations from ASAP again", "cut.xml", "malformed XML", "export the annotations")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("cut.xml", _ASAP_HEAD + _ASAP[:150])), _out(ctx)]


@case("convert-billion-laughs", "convert", "XML with an entity bomb (billion laughs)",
      "do not use the file; export the annotations from ASAP again", "laughs.xml", "refused unsafe XML")
def _(ctx: Ctx) -> list[str]:
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
            + ']>\n<ASAP_Annotations><Annotations><Annotation Name="&lol9;"/></Annotations></ASAP_Annotations>')
    return ["convert", str(ctx.write("laughs.xml", bomb)), _out(ctx)]


@case("convert-external-entity", "convert", "XML with an external entity (XXE: reads local files)",
      "do not use the file; export the annotations from ASAP again", "xxe.xml", "refused unsafe XML")
def _(ctx: Ctx) -> list[str]:
    secret = ctx.write("secret.txt", "password")
    xxe = (f'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>\n'
           '<ASAP_Annotations><Annotations><Annotation Name="&x;"/></Annotations></ASAP_Annotations>')
    return ["convert", str(ctx.write("xxe.xml", xxe)), _out(ctx)]


@case("convert-not-asap-xml", "convert", "XML that is not ASAP's (e.g. an SVG or Aperio XML)",
      "convert it to ASAP XML or QuPath GeoJSON first", "drawing.xml", "not an ASAP annotation file")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("drawing.xml", '<svg xmlns="http://www.w3.org/2000/svg"/>')), _out(ctx)]


@case("convert-xml-nan", "convert", "ASAP coordinate that is not a number", "fix or delete that annotation in ASAP",
      "nan.xml", "annotation 0", "not a finite level-0")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("nan.xml", _ASAP.replace('X="90" Y="90"', 'X="nan" Y="90"'))), _out(ctx)]


@case("convert-geojson-nan", "convert", "GeoJSON with NaN coordinates", "redraw or delete that object",
      "nan.geojson", "feature 0", "NaN or infinite coordinate")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("nan.geojson", _fc(_poly((0, 0), (float("nan"), 5), (5, 5))))),
            _out(ctx, "o.xml")]


@case("convert-geojson-wrong-type", "convert", "GeoJSON geometry type QuPath does not know (e.g. Circle)",
      "export the objects from QuPath (File > Export objects as GeoJSON)", "circle.geojson", "unknown geometry type")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("circle.geojson", _fc({"type": "Circle", "coordinates": [1, 2]}))),
            _out(ctx, "o.xml")]


@case("convert-geojson-string-coords", "convert", "GeoJSON coordinates written as strings",
      "export the objects from QuPath again", "strings.geojson", "is not a number")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("strings.geojson", _fc({"type": "Point", "coordinates": ["10", "20"]}))),
            _out(ctx, "o.xml")]


@case("convert-not-geojson", "convert", "JSON that is not GeoJSON at all", "pick the exported GeoJSON file",
      "settings.json", "not GeoJSON", "Export objects as GeoJSON")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("settings.json", '{"threshold": 0.5}')), _out(ctx, "o.xml")]


@case("convert-not-json", "convert", "a .geojson file that is not JSON", "export the objects from QuPath again",
      "broken.geojson", "not valid JSON")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("broken.geojson", '{"type": "FeatureCollection", "features": [')), _out(ctx, "o.xml")]


@case("convert-class-name-not-text", "convert", "a classification name that is a number or an object",
      'write it as "name": "Tumor"', "feature 0", "is not a class name")
def _(ctx: Ctx) -> list[str]:
    bad = json.loads(_fc(_SQUARE))
    bad["features"][0]["properties"]["classification"] = {"name": {"a": 1}}
    return ["convert", str(ctx.write("odd.geojson", json.dumps(bad))), _out(ctx, "o.xml")]


@case("convert-huge-coordinates", "convert", "coordinates beyond any slide (1e12 px)",
      "use level-0 pixel coordinates", "huge.geojson", "beyond ±1e9 px")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("huge.geojson", _fc(_poly((0, 0), (1e12, 0), (1e12, 1e12))))), _out(ctx, "o.xml")]


@case("convert-zero-area", "convert", "only zero-area polygons (a line drawn as a polygon)",
      "redraw the outlines", "flat.geojson", "nothing to convert", "no area")
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("flat.geojson", _fc(_poly((0, 0), (10, 10), (20, 20))))), _out(ctx, "o.xml")]


@case("convert-self-intersecting", "convert", "self-intersecting (bow-tie) polygon",
      "nothing; check the repaired outline in QuPath", "repaired with make_valid", level="warning",
      ignore=("o.xml",))
def _(ctx: Ctx) -> list[str]:
    return ["convert", str(ctx.write("bowtie.geojson", _fc(_poly((0, 0), (100, 100), (100, 0), (0, 100))))),
            _out(ctx, "o.xml")]


@case("convert-output-exists", "convert", "OUT already exists", "pass --overwrite or choose another OUT",
      "old.geojson", "--overwrite")
def _(ctx: Ctx) -> list[str]:
    ctx.write("old.geojson", _fc(_SQUARE))
    return ["convert", str(ctx.write("in.xml", _ASAP)), str(ctx.tmp / "old.geojson")]


@case("convert-not-writable", "convert", "output folder not writable (permission denied)",
      "choose a folder you can write to", "out.geojson", "cannot write", "permissions")
def _(ctx: Ctx) -> list[str]:
    ctx.fail_os("replace", errno.EACCES)
    return ["convert", str(ctx.write("in.xml", _ASAP)), _out(ctx)]


@case("convert-disk-full", "convert", "disk full while writing", "free disk space or write elsewhere",
      "out.geojson", "disk full", "free disk space")
def _(ctx: Ctx) -> list[str]:
    ctx.fail_os("fsync", errno.ENOSPC)
    return ["convert", str(ctx.write("in.xml", _ASAP)), _out(ctx)]


# ========================================================================= import-annotations
def _import(ctx: Ctx, project: Path, file: Path, image: str = "tumor_001.tif") -> list[str]:
    return ["import-annotations", str(project), str(file), "--image", image, "--door", "files"]


@case("import-missing-project", "import-annotations", "PROJECT is not a QuPath project",
      "pass the project folder or its project.qpproj", "nowhere/project.qpproj", "no QuPath project")
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.tmp / "nowhere", ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-missing-file", "import-annotations", "the annotation file does not exist", "check the path",
      "missing.geojson", "does not exist", "--help", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.project(), ctx.tmp / "missing.geojson")


@case("import-unknown-image", "import-annotations", "no such image in the project",
      "use an image name or entry ID from the list", "tumor_999", "images: 'tumor_001.tif'")
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.project(), ctx.write("a.geojson", _fc(_SQUARE)), image="tumor_999")


@case("import-empty-file", "import-annotations", "a GeoJSON file without objects",
      "export the annotations again (File > Export objects as GeoJSON)", "empty.geojson", "holds no annotations")
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.project(), ctx.write("empty.geojson", '{"type": "FeatureCollection", "features": []}'))


@case("import-corrupt-project", "import-annotations", "project.qpproj is damaged (not JSON)",
      "restore it from QuPath's project.qpproj.backup or camseg/backups", "project.qpproj", "not valid JSON",
      "restore it")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    qp = proj / "project.qpproj"
    (proj / "project.qpproj.backup").write_text(qp.read_text())  # QuPath keeps one when it saves
    qp.write_text(qp.read_text()[:200])
    return _import(ctx, proj, ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-empty-project-file", "import-annotations", "project.qpproj is empty (0 bytes) and there is no backup",
      "re-create the project in QuPath (no backup exists to restore)", "project.qpproj", "not valid JSON",
      "no backup of it exists", "re-create the project")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    (proj / "project.qpproj").write_bytes(b"")
    return _import(ctx, proj, ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-deeply-nested-project", "import-annotations", "a crafted project.qpproj nested 100,000 levels deep",
      "restore the project from a backup or re-create it in QuPath", "project.qpproj", "nested too deeply")
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, _deep(ctx), ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-locked", "import-annotations", "another qcamseg command is writing to the project",
      "wait for it to finish, then run again", "proj", "in use by qcamseg pid", "wait for it to finish")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.hold_lock(proj)
    return _import(ctx, proj, ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-disk-full", "import-annotations", "disk full while saving the annotations",
      "free disk space; the previous annotations are unchanged", "1.geojson", "disk full",
      ignore=("proj/camseg/backups/",))
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.fail_os("fsync", errno.ENOSPC)
    return _import(ctx, proj, ctx.write("a.geojson", _fc(_SQUARE)))


@case("import-off-slide", "import-annotations", "annotations outside the image (another slide's, or not level-0 px)",
      "check the file belongs to this image and uses level-0 pixels", "lie outside image 'tumor_001.tif'",
      "level-0", level="warning", ignore=("proj/camseg/",))
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.project(), ctx.write("far.geojson", _fc(_poly((5000, 5000), (6000, 5000), (6000, 6000)))))


@case("import-self-intersecting", "import-annotations", "self-intersecting polygon",
      "nothing; check the repaired outline in QuPath", "repaired with make_valid", level="warning",
      ignore=("proj/camseg/",))
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, ctx.project(), ctx.write("bowtie.geojson", _fc(_poly((0, 0), (100, 100), (100, 0), (0, 100)))))


@case("import-entry-id-traversal", "import-annotations", "a crafted project whose entryID is a path (../../x)",
      "re-create the project in QuPath", "images[0]", "not a QuPath entry ID", after=lambda ctx: _nothing_outside(ctx))
def _(ctx: Ctx) -> list[str]:
    return _import(ctx, _crafted(ctx, first="../../x"), ctx.write("a.geojson", _fc(_SQUARE)), image="tumor_001.tif")


# ====================================================================================== synth
@case("synth-out-is-file", "synth", "OUT_DIR is an existing file", "choose a folder name", "taken", "is a file",
      usage=True)
def _(ctx: Ctx) -> list[str]:
    return ["synth", str(ctx.write("taken", "x")), "--slides", "1", "--width", "512", "--height", "512"]


@case("synth-not-empty", "synth", "OUT_DIR holds other files", "choose a new folder or pass --overwrite",
      "busy", "is not empty", "--overwrite")
def _(ctx: Ctx) -> list[str]:
    ctx.write("busy/notes.txt", "mine")
    return ["synth", str(ctx.tmp / "busy"), "--slides", "1", "--width", "512", "--height", "512"]


def _their_project(ctx: Ctx) -> Path:
    """A QuPath project synth did not write, with QuPath's data/ for one image."""
    from qupath_camseg.qupath import create_project

    create_project(ctx.tmp / "theirs").close()
    ctx.write("theirs/data/1/data.qpdata", b"\xac\xed\x00\x05 QuPath hierarchy")
    return ctx.tmp / "theirs"


@case("synth-into-their-project", "synth", "OUT_DIR holds a QuPath project synth did not write",
      "choose a new folder (synth never replaces it)", "theirs", "did not write", "choose a new folder")
def _(ctx: Ctx) -> list[str]:
    return ["synth", str(_their_project(ctx)), "--slides", "1", "--width", "512", "--height", "512"]


@case("synth-overwrite-their-project", "synth", "--overwrite on a QuPath project synth did not write",
      "choose a new folder (--overwrite replaces only synth's own files)", "theirs", "did not write",
      "choose a new folder")
def _(ctx: Ctx) -> list[str]:
    return ["synth", str(_their_project(ctx)), "--slides", "1", "--width", "512", "--height", "512", "--overwrite"]


@case("synth-disk-full", "synth", "disk full while writing the slides",
      "free disk space; nothing half-written is left", "new/", "disk full", "free disk space")
def _(ctx: Ctx) -> list[str]:
    ctx.fail_os("fsync", errno.ENOSPC)
    return ["synth", str(ctx.tmp / "new"), "--slides", "1", "--width", "512", "--height", "512", "--door", "files"]


class _Boom:
    """Unpickling this would create ``path`` (proof that code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _pickle_bytes(ctx: Ctx) -> bytes:
    import pickle

    return pickle.dumps({"weights": _Boom(ctx.tmp / "PWNED")})


def _not_pwned(ctx: Ctx) -> None:
    assert not (ctx.tmp / "PWNED").exists(), "a pickle was unpickled"


# ============================================================ train (fails before any training)
_TINY = ["--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2", "--steps", "1", "--workers", "0"]


@case("train-missing-project", "train", "PROJECT does not exist", "pass the project folder",
      "nowhere/project.qpproj", "no QuPath project")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.tmp / "nowhere"), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-empty-project", "train", "project without images", "add images in QuPath and annotate them",
      "empty", "no annotations")
def _(ctx: Ctx) -> list[str]:
    from qupath_camseg.qupath import create_project

    create_project(ctx.tmp / "empty").close()
    return ["train", str(ctx.tmp / "empty"), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-no-annotations", "train", "project with images but no annotations",
      "outline tumour regions in QuPath and export them with the camseg scripts", "proj", "no annotations",
      "outline Tumor regions")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    for f in (proj / "camseg" / "annotations").glob("*.geojson"):
        f.write_text('{"type": "FeatureCollection", "features": []}')
    return ["train", str(proj), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-unknown-class", "train", "--classes names a class no annotation uses",
      "pass classes that are annotated (the message lists them)", "Carcinoma", "classes found: Tumor")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), "--classes", "Carcinoma", *_TINY]


@case("train-deeply-nested-project", "train", "a crafted project.qpproj nested 100,000 levels deep",
      "restore the project from a backup or re-create it in QuPath", "project.qpproj", "nested too deeply")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(_deep(ctx)), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-mpp-nan", "train", "--mpp nan (or inf)", "give a pixel size in µm/px, e.g. 0.5", "--mpp", "not a finite number",
      usage=True)
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), "--mpp", "nan"]


@case("train-huge-tile", "train", "--tile 100000 (more memory than the machine has)", "lower --tile or --batch-size",
      "tiles of 100000 px", "needs at least", "64.0 GB available", "lower --tile")
def _(ctx: Ctx) -> list[str]:
    ctx.machine_with(64)
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), *_TINY, "--tile", "100000"]


@case("train-mpp-finer-than-slides", "train", "--mpp 0.01, finer than the slides (a model predict would refuse)",
      "use --mpp at or above the slides' µm/px (0.5 is typical)", "--mpp 0.01", "finer than image", "predict refuses")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), *_TINY, "--mpp", "0.01"]


@case("train-mpp-coarser-than-a-tile", "train", "--mpp 1000: every slide smaller than one tile (0 validation tiles)",
      "use a finer --mpp (0.5 is typical) or a smaller --tile", "--mpp 1000", "smaller than one --tile",
      "use a finer --mpp")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), *_TINY, "--mpp", "1000"]


@case("train-door-paquo-without-qupath", "train", "--door paquo on a machine without QuPath",
      "install QuPath, or use --door files", "the paquo door needs QuPath", "--door files")
def _(ctx: Ctx) -> list[str]:
    ctx.no_qupath()
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), *_TINY, "--door", "paquo"]


@case("train-image-moved", "train", "image moved since the project was made",
      "put the file back, or fix the path in QuPath (Check project URIs)", "tumor_001.tif", "put the file back")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    (proj / "images").rename(ctx.tmp / "moved_images")
    return ["train", str(proj), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-stain-no-tissue", "train", "--stain-norm macenko, but the training slides show no stained tissue "
      "(blank scans, not H&E)", "train with --stain-norm none, or check the slides", "tumor_001.tif",
      "cannot fit a stain reference", "--stain-norm none")
def _(ctx: Ctx) -> list[str]:
    import tifffile

    proj = ctx.project()
    tifffile.imwrite(proj / "images" / "tumor_001.tif", np.full((1024, 1024, 3), 243, np.uint8), tile=(256, 256),
                     photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    return ["train", str(proj), "--out", str(ctx.tmp / "m"), "--stain-norm", "macenko", *_TINY]


@case("train-folder-in-use", "train", "another training run is using --out (two runs side by side)",
      "wait for it to finish, or choose another --out", "training folder", "in use by qcamseg pid",
      "wait for it to finish")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    (ctx.tmp / "m").mkdir()
    ctx.hold_lock(ctx.tmp / "m", "camseg.lock")
    return ["train", str(proj), "--out", str(ctx.tmp / "m"), *_TINY]


@case("train-resume-before-first-checkpoint", "train",
      "--resume after a run stopped before its first checkpoint (e.g. disk full)",
      "run the same command without --resume: it starts over in that folder", "m", "before its first checkpoint",
      "without --resume: qcamseg train PROJECT --out")
def _(ctx: Ctx) -> list[str]:
    ctx.write("m/train_config.json", '{"config": {}}')
    ctx.write("m/model.json", "{}")
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), *_TINY, "--resume"]


@case("train-init-mismatch", "train", "--init model works at another µm/px (or tile, classes, architecture) "
      "than an option asks for", "drop the option: a fine-tuned model keeps its parent's settings", "model",
      "--mpp 1 does not match the --init model", "drop --mpp")
def _(ctx: Ctx) -> list[str]:
    shutil.copytree(ctx.templates.model(), ctx.tmp / "model")
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), "--init", str(ctx.tmp / "model"),
            "--mpp", "1", "--steps", "1", "--workers", "0"]


@case("train-init-not-a-model", "train", "--init names a folder that holds no model",
      "pass a model folder written by qcamseg train", "runs", "has no model.json", "qcamseg train")
def _(ctx: Ctx) -> list[str]:
    (ctx.tmp / "runs").mkdir()
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), "--init", str(ctx.tmp / "runs"), *_TINY]


@case("train-screen-without-model", "train", "--screen on a folder that holds no trained model",
      "train the model first (without --screen), then add the screen", "m", "has no model.json",
      "train the model first")
def _(ctx: Ctx) -> list[str]:
    return ["train", str(ctx.project()), "--out", str(ctx.tmp / "m"), "--screen", "-q"]


# ========================================================== predict (fails before any inference)
@case("predict-missing-model", "predict", "--model does not exist", "train one with qcamseg train",
      "nomodel", "does not exist")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.tmp / "nomodel"), "--progress", "none"]


@case("predict-pickle-model", "predict", "--model is a pickled PyTorch file",
      "use a folder written by qcamseg train", "model.pt", "never unpickles", after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.write("model.pt", _pickle_bytes(ctx))),
            "--progress", "none"]


@case("predict-safetensors-is-pickle", "predict", "model.safetensors that is really a pickle",
      "use a model folder written by qcamseg train", "model.safetensors", "not a valid safetensors file",
      after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    (model / "model.safetensors").write_bytes(_pickle_bytes(ctx))
    return ["predict", str(ctx.project()), "--model", str(model), "--progress", "none"]


@case("predict-missing-project", "predict", "PROJECT (or slide) does not exist", "check the path",
      "nowhere", "does not exist")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.tmp / "nowhere"), "--model", str(ctx.model()), "--progress", "none"]


def _fine_model(ctx: Ctx) -> Path:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["mpp"] = 0.1  # finer than the slides' 0.25 µm/px
    (model / "model.json").write_text(json.dumps(cfg))
    return model


@case("predict-screen-missing", "predict", "model.json lists a screen but screen.safetensors is gone",
      "add the screen again with train --screen, or predict with --cascade off", "model",
      "screen.safetensors", "--cascade off")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["screen"] = {**{k: cfg[k] for k in ("arch", "mpp", "tile_px", "classes")}, "mpp": 4.0,
                     "weights": "screen.safetensors", "threshold": 0.2}
    (model / "model.json").write_text(json.dumps(cfg))
    return ["predict", str(ctx.project()), "--model", str(model), "--images", "tumor_001.tif", "--progress", "none"]


@case("predict-model-finer-than-slide", "predict", "model trained at a finer µm/px than the slide has",
      "use a model trained at the slide's µm/px or coarser", "tumor_001.tif", "0.1 µm/px", "0.25 µm/px")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(_fine_model(ctx)), "--images", "tumor_001.tif",
            "--progress", "none"]


@case("predict-model-stain-damaged", "predict", "the stain reference in model.json was edited by hand or damaged",
      "retrain the model, or delete the stain entry to predict without stain normalisation", "model.json",
      "stain:", "retrain the model or remove the stain entry")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["stain"] = {"method": "macenko", "stain_matrix": [[0.6, 0.7, 0.3]], "max_concentrations": [1.5, 0.5]}
    (model / "model.json").write_text(json.dumps(cfg))
    return ["predict", str(ctx.project()), "--model", str(model), "--progress", "none"]


@case("predict-empty-project", "predict", "project without images", "add images in QuPath",
      "empty", "no images")
def _(ctx: Ctx) -> list[str]:
    from qupath_camseg.qupath import create_project

    create_project(ctx.tmp / "empty").close()
    return ["predict", str(ctx.tmp / "empty"), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-project-in-use", "predict", "another qcamseg command is writing to the project",
      "wait for it to finish, then run again", "QuPath project", "in use by qcamseg pid", "wait for it to finish")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.hold_lock(proj)
    return ["predict", str(proj), "--model", str(ctx.model()), "--progress", "none"]


def _predict_args(ctx: Ctx, *extra: str) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--progress", "none", *extra]


@case("predict-slide-mpp-nan", "predict", "--slide-mpp nan", "give the scanner's pixel size in µm/px, e.g. 0.25",
      "--slide-mpp", "not a finite number", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--slide-mpp", "nan")


@case("predict-slide-mpp-inf", "predict", "--slide-mpp inf", "give the scanner's pixel size in µm/px, e.g. 0.25",
      "--slide-mpp", "not a finite number", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--slide-mpp", "inf")


@case("predict-slide-mpp-tiny", "predict", "--slide-mpp 1e-300 (or any size beyond a light microscope)",
      "give the scanner's pixel size in µm/px, e.g. 0.25", "--slide-mpp", "0.01<=x<=1000", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--slide-mpp", "1e-300")


@case("predict-threshold-nan", "predict", "--threshold nan", "give a probability in (0, 1], e.g. 0.5",
      "--threshold", "not a finite number", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--threshold", "nan")


@case("predict-overlap-nan", "predict", "--overlap nan", "give a fraction in [0, 0.5), e.g. 0.25",
      "--overlap", "not a finite number", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--overlap", "nan")


@case("predict-deeply-nested-project", "predict", "a crafted project.qpproj nested 100,000 levels deep",
      "restore the project from a backup or re-create it in QuPath", "project.qpproj", "nested too deeply")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(_deep(ctx)), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-model-huge-tile", "predict", "model.json edited to tile_px 1000000000 (would be OOM-killed)",
      "restore model.json (retrain if it was edited), or lower --batch-size", "model", "tile_px in model.json",
      "needs at least", "64.0 GB available")
def _(ctx: Ctx) -> list[str]:
    ctx.machine_with(64)
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["tile_px"] = 1_000_000_000
    (model / "model.json").write_text(json.dumps(cfg))
    return ["predict", str(ctx.project()), "--model", str(model), "--images", "tumor_001.tif", "--progress", "none"]


@case("predict-slide-mpp-0.0001", "predict", "--slide-mpp 0.0001 (a typo: 0 tiles at the model's µm/px)",
      "give the scanner's pixel size in µm/px, e.g. 0.25", "--slide-mpp", "0.01<=x<=1000", usage=True)
def _(ctx: Ctx) -> list[str]:
    return _predict_args(ctx, "--slide-mpp", "0.0001")


@case("predict-roi-off-slide", "predict", "--roi entirely outside the slide (another slide's, or not level-0 px)",
      "export the ROI from this slide, in level-0 pixels", "far.geojson", "lies outside slide tumor_001.tif",
      "level-0 pixels")
def _(ctx: Ctx) -> list[str]:
    roi = ctx.write("far.geojson", _fc(_poly((50_000, 50_000), (60_000, 50_000), (60_000, 60_000))))
    return _predict_args(ctx, "--images", "tumor_001.tif", "--roi", str(roi))


@case("predict-nan-weights", "predict", "a model whose weights are NaN (training diverged): it would find nothing",
      "retrain, or use the model folder of an earlier run", "model.safetensors", "NaN or infinite weights", "retrain")
def _(ctx: Ctx) -> list[str]:
    import torch
    from safetensors.torch import load_file, save_file

    model = ctx.model()
    state = load_file(str(model / "model.safetensors"))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, str(model / "model.safetensors"))
    return ["predict", str(ctx.project()), "--model", str(model), "--progress", "none"]


@case("predict-blank-slide", "predict", "a slide without tissue (blank glass): nothing to predict",
      "check the slide is not blank and its pixel size", "no tissue found", "nothing to predict",
      level="warning", ignore=("proj/camseg/",))
def _(ctx: Ctx) -> list[str]:
    proj = _project_with_image(ctx, lambda p: _tiff(p, np.full((512, 512, 3), 245, np.uint8), resolution=(40000, 40000),
                                                    resolutionunit="CENTIMETER"))
    return ["predict", str(proj), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-door-paquo-without-qupath", "predict", "--door paquo on a machine without QuPath",
      "install QuPath, or use --door files", "--door paquo needs QuPath", "--door files")
def _(ctx: Ctx) -> list[str]:
    ctx.no_qupath()
    return _predict_args(ctx, "--door", "paquo")


# ------------------------------------------------- crafted projects (issue 16: entry IDs, duplicates)
def _crafted(ctx: Ctx, **entry_ids: Any) -> Path:
    """A copy of the project whose images' ``entryID`` are replaced (``first=..., second=...``)."""
    proj = ctx.project()
    qp = proj / "project.qpproj"
    data = json.loads(qp.read_text())
    for image, key in zip(data["images"], ("first", "second")):
        if key in entry_ids:
            image["entryID"] = entry_ids[key]
    qp.write_text(json.dumps(data))
    return proj


def _nothing_outside(ctx: Ctx) -> None:
    for name in ("important.geojson", "important", "x.geojson"):
        assert not (ctx.tmp / name).exists() and not (ctx.tmp.parent / name).exists(), f"{name} written outside"


@case("predict-entry-id-absolute-path", "predict", "a crafted project whose entryID is a path (/tmp/x/important)",
      "re-create the project in QuPath; never run a project from an untrusted source without this check",
      "project.qpproj", "not a QuPath entry ID", "re-create the project", after=_nothing_outside)
def _(ctx: Ctx) -> list[str]:
    proj = _crafted(ctx, first=str(ctx.tmp / "important"))
    return ["predict", str(proj), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-entry-id-traversal", "predict", "a crafted project whose entryID climbs out (../../../x)",
      "re-create the project in QuPath", "images[1]", "not a QuPath entry ID", after=_nothing_outside)
def _(ctx: Ctx) -> list[str]:
    proj = _crafted(ctx, second="../../x")
    return ["predict", str(proj), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-entry-id-list", "predict", "an entryID that is a JSON list ([1])",
      "re-create the project in QuPath", "images[0]", "entryID [1]", "not a QuPath entry ID")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(_crafted(ctx, first=[1])), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-entry-id-object", "predict", 'an entryID that is a JSON object ({"a": 1})',
      "re-create the project in QuPath", "images[0]", "not a QuPath entry ID")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(_crafted(ctx, first={"a": 1})), "--model", str(ctx.model()), "--progress", "none"]


@case("predict-duplicate-entry-ids", "predict", "two images with the same entryID (one would be lost)",
      "remove one image and add it again in QuPath", "tumor_001.tif", "normal_002.tif", "same entryID 1")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(_crafted(ctx, second=1)), "--model", str(ctx.model()), "--progress", "none"]
def _png(ctx: Ctx, name: str, size: tuple[int, int], value: int = 255) -> Path:
    from PIL import Image

    path = ctx.tmp / name
    Image.new("L", size, value).save(path)
    return path


@case("predict-tissue-missing-file", "predict", "--tissue names a file that does not exist",
      "pass auto, none, or an existing GeoJSON / ASAP XML / mask image", "tissue.geojson", "no such file")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(ctx.tmp / "tissue.geojson"), "--progress", "none"]


@case("predict-tissue-unknown-kind", "predict", "--tissue file of an unknown kind (e.g. a .txt)",
      "pass a .geojson, .xml or mask image", "tissue.txt", "unknown kind")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(ctx.write("tissue.txt", "tissue")), "--progress", "none"]


@case("predict-tissue-no-polygon", "predict", "--tissue GeoJSON without any area (points only)",
      "outline the tissue in QuPath and export it", "points.geojson", "holds no area")
def _(ctx: Ctx) -> list[str]:
    pts = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]},
         "properties": {"objectType": "annotation"}}]})
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(ctx.write("points.geojson", pts)), "--progress", "none"]


@case("predict-tissue-off-slide", "predict", "--tissue outline lies outside the slide (another slide's, or not in "
      "full-resolution pixels)", "use the outline of this slide, in level-0 px", "far.geojson", "no area lies on the slide")
def _(ctx: Ctx) -> list[str]:
    far = _fc(_poly((50000, 50000), (60000, 50000), (60000, 60000)), cls="Tissue")
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(ctx.write("far.geojson", far)), "--progress", "none"]


@case("predict-tissue-mask-wrong-shape", "predict", "--tissue mask image of another slide (other aspect ratio)",
      "use the mask made for this slide", "mask_use.png", "not the slide's")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(_png(ctx, "mask_use.png", (64, 20))), "--progress", "none"]


@case("predict-tissue-mask-empty", "predict", "--tissue mask image with no tissue (all black, or inverted)",
      "tissue white on black, as HistoQC writes it", "black.png", "marks no tissue")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(_png(ctx, "black.png", (64, 64), 0)), "--progress", "none"]


@case("predict-tissue-file-for-many-images", "predict", "one --tissue file for a project run over several images",
      "select its image with --images, or pass a folder with one file per slide", "tissue.geojson", "--images")
def _(ctx: Ctx) -> list[str]:
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--tissue",
            str(ctx.write("tissue.geojson", _fc(_SQUARE, cls="Tissue"))), "--progress", "none"]


@case("predict-tissue-folder-without-file", "predict", "--tissue folder without a file for the slide",
      "add <entry ID>.geojson (or <slide name>.png, ...), or use --tissue auto", "tumor_001.tif", "has no file")
def _(ctx: Ctx) -> list[str]:
    (ctx.tmp / "masks").mkdir()
    return ["predict", str(ctx.project()), "--model", str(ctx.model()), "--images", "tumor_001.tif",
            "--tissue", str(ctx.tmp / "masks"), "--progress", "none"]


@case("predict-bad-calibration", "predict", "model.json's calibration damaged (hand-edited)",
      "retrain the model, or delete the calibration key (predict then gives the raw probabilities)",
      "model.json", "temperature must be a positive number", "delete the calibration key")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["calibration"] = {"temperature": 0, "logit_bias": [0.0, -1.0]}
    (model / "model.json").write_text(json.dumps(cfg))
    return ["predict", str(ctx.project()), "--model", str(model), "--progress", "none"]


# =================================================================================== evaluate
@case("evaluate-missing-project", "evaluate", "PROJECT does not exist", "pass the project folder",
      "nowhere/project.qpproj", "no QuPath project")
def _(ctx: Ctx) -> list[str]:
    return ["evaluate", str(ctx.tmp / "nowhere")]


@case("evaluate-empty-project", "evaluate", "project without images", "add images in QuPath", "empty/project.qpproj",
      "has no images", "Add images")
def _(ctx: Ctx) -> list[str]:
    from qupath_camseg.qupath import create_project

    create_project(ctx.tmp / "empty").close()
    return ["evaluate", str(ctx.tmp / "empty")]


@case("evaluate-deeply-nested-project", "evaluate", "a crafted project.qpproj nested 100,000 levels deep",
      "restore the project from a backup or re-create it in QuPath", "project.qpproj", "nested too deeply")
def _(ctx: Ctx) -> list[str]:
    return ["evaluate", str(_deep(ctx))]


@case("evaluate-door-paquo-without-qupath", "evaluate", "--door paquo on a machine without QuPath",
      "install QuPath, or use --door files", "the paquo door needs QuPath", "--door files")
def _(ctx: Ctx) -> list[str]:
    ctx.no_qupath()
    proj = ctx.project()
    ctx.predictions(proj)
    return ["evaluate", str(proj), "--door", "paquo"]


@case("evaluate-no-predictions", "evaluate", "nothing predicted yet", "run qcamseg predict first",
      "proj", "no predictions", "qcamseg predict")
def _(ctx: Ctx) -> list[str]:
    return ["evaluate", str(ctx.project())]


@case("evaluate-model-not-a-model", "evaluate", "--model is not a model folder",
      "pass --model with a model folder written by qcamseg train", "nothing/model.json", "cannot read",
      "--model")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    return ["evaluate", str(proj), "--model", str(ctx.tmp / "nothing")]


@case("evaluate-only-training-slides", "evaluate", "every evaluated slide was used to train the model",
      "predict slides the model never saw (or held out with --val-images) and evaluate those",
      "every evaluated slide (tumor_001.tif)", "say little about new slides", level="warning",
      ignore=("proj/camseg/reports/evaluation.json", "proj/camseg/reports/froc.png"))
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["training"] = {"project": str(proj),
                       "data": {"images": [{"name": "tumor_001.tif", "entry_id": "1", "role": "train"}]}}
    (model / "model.json").write_text(json.dumps(cfg))
    ctx.write("proj/camseg/reports/1.json", json.dumps({"status": "done", "model": {"path": str(model)}}))
    return ["evaluate", str(proj), "--images", "tumor_001.tif"]


@case("evaluate-image-moved", "evaluate", "image moved since the project was made",
      "put the file back, or fix the path in QuPath (Check project URIs)", "tumor_001.tif",
      "not found at", "put the file back")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    (proj / "images").rename(ctx.tmp / "moved_images")
    return ["evaluate", str(proj)]


def _project_with_image(ctx: Ctx, write_image: Callable[[Path], None]) -> Path:
    """A project whose entry 1 is ``images/slide.tif`` (written by ``write_image``), with
    one Tumor annotation and a prediction."""
    from shapely.geometry import box

    from qupath_camseg.annotations import QPObject
    from qupath_camseg.qupath import ImageInfo, create_project

    proj = ctx.tmp / "proj"
    image = proj / "images" / "slide.tif"
    image.parent.mkdir(parents=True)
    write_image(image)
    with create_project(proj) as p:
        e = p.add_image(image, info=ImageInfo(512, 512, ((512, 512),), None))
        p.add_annotations(e, [QPObject(geometry=box(100, 100, 300, 300), classification="Tumor")])
    ctx.predictions(proj)
    return proj


def _tiff(image: Path, arr: np.ndarray, **kw: Any) -> None:
    import tifffile

    tifffile.imwrite(image, arr, tile=(256, 256), **kw)


@case("evaluate-no-mpp", "evaluate", "slide without pixel size (µm/px) in its metadata",
      "pass --slide-mpp (e.g. 0.25), or set the pixel size when scanning", "slide.tif", "no pixel size",
      "--slide-mpp")
def _(ctx: Ctx) -> list[str]:
    return ["evaluate", str(_project_with_image(ctx, lambda p: _tiff(p, np.full((512, 512, 3), 220, np.uint8))))]


@case("evaluate-16bit-slide", "evaluate", "non-RGB slide (16-bit grey, fluorescence)",
      "convert it to 8-bit RGB, or use the scanner's original file", "slide.tif", "16-bit (uint16)", "8-bit RGB")
def _(ctx: Ctx) -> list[str]:
    arr = (np.arange(512 * 512).reshape(512, 512) % 4096).astype(np.uint16)
    return ["evaluate", str(_project_with_image(ctx, lambda p: _tiff(p, arr, resolution=(40000, 40000),
                                                                     resolutionunit="CENTIMETER")))]


@case("evaluate-multichannel-slide", "evaluate", "non-RGB slide (5 channels)",
      "convert it to 8-bit RGB, or use the scanner's original file", "slide.tif", "5 channels", "8-bit RGB")
def _(ctx: Ctx) -> list[str]:
    arr = np.full((5, 512, 512), 100, np.uint8)
    return ["evaluate", str(_project_with_image(ctx, lambda p: _tiff(p, arr, photometric="minisblack",
                                                                     planarconfig="separate")))]


@case("evaluate-corrupt-slide", "evaluate", "slide file that is not an image (damaged copy)",
      "copy the slide again from the scanner / archive", "tumor_001.tif", "cannot open as a whole-slide image",
      "complete")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    (proj / "images" / "tumor_001.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    return ["evaluate", str(proj)]


@case("evaluate-corrupt-predictions", "evaluate", "predictions file damaged", "run qcamseg predict again",
      "1.geojson", "not valid JSON")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj).write_text("{oops", encoding="utf-8")
    return ["evaluate", str(proj)]


@case("evaluate-report-not-writable", "evaluate", "the report location is not writable",
      "choose a folder you can write to (--json)", "evaluation.json", "cannot write", "permissions")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    ctx.fail_os("mkstemp", errno.EACCES)
    return ["evaluate", str(proj), "--json", str(ctx.tmp / "report" / "evaluation.json")]


@case("evaluate-unreadable-project", "evaluate", "project.qpproj cannot be read (permissions)",
      "fix the file's permissions", "project.qpproj", "Permission denied", "permissions")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    real = Path.read_text

    def read_text(self: Path, *a: Any, **k: Any) -> str:
        if self.name == "project.qpproj":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **k)

    ctx.mp.setattr(Path, "read_text", read_text)
    return ["evaluate", str(proj)]


@case("evaluate-unknown-class", "evaluate", "ground truth drawn with another class name (e.g. Carcinoma)",
      "name the tumour class Tumor in QuPath", "image 'tumor_001.tif'", "Carcinoma", "counts as a normal slide",
      level="warning", ignore=("proj/camseg/reports/",))
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj)
    f = proj / "camseg" / "annotations" / "1.geojson"
    f.write_text(f.read_text().replace('"Tumor"', '"Carcinoma"'))
    return ["evaluate", str(proj)]


@case("evaluate-model-other-classes", "evaluate", "predictions of a model trained for other classes",
      "evaluate a model trained for Tumor", "1.geojson", "Stroma", "other classes",
      level="warning", ignore=("proj/camseg/reports/",))
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.predictions(proj, classification="Stroma")
    return ["evaluate", str(proj)]


# ===================================================================================== figure
@case("figure-unknown-image", "figure", "no such image in the project", "use a name from the list",
      "Tumor_9", "no image", "images:")
def _(ctx: Ctx) -> list[str]:
    return ["figure", str(ctx.project()), "--image", "Tumor_9"]


@case("figure-truncated-slide", "figure", "truncated slide file (copy interrupted)",
      "copy the slide again", "tumor_001.tif", "truncated or corrupt")
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    img = proj / "images" / "tumor_001.tif"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 3])
    return ["figure", str(proj), "--image", "tumor_001.tif", "--out", str(ctx.tmp / "fig.png")]


@case("figure-bad-training-log", "figure", "--training-log is not a training history",
      "point to the model's metrics.json", "metrics.json", "metrics.json")
def _(ctx: Ctx) -> list[str]:
    return ["figure", str(ctx.project()), "--training-log", str(ctx.write("m/metrics.json", '{"epoch": 1}'))]


@case("figure-bad-region", "figure", "--region is not x,y,width,height", "give four numbers",
      "--region", "x,y,width,height", usage=True)
def _(ctx: Ctx) -> list[str]:
    return ["figure", str(ctx.project()), "--image", "tumor_001.tif", "--region", "0,0,-5,10"]


@case("figure-region-off-slide", "figure", "--region wholly outside the slide", "give x,y,width,height inside the slide",
      "--region", "lies outside tumor_001.tif", "inside the slide")
def _(ctx: Ctx) -> list[str]:
    return ["figure", str(ctx.project()), "--image", "tumor_001.tif", "--region", "1000000,1000000,5000,5000",
            "--out", str(ctx.tmp / "fig.png")]


# ============================================================================== export-qupath
@case("export-missing-model", "export-qupath", "MODEL_DIR does not exist", "train one with qcamseg train",
      "nomodel", "does not exist", "qcamseg train")
def _(ctx: Ctx) -> list[str]:
    return ["export-qupath", str(ctx.tmp / "nomodel")]


@case("export-pickle-file", "export-qupath", "a pickled PyTorch file (model.pt) instead of a model folder",
      "pass a folder written by qcamseg train (model.safetensors + model.json)", "model.pt",
      "never unpickles", after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    return ["export-qupath", str(ctx.write("model.pt", _pickle_bytes(ctx)))]


@case("export-only-pickle", "export-qupath", "a model folder holding only pickled weights",
      "pass a folder written by qcamseg train", "downloaded", "only pickle-based weights", after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    ctx.write("downloaded/model.pth", _pickle_bytes(ctx))
    return ["export-qupath", str(ctx.tmp / "downloaded")]


@case("export-safetensors-is-pickle", "export-qupath", "model.safetensors that is really a pickle",
      "use a model folder written by qcamseg train", "model.safetensors", "not a valid safetensors file",
      "never pickles", after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    (model / "model.safetensors").write_bytes(_pickle_bytes(ctx))
    return ["export-qupath", str(model), "--out", str(ctx.tmp / "q")]


@case("export-safetensors-is-zip", "export-qupath", "model.safetensors that is really a torch.save zip",
      "use a model folder written by qcamseg train", "model.safetensors", "not a valid safetensors file",
      after=_not_pwned)
def _(ctx: Ctx) -> list[str]:
    import io

    import torch

    model = ctx.model()
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    (model / "model.safetensors").write_bytes(buf.getvalue())
    return ["export-qupath", str(model), "--out", str(ctx.tmp / "q")]


@case("export-other-classes", "export-qupath", "model.json lists other classes than the weights were trained for",
      "use the model.json that came with the weights (retrain if lost)", "model.safetensors",
      "does not match the architecture", "mixes two models")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["classes"] = [{"name": "Tumor", "color": [200, 0, 0]}, {"name": "Stroma", "color": [0, 200, 0]}]
    cfg["arch"]["n_classes"] = 2
    (model / "model.json").write_text(json.dumps(cfg))
    return ["export-qupath", str(model), "--out", str(ctx.tmp / "q")]


@case("export-bad-mpp", "export-qupath", "model.json without a valid training pixel size",
      "restore model.json from the training output", "model.json", "mpp must be a positive number")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    cfg = json.loads((model / "model.json").read_text())
    cfg["mpp"] = -1
    (model / "model.json").write_text(json.dumps(cfg))
    return ["export-qupath", str(model), "--out", str(ctx.tmp / "q")]


@case("export-huge-tile-px", "export-qupath", "--tile-px 100000 (more memory than the machine has)",
      "choose a --tile-px of 256-1024", "--tile-px 100000", "needs at least", "64.0 GB available")
def _(ctx: Ctx) -> list[str]:
    ctx.machine_with(64)
    return ["export-qupath", str(ctx.model()), "--out", str(ctx.tmp / "q"), "--tile-px", "100000"]


@case("export-into-missing-project", "export-qupath", "--into-project is not a QuPath project",
      "pass a QuPath project folder", "noproj", "no project.qpproj")
def _(ctx: Ctx) -> list[str]:
    return ["export-qupath", str(ctx.model()), "--out", str(ctx.tmp / "q"), "--into-project", str(ctx.tmp / "noproj")]


@case("export-into-locked-project", "export-qupath", "another qcamseg command is writing to the project",
      "wait for it to finish, then run again", "proj", "in use by qcamseg pid", "wait for it to finish",
      ignore=("q/",))
def _(ctx: Ctx) -> list[str]:
    proj = ctx.project()
    ctx.hold_lock(proj)
    return ["export-qupath", str(ctx.model()), "--out", str(ctx.tmp / "q"), "--into-project", str(proj)]


@case("export-out-not-writable", "export-qupath", "--out cannot be created (permissions)",
      "choose a folder you can write to", "q", "cannot create", "--out")
def _(ctx: Ctx) -> list[str]:
    model = ctx.model()
    real = Path.mkdir

    def mkdir(self: Path, *a: Any, **k: Any) -> None:
        if self == ctx.tmp / "q":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real(self, *a, **k)

    ctx.mp.setattr(Path, "mkdir", mkdir)
    return ["export-qupath", str(model), "--out", str(ctx.tmp / "q")]


# ============================================================================ install-scripts
@case("install-scripts-dir-is-file", "install-scripts", "--dir is a file", "choose a folder",
      "scripts.txt", "is a file", usage=True)
def _(ctx: Ctx) -> list[str]:
    return ["install-scripts", "--dir", str(ctx.write("scripts.txt", "x"))]


@case("install-scripts-no-qupath", "install-scripts", "QuPath was never started (no ~/QuPath/v0.N)",
      "start QuPath once, or pass --dir", "QuPath", "start QuPath once", "--dir")
def _(ctx: Ctx) -> list[str]:
    ctx.mp.setenv("HOME", str(ctx.tmp / "home"))
    (ctx.tmp / "home").mkdir()
    return ["install-scripts"]


@case("install-scripts-not-writable", "install-scripts", "the scripts folder is not writable",
      "choose another --dir or fix its permissions", "camseg_", "cannot write", "permissions")
def _(ctx: Ctx) -> list[str]:
    (ctx.tmp / "scripts").mkdir()
    ctx.fail_os("mkstemp", errno.EACCES)
    return ["install-scripts", "--dir", str(ctx.tmp / "scripts")]


# ===================================================================================== doctor
@case("doctor-temp-not-writable", "doctor", "the temp folder is not writable", "set TMPDIR to a writable folder",
      "temp folder", "NOT writable", "set TMPDIR", level="report")
def _(ctx: Ctx) -> list[str]:
    def refuse(*a: Any, **k: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    ctx.mp.setattr(tempfile, "NamedTemporaryFile", refuse)
    return ["doctor"]


# ======================================================================================== any
@case("unknown-command", "any", "a mistyped command", "see qcamseg --help", "evalute", "No such command",
      "qcamseg --help", usage=True)
def _(ctx: Ctx) -> list[str]:
    return ["evalute", "x"]


@contextlib.contextmanager
def make_ctx(tmp: Path, templates: _Templates) -> Iterator[Ctx]:
    with pytest.MonkeyPatch.context() as mp:
        ctx = Ctx(tmp, mp, templates)
        try:
            yield ctx
        finally:
            for fn in reversed(ctx.cleanups):
                fn()
