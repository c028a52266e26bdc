"""The paquo door: finding QuPath, refusing clearly without it, and paquo 0.9 API conformance.

Tests that need a real QuPath (a JVM) skip with the answer of paquo's own finder; everything
else runs here. The API test runs in a subprocess under ``PAQUO_MOCK_BACKEND=1`` so that
importing paquo's classes cannot touch this test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qupath_camseg.errors import QuPathNotFoundError
from qupath_camseg.qupath import PAQUO_API, find_qupath_installation

REPO = Path(__file__).resolve().parents[2]
QUPATH_DIR, QUPATH_REASON = find_qupath_installation()
needs_qupath = pytest.mark.skipif(QUPATH_DIR is None, reason=f"needs QuPath for paquo: {QUPATH_REASON}")
without_qupath = pytest.mark.skipif(QUPATH_DIR is not None, reason=f"QuPath is installed ({QUPATH_REASON})")

# The checker runs in a clean interpreter with paquo's mock backend: it resolves every name in
# PAQUO_API to paquo's real callable and binds each call found in the given source to it.
_CHECKER = textwrap.dedent(
    """
    import ast, importlib, inspect, json, sys
    source_path, api_json = sys.argv[1], sys.argv[2]
    api = json.loads(api_json)
    tree = ast.parse(open(source_path, encoding="utf-8").read())
    def resolve(target):
        mod, qual = target.split(":")
        obj = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return obj, "." in qual and not inspect.isclass(obj)
    problems, seen = [], set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name not in api:
            continue
        seen.add(name)
        where = f"line {node.lineno}: {name}"
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            problems.append(f"{where} uses *args/**kwargs, which cannot be checked")
            continue
        obj, is_method = resolve(api[name])
        sig = inspect.signature(obj)
        args = [None] * (len(node.args) + (1 if is_method else 0))
        kwargs = {k.arg: None for k in node.keywords}
        try:
            sig.bind(*args, **kwargs)
        except TypeError as err:
            problems.append(f"{where}{sig}: {err}")
    unused = sorted(set(api) - seen)
    print(json.dumps({"problems": problems, "unused": unused, "checked": sorted(seen)}))
    """
)


def _check_source(path: Path, api: dict[str, str]) -> dict[str, list[str]]:
    env = dict(os.environ, PAQUO_MOCK_BACKEND="1")
    proc = subprocess.run(
        [sys.executable, "-c", _CHECKER, str(path), json.dumps(api)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_paquo_call_binds_to_paquo_09_signatures() -> None:
    import paquo

    assert paquo.__version__.startswith("0.9"), f"API table written against paquo 0.9, found {paquo.__version__}"
    source = REPO / "qupath_camseg" / "qupath" / "paquo_project.py"
    result = _check_source(source, PAQUO_API)
    assert result["problems"] == []
    # every table entry is really called (a stale entry would hide an unchecked call)
    assert result["unused"] == []
    assert {"QuPathProject", "add_annotation", "add_detection", "add_tile", "save"} <= set(result["checked"])


def test_checker_catches_a_call_that_does_not_match_paquo(tmp_path: Path) -> None:
    bad = tmp_path / "bad_door.py"
    bad.write_text(
        "def f(h, geom, pc):\n"
        "    h.add_annotation(geom, klass=pc)\n"  # paquo's keyword is path_class
        "    h.add_tile(geom, pc, {}, 0.5)\n"  # path_class_probability is keyword-only
        "    QuPathProject('p', mode='r', readonly=True)\n",
        encoding="utf-8",
    )
    result = _check_source(bad, PAQUO_API)
    assert len(result["problems"]) == 3, result


def test_find_qupath_installation_agrees_with_paquo_finder() -> None:
    from paquo import settings
    from paquo._config import to_kwargs
    from paquo.jpype_backend import find_qupath

    kwargs = to_kwargs(settings)
    try:
        find_qupath(**kwargs)
        paquo_finds = not kwargs.get("mock_backend")
    except (ValueError, FileNotFoundError):
        paquo_finds = False
    assert (QUPATH_DIR is not None) == paquo_finds
    if QUPATH_DIR is None:
        assert "PAQUO_QUPATH_DIR" in QUPATH_REASON and "install QuPath" in QUPATH_REASON


def test_bad_paquo_qupath_dir_is_reported_with_the_setting(tmp_path: Path) -> None:
    code = "from qupath_camseg.qupath.paquo_project import find_qupath_installation as f; import json; print(json.dumps(f()[1]))"
    env = dict(os.environ, PAQUO_QUPATH_DIR=str(tmp_path / "not-qupath"))
    env.pop("PAQUO_MOCK_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    reason = json.loads(proc.stdout)
    assert "PAQUO_QUPATH_DIR=" in reason and "not-qupath" in reason and "not a usable QuPath" in reason


@without_qupath
def test_paquo_door_without_qupath_raises_with_fix(tmp_path: Path) -> None:
    from qupath_camseg.qupath import create_project, open_project

    create_project(tmp_path / "p").close()
    with pytest.raises(QuPathNotFoundError, match="PAQUO_QUPATH_DIR"):
        open_project(tmp_path / "p", door="paquo")
    # auto falls back to the QuPath-free door
    with open_project(tmp_path / "p", door="auto") as p:
        assert p.door == "files"


@needs_qupath
def test_paquo_door_round_trip_keeps_user_objects(tmp_path: Path) -> None:  # pragma: no cover - needs QuPath
    from shapely.geometry import box

    from qupath_camseg.annotations import CAMSEG_METADATA, QPObject, is_ours
    from qupath_camseg.qupath import open_project
    from qupath_camseg.synthetic import write_synthetic_project

    out = tmp_path / "proj"
    write_synthetic_project(out, slides=1, width=2048, height=2048, seed=3, door="paquo")
    with open_project(out, "r", door="files") as fp:
        entry = fp.entries[0]
        truth = fp.read_annotations(entry)
    with open_project(out, "r+", door="paquo") as pq:
        got = pq.read_annotations(entry.image_name)
        assert len(got) == len(truth)
        assert all(not is_ours(o) and o.classification == "Tumor" for o in got)  # ground truth
        area = sum(o.geometry.area for o in truth)
        assert abs(sum(o.geometry.area for o in got) - area) < 1e-3 * area
        user = QPObject(geometry=box(10, 10, 50, 50), classification="Stroma", name="mine")
        pq.add_annotations(entry.image_name, [user])
        ours = QPObject(geometry=box(100, 100, 150, 150), classification="Tumor",
                        measurements={"p": 0.5}, metadata=dict(CAMSEG_METADATA), object_type="detection")
        pq.write_objects(entry.image_name, [ours])
    with open_project(out, "r", door="paquo") as pq:
        anns = pq.read_annotations(entry.image_name)
        assert sorted(o.name for o in anns) == sorted([o.name for o in truth] + ["mine"])
        assert not any(is_ours(o) for o in anns)  # ours went in as a detection
    assert list((out / "camseg" / "backups").iterdir())


def test_objects_read_through_paquo_are_ours_by_name_only() -> None:
    """paquo exposes no object metadata: the shared rule's name fallback decides (``camseg ...``)."""
    from types import SimpleNamespace

    from shapely.geometry import box

    from qupath_camseg.annotations import is_ours
    from qupath_camseg.qupath.paquo_project import _to_qpobject

    def paquo_object(name: str | None) -> SimpleNamespace:  # test double for a paquo path object
        return SimpleNamespace(path_class=None, name=name, measurements={"p": 0.5}, roi=box(0, 0, 5, 5), locked=False)

    tile = _to_qpobject(paquo_object("camseg tile"), "tile")
    assert is_ours(tile) and tile.name == "camseg tile" and tile.measurements == {"p": 0.5}
    assert is_ours(_to_qpobject(paquo_object("camseg Tumor"), "annotation"))
    assert not any(is_ours(_to_qpobject(paquo_object(n), "annotation")) for n in ("Tumor 1", None, "Tumor [camseg]"))


