"""Safe writes: atomic replace, permissions, disk-full and permission errors, backups, locks."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qupath_camseg._io import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    backup_file,
    file_lock,
)
from qupath_camseg.errors import OutputNotWritableError, ProjectLockedError


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_json(target, {"µm": 1})
    atomic_write_json(target, {"µm": 2})
    assert target.read_text(encoding="utf-8") == '{\n  "µm": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failure_inside_block_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_new_files_get_umask_permissions_and_existing_keep_theirs(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "x")
        assert fresh.stat().st_mode & 0o777 == 0o644
        shared = tmp_path / "shared.txt"
        shared.write_text("y")
        shared.chmod(0o664)
        atomic_write_text(shared, "z")
        assert shared.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_disk_full_is_a_clear_error_and_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "p.geojson"
    target.write_text("old")

    def enospc(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OutputNotWritableError, match="disk full; free disk space") as info:
        atomic_write_text(target, "new")
    assert str(target) in str(info.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["p.geojson"]


def test_unwritable_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated EACCES: CI runs as root, which real directory permissions would not stop.
    import tempfile

    def eacces(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", eacces)
    with pytest.raises(OutputNotWritableError, match="Permission denied; choose a folder you can write to"):
        atomic_write_text(tmp_path / "x.txt", "x")
    assert not (tmp_path / "x.txt").exists()


def test_backup_copies_and_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "project.qpproj"
    src.write_text("v1")
    b1 = backup_file(src, backup_dir=tmp_path / "backups")
    b2 = backup_file(src, backup_dir=tmp_path / "backups")
    assert b1 != b2 and b1.read_text() == b2.read_text() == "v1"


def test_lock_refuses_second_process_and_dies_with_holder(tmp_path: Path) -> None:
    lock = tmp_path / "camseg.lock"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from qupath_camseg._io import file_lock
        with file_lock({str(lock)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(ProjectLockedError, match=r"in use by qcamseg pid \d+.*wait for it to finish"):
            with file_lock(lock):
                pass
    finally:
        proc.kill()  # like kill -9: the OS drops the lock with the process
        proc.wait()
    with file_lock(lock):
        pass
