"""Library-wide safety invariants (issue 9, item 2).

* Every file the package writes goes through ``qupath_camseg._io`` (temp file + rename): a static
  scan of the package for direct writes (``open(..., "w")``, ``Path.write_text``/``write_bytes``,
  ``torch.save``/``np.save``/``savefig``/``imwrite``/``json.dump`` to a path).
* A QuPath project file is backed up, byte for byte, before we change it.
* Rewriting our objects never drops or changes the user's objects.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from shapely.geometry import box

from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    QPObject,
    is_ours,
    read_geojson,
    write_geojson,
)
from qupath_camseg.qupath import create_project, open_project

PACKAGE = Path(__file__).resolve().parents[1] / "qupath_camseg"

#: (file, line text fragment) of direct writes that are deliberate, with the reason.
ALLOWED = {
    ("_io.py", 'open(path, "a+")'): "the lock file itself (its content is informational)",
}
_WRITE_METHODS = {"write_text", "write_bytes"}
_WRITE_FUNCS = {"save", "savefig", "imwrite", "imsave", "dump", "savez", "savez_compressed", "to_file"}


def _mode(call: ast.Call) -> str | None:
    args = list(call.args[1:2]) + [k.value for k in call.keywords if k.arg == "mode"]
    for a in args:
        if isinstance(a, ast.Constant) and isinstance(a.value, str):
            return a.value
    return None


def _direct_writes(path: Path, *, root: Path = PACKAGE.parent) -> list[str]:
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    found = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        bad = False
        if name == "open" and (m := _mode(node)) is not None and any(c in m for c in "wax+"):
            bad = True
        elif name in _WRITE_METHODS:
            bad = True
        elif name in _WRITE_FUNCS and node.args:
            # writing into an in-memory buffer or an already-open atomic handle is fine
            bad = not any(isinstance(a, ast.Name) and a.id in {"buf", "fh", "handle"} for a in node.args[:2])
        if bad:
            line = lines[node.lineno - 1].strip()
            if not any(path.name == f and frag in line for f, frag in ALLOWED):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {line}")
    return found


def test_every_write_is_atomic() -> None:
    found = [w for p in sorted(PACKAGE.rglob("*.py")) for w in _direct_writes(p)]
    assert not found, "write through qupath_camseg._io.atomic_write* instead:\n" + "\n".join(found)


def test_scan_catches_direct_writes(tmp_path: Path) -> None:
    """The scan is not vacuous: it flags each kind of direct write, and not reads or buffers."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        'open(p, "w")\nPath(p).write_text("x")\ntorch.save(state, "m.pt")\nfig.savefig(png)\n'
        'json.dump(obj, f)\nopen(p)\nopen(p, "rb")\ntorch.save(state, buf)\n',
        encoding="utf-8",
    )
    found = [w.split(": ", 1)[1] for w in _direct_writes(sample, root=tmp_path)]
    assert found == ['open(p, "w")', 'Path(p).write_text("x")', 'torch.save(state, "m.pt")', "fig.savefig(png)",
                     "json.dump(obj, f)"]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    from qupath_camseg.synthetic import write_synthetic_slide

    folder = tmp_path / "proj"
    image = tmp_path / "slide.tif"
    write_synthetic_slide(image, width=512, height=512, seed=1)
    with create_project(folder) as p:
        entry = p.add_image(image)
        p.add_annotations(entry, [QPObject(geometry=box(10, 10, 100, 100), classification="Tumor", name="mine"),
                                  QPObject(geometry=box(200, 200, 300, 260), classification="Stroma", locked=True)])
    return folder


def test_project_file_is_backed_up_byte_for_byte_before_a_change(project: Path, tmp_path: Path) -> None:
    qpproj = (project / "project.qpproj").read_bytes()
    annotations = (project / "camseg" / "annotations" / "1.geojson").read_bytes()
    with open_project(project, "r+", door="files") as p:
        p.add_image(tmp_path / "slide.tif", name="again.tif")
        p.add_annotations("slide.tif", [QPObject(geometry=box(0, 0, 5, 5), classification="Tumor")])
    backups = project / "camseg" / "backups"
    assert [b.read_bytes() for b in backups.glob("project.qpproj.*.bak")] == [qpproj]
    assert [b.read_bytes() for b in backups.glob("1.geojson.*.bak")] == [annotations]
    assert not list(backups.glob(".*.tmp"))


def test_rewriting_our_objects_keeps_the_users_objects(project: Path) -> None:
    f = project / "camseg" / "annotations" / "1.geojson"
    users = {o.id: o for o in read_geojson(f)}
    ours = [QPObject(geometry=box(50, 50, 80, 80), classification="Tumor", metadata=dict(CAMSEG_METADATA))]
    with open_project(project, "r+", door="files") as p:
        p.write_annotations("slide.tif", ours)
        p.write_annotations("slide.tif", ours[:0])  # a rerun that finds nothing: drops only ours
    after = read_geojson(f)
    assert not any(is_ours(o) for o in after)
    assert {o.id for o in after} == set(users)
    for o in after:
        u = users[o.id]
        assert (o.geometry.equals(u.geometry), o.classification, o.name, o.locked) == (True, u.classification, u.name, u.locked)
    written = json.loads(f.read_text(encoding="utf-8"))
    assert len(written["features"]) == 2


def test_failed_write_leaves_no_temp_files_and_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from qupath_camseg.errors import OutputNotWritableError

    target = tmp_path / "a.geojson"
    write_geojson(target, [QPObject(geometry=box(0, 0, 1, 1))])
    old = target.read_bytes()

    def full(*a: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputNotWritableError, match="disk full"):
        write_geojson(target, [QPObject(geometry=box(0, 0, 2, 2))])
    assert target.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["a.geojson"]
