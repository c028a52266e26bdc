"""Every output path stays inside its output folder (issue 16, point 1): the one function that
names a project entry's files (``_io.entry_file``), its checks, and that no module builds such a
path by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qupath_camseg._io import entry_file, entry_stem, path_inside, safe_file_stem
from qupath_camseg.errors import UnsafePathError

PACKAGE = Path(__file__).resolve().parents[1] / "qupath_camseg"


@pytest.mark.parametrize("good", [1, 12, "7", "0042"])
def test_entry_ids_are_whole_numbers(good: object) -> None:
    assert entry_stem(good) == str(good)


@pytest.mark.parametrize("bad", ["../x", "/tmp/x/important", "C:x", "1/2", "", "1e3", " 1", [1], {"a": 1}, True,
                                 None, 1.5, "١٢"])
def test_other_entry_ids_are_refused(bad: object) -> None:
    with pytest.raises(UnsafePathError, match="not a QuPath entry ID"):
        entry_stem(bad, where="p.qpproj: images[0]")


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "a\\b", "C:evil", "CON", "nul.ome", "com1", "x.", "x ", "a\x00b",
                                 "<x>", "a|b", "a?b", "a*b", 'a"b', "x" * 300])
def test_unsafe_file_stems_are_refused_on_every_platform(bad: str) -> None:
    with pytest.raises(UnsafePathError, match="cannot be used as a file name"):
        safe_file_stem(bad)


@pytest.mark.parametrize("good", ["tumor_001", "Slide 12 (HE)", "tumor_001.ome", "Ünïcode-Schnitt", "console"])
def test_ordinary_slide_names_are_kept(good: str) -> None:
    assert safe_file_stem(good) == good


def test_entry_file_stays_inside_its_folder(tmp_path: Path) -> None:
    camseg = tmp_path / "proj" / "camseg"
    assert entry_file(camseg, "predictions", "3", ".geojson") == camseg / "predictions" / "3.geojson"
    assert entry_file(camseg, "", "3", ".tif") == camseg / "3.tif"
    for bad in ("../../x", "/tmp/x/important"):
        with pytest.raises(UnsafePathError):
            entry_file(camseg, "predictions", bad, ".geojson")


def test_a_link_that_leads_out_is_refused(tmp_path: Path) -> None:
    """A crafted project may ship ``camseg/predictions`` as a link to another folder."""
    camseg = tmp_path / "proj" / "camseg"
    camseg.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (camseg / "predictions").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="leads outside"):
        entry_file(camseg, "predictions", "1", ".geojson")
    with pytest.raises(UnsafePathError, match="leads outside"):
        path_inside(camseg, "..", "x")



def test_a_project_whose_camseg_folder_is_a_link_is_refused(tmp_path: Path) -> None:
    """A crafted project may ship camseg/ itself as a link (to ~/.ssh, say): nothing is written
    through it, and the message says how to fix it."""
    from qupath_camseg.cli import main
    from qupath_camseg.qupath import create_project, open_project

    create_project(tmp_path / "proj").close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import shutil

    shutil.rmtree(tmp_path / "proj" / "camseg")
    (tmp_path / "proj" / "camseg").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="is a link to .*replace the link by a folder"):
        open_project(tmp_path / "proj", "r+", door="files")
    mine = tmp_path / "a.geojson"
    mine.write_text('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}, "properties": {}}')
    assert main(["import-annotations", str(tmp_path / "proj"), str(mine), "--image", "x", "--door", "files"]) == 2
    assert list(elsewhere.iterdir()) == []


def test_no_module_builds_an_entry_path_by_hand() -> None:
    """Paths named after an entry ID go through ``entry_file`` (or ``path_inside``) only."""
    pattern = re.compile(r"/\s*f[\"'][^\"']*\{[^}]*entry_id[^}]*\}")
    found = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for p in sorted(PACKAGE.rglob("*.py")) if p.name != "_io.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, "use qupath_camseg._io.entry_file:\n" + "\n".join(found)