# ---------------------------------------------------------------- issue 16 point 11: derived classes
_DERIVED = textwrap.dedent(
    """
    import json
    import paquo.classes as classes
    real = classes.QuPathPathClass
    calls = []
    class Recording(real):  # paquo's own class (its checks run), recording how it is called
        def __init__(self, name, color=None, parent=None, **kw):
            calls.append([name, getattr(parent, "recorded_name", None), color is not None])
            try:
                super().__init__(name, color=color, parent=parent, **kw)
            except TypeError:  # the mock backend has no java.lang.String; paquo's name check ran first
                pass
            self.recorded_name = name
    classes.QuPathPathClass = Recording
    from qupath_camseg.qupath.paquo_project import path_class
    path_class("Tumor: Positive", (200, 0, 0))
    path_class("Stroma")
    try:
        real("Tumor: Positive")
        refused = False
    except ValueError:
        refused = True
    print(json.dumps({"calls": calls, "paquo_refuses_colon": refused}))
    """
)


def test_derived_classes_are_built_part_by_part_through_paquo() -> None:
    """paquo's QuPathPathClass refuses ':' in a name, so "Tumor: Positive" used to fail the paquo
    door; it is now Positive with parent Tumor. Runs paquo's real class under its mock backend."""
    env = dict(os.environ, PAQUO_MOCK_BACKEND="1")
    proc = subprocess.run([sys.executable, "-c", _DERIVED], capture_output=True, text=True, env=env, timeout=120,
                          cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["paquo_refuses_colon"]
    assert out["calls"] == [["Tumor", None, True], ["Positive", "Tumor", True], ["Stroma", None, True]]


def test_derived_class_names_are_read_back_whole() -> None:
    """paquo's ``.name`` is the last part of a derived class ("Positive"); ``.id`` is the whole."""
    from shapely.geometry import box

    from qupath_camseg.qupath.paquo_project import _to_qpobject

    class PathClass:
        id, name, color = "Tumor: Positive", "Positive", None

    class PathObject:
        path_class, name, measurements, roi, locked = PathClass(), "a", {}, box(0, 0, 4, 4), False

    assert _to_qpobject(PathObject(), "annotation").classification == "Tumor: Positive"
