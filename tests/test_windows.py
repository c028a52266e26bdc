"""Windows (and macOS) where it can be simulated here (issue 16, point 7).

* No ``fcntl``: every command that writes a project runs in a process where ``import fcntl``
  fails (``sys.modules['fcntl'] = None``), as on Windows.
* No ``os.fchmod`` (Windows before Python 3.13): atomic writes still work.
* A rename over a file another program holds open (Windows: ``PermissionError``, WinError 32) is
  retried, then reported in one line naming the file.
* Windows paths and URIs: drive letters, spaces, backslashes and UNC shares in QuPath's form.
* ``$QCAMSEG_MP_START`` picks the start method of every worker process (``spawn`` is what macOS
  and Windows use; ``make test`` runs the multiprocessing tests under it).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import pytest

from qupath_camseg._io import atomic_write_text
from qupath_camseg.errors import InvalidSettingsError, OutputNotWritableError

REPO = Path(__file__).resolve().parents[1]

_NO_FCNTL = """
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
from qupath_camseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _NO_FCNTL, *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=REPO)


def test_every_command_that_writes_a_project_works_without_fcntl(tmp_path: Path) -> None:
    proj = tmp_path / "My Project"  # a space, as in most Windows user folders
    out = _run("synth", str(proj), "--slides", "2", "--negatives", "1", "--width", "1024", "--height", "1024",
               "--door", "files")
    assert out.returncode == 0, out.stderr
    mine = tmp_path / "mine.geojson"
    mine.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [90, 10], [90, 90], [10, 10]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Stroma"}}}]}), encoding="utf-8")
    model = tmp_path / "model"
    steps = [
        ("import-annotations", str(proj), str(mine), "--image", "normal_002.tif", "--door", "files"),
        ("train", str(proj), "--out", str(model), "--mpp", "2", "--tile", "64", "--width", "4", "--depth", "2",
         "--steps", "1", "--tiles-per-epoch", "4", "--workers", "0", "-q", "--door", "files"),
        ("predict", str(proj), "--model", str(model), "--images", "normal_002.tif", "--progress", "none",
         "--door", "files"),
        ("export-qupath", str(model), "--out", str(tmp_path / "q"), "--into-project", str(proj)),
    ]
    for args in steps:
        res = _run(*args)
        assert res.returncode == 0, f"{args[0]}: {res.stderr}"
        assert "Traceback" not in res.stderr and "Warning" not in res.stderr, res.stderr
    assert (proj / "camseg" / "predictions" / "2.geojson").is_file()
    assert not list(proj.rglob("*.owner")), "the lock's owner note outlived the command"


def test_atomic_writes_without_os_fchmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fchmod", raising=False)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").read_text() == "x"


def _held_open(times: list[int], fail: int):
    """``os.replace`` as on Windows while another program holds the target open (WinError 32)."""
    real = os.replace

    def replace(src: str, dst: str) -> None:
        times.append(1)
        if len(times) <= fail:
            err = PermissionError(errno.EACCES, "The process cannot access the file because it is being used "
                                                "by another process", str(dst))
            err.winerror = 32  # type: ignore[attr-defined]
            raise err
        real(src, dst)

    return replace


def test_a_file_held_open_for_a_moment_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "replace", _held_open(calls, fail=3))
    atomic_write_text(tmp_path / "1.geojson", "new")
    assert (tmp_path / "1.geojson").read_text() == "new" and len(calls) == 4


def test_a_file_held_open_for_good_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "replace", _held_open([], fail=10**6))
    with pytest.raises(OutputNotWritableError, match=r"1\.geojson: the file is open in another program; close it"):
        atomic_write_text(tmp_path / "1.geojson", "new")
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left


@pytest.mark.parametrize("path, uri", [
    (r"C:\Users\Jane Doe\Lymph nodes\slide 1.svs", "file:/C:/Users/Jane%20Doe/Lymph%20nodes/slide%201.svs"),
    (r"I:\COAD Slides\Schnitt ü.ndpi", "file:/I:/COAD%20Slides/Schnitt%20%C3%BC.ndpi"),
    (r"\\server\share\a b\x.tif", "file://server/share/a%20b/x.tif"),
])
def test_windows_paths_become_qupath_uris_and_back(path: str, uri: str) -> None:
    from qupath_camseg.qupath import path_to_uri, uri_to_path

    assert path_to_uri(PureWindowsPath(path)) == uri
    assert uri_to_path(uri) == PureWindowsPath(path)


def test_start_method_is_chosen_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from qupath_camseg._runtime import MP_START_ENV, mp_context

    monkeypatch.delenv(MP_START_ENV, raising=False)
    assert mp_context() is None  # the platform's default
    monkeypatch.setenv(MP_START_ENV, "spawn")
    assert mp_context().get_start_method() == "spawn"  # type: ignore[union-attr]
    monkeypatch.setenv(MP_START_ENV, "teleport")
    with pytest.raises(InvalidSettingsError, match="QCAMSEG_MP_START='teleport' is not a start method"):
        mp_context()


def test_mps_is_refused_clearly_where_there_is_none() -> None:
    import torch

    from qupath_camseg._runtime import resolve_device

    if torch.backends.mps.is_available():
        assert resolve_device("mps") == "mps"
    else:
        with pytest.raises(InvalidSettingsError, match="no Apple GPU"):
            resolve_device("mps")
