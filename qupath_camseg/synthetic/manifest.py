"""What ``qcamseg synth`` wrote into a folder, so that ``--overwrite`` replaces only that.

``camseg/synth.json`` holds the settings and ``files``: every file synth put in the folder
(relative POSIX path → SHA-256), QuPath's ``data/`` files included when the paquo door wrote
them. :func:`check_folder` decides whether a folder may receive a project; :func:`move_into`
puts a freshly built project in place, replacing the files the previous synth run recorded
(a changed one is backed up first to ``camseg/backups/``) and leaving every other file alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qupath_camseg._io import atomic_write_json, backup_file, file_lock, replace_file
from qupath_camseg.errors import ProjectExistsError

__all__ = ["MANIFEST", "check_folder", "move_into", "record_manifest"]

#: The manifest, relative to the project folder.
MANIFEST = "camseg/synth.json"
#: Written while a project is open: never recorded, never compared.
_TRANSIENT = (".lock", ".owner", ".tmp")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative POSIX paths), lock and temporary files left out."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(_TRANSIENT))


def read_manifest(folder: Path) -> dict[str, str] | None:
    """The files a previous ``qcamseg synth`` recorded in ``folder`` (path → SHA-256), or ``None``."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, RecursionError):
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files")
        if isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            return files
    return None


def record_manifest(folder: Path, settings: dict[str, Any], files: Iterable[str]) -> None:
    """Write ``camseg/synth.json``: the ``settings`` and the SHA-256 of each of ``files``."""
    recorded = {f: _sha256(folder / f) for f in sorted(set(files)) if f != MANIFEST and (folder / f).is_file()}
    atomic_write_json(folder / MANIFEST, {**settings, "files": recorded})


def check_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse ``out`` unless it is empty, or ``overwrite`` and every project file there is synth's.

    A folder holding a QuPath project synth did not write (or one QuPath has changed since:
    ``project.qpproj`` edited, ``data/`` written) is always refused, and the message does not
    offer ``--overwrite``: that project is the user's.
    """
    if out.exists() and not out.is_dir():
        raise ProjectExistsError(f"{out} is a file; choose a folder name for the project")
    present = _files(out) if out.is_dir() else []
    if not present:
        return
    recorded = read_manifest(out) or {}
    foreign = [f for f in present if (f == "project.qpproj" or f.startswith("data/"))
               and (f not in recorded or _sha256(out / f) != recorded[f])]
    if foreign:
        raise ProjectExistsError(
            f"{out} holds a QuPath project that qcamseg synth did not write or that was changed since "
            f"({foreign[0]}); synth never replaces it - choose a new folder")
    if not overwrite:
        what = "a synthetic project" if recorded else "other files"
        raise ProjectExistsError(
            f"{out} is not empty (it holds {what}); choose a new folder, or pass --overwrite to write the project "
            "there (only files an earlier synth wrote are replaced; yours are kept)")


def move_into(tmp: Path, out: Path, files: list[str]) -> None:
    """Put the project built in ``tmp`` (its ``files``) at ``out``; remove ``tmp``.

    An absent or empty ``out`` is replaced by ``tmp`` in one rename. Otherwise, holding the
    project's lock: the files the previous synth recorded and this one does not write are removed,
    and each new file is renamed into place; a recorded file the user changed is backed up first
    (``camseg/backups/``). A file synth did not write is never touched (one in the way is refused).
    """
    if not out.exists() or not any(out.iterdir()):
        with contextlib.suppress(FileNotFoundError):
            out.rmdir()  # Windows cannot rename onto an existing folder, even an empty one
        os.replace(tmp, out)
        return
    recorded = read_manifest(out) or {}
    in_the_way = [f for f in files if (out / f).exists() and f not in recorded and f != MANIFEST]
    if in_the_way:
        raise ProjectExistsError(f"{out / in_the_way[0]} is in the way and was not written by qcamseg synth; "
                                 "move it away or choose a new folder")
    with file_lock(out / "camseg" / "camseg.lock", what=f"QuPath project {out}"):
        backups = out / "camseg" / "backups"
        for f, digest in recorded.items():
            old = out / f
            if old.is_file() and _sha256(old) != digest:
                backup_file(old, backup_dir=backups)
            if f not in files and old.is_file():
                old.unlink()
        for f in files:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            replace_file(tmp / f, out / f)
    shutil.rmtree(tmp, ignore_errors=True)


def built_files(tmp: Path) -> list[str]:
    """The files of a project built in ``tmp`` (relative POSIX paths)."""
    return _files(tmp)
