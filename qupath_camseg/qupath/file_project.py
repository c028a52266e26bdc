"""QuPath projects through the QuPath-free door: ``project.qpproj`` read and written as JSON.

A QuPath project is a folder holding ``project.qpproj`` (JSON: ``version``, ``createTimestamp``,
``modifyTimestamp``, ``uri`` of the file when last saved, ``lastID`` and ``images[]``, each with a
``serverBuilder`` {``builderType``, ``providerClassName``, ``uri``, ``args``, ``metadata``},
``entryID``, ``randomizedName``, ``imageName``, ``description``, ``metadata``), plus
``classifiers/classes.json`` and QuPath's own ``data/<entryID>/`` folders (``data.qpdata`` is
Java-serialised and only the paquo door can read it). The schema rules here follow QuPath's
``DefaultProject`` (0.2–0.6): it needs both timestamps, and a ``version`` or a ``lastID``; it builds
entries without ``data/<entryID>/`` (a fresh, empty hierarchy); ``classes.json`` holds signed
32-bit ARGB colours. Annotations go to ``<project>/camseg/annotations/<entryID>.geojson``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qupath_camseg._io import atomic_write_json, backup_file, entry_file, entry_stem, no_link, path_inside
from qupath_camseg.annotations import QPObject, is_ours, read_geojson, write_geojson
from qupath_camseg.errors import ProjectError, ProjectExistsError, ProjectNotFoundError
from qupath_camseg.qupath.colors import QUPATH_DEFAULT_CLASSES, argb_to_rgb, rgb_to_argb
from qupath_camseg.qupath.entries import Mode, Project, ProjectEntry
from qupath_camseg.qupath.image_info import ImageInfo, server_builder
from qupath_camseg.qupath.uris import path_to_uri, resolve_image, uri_to_path

__all__ = ["FileProject", "WRITTEN_QUPATH_VERSION"]

#: The project version string we write into new projects (QuPath reads any 0.2+ project).
WRITTEN_QUPATH_VERSION = "0.5.1"


class FileProject(Project):
    """A QuPath project read and written as files (no Java). Open with
    :func:`~qupath_camseg.qupath.doors.open_project`.

    Modes as paquo's: ``"r"`` read-only (missing project → :class:`ProjectNotFoundError`),
    ``"r+"`` read/write an existing project, ``"x"`` create a new one (an existing
    ``project.qpproj`` → :class:`ProjectExistsError`). Writers hold ``camseg/camseg.lock`` until
    :meth:`close`. Use as a context manager.
    """

    door = "files"

    def __init__(self, path: str | os.PathLike[str], mode: Mode = "r", *,
                 final_folder: str | os.PathLike[str] | None = None) -> None:
        super().__init__(path, mode)
        self._created = mode == "x"  # a project made by this object needs no backups of itself
        try:
            if mode == "x":
                self._create(final_folder)
            else:
                self._open_existing()
            self._entries = self._parse_entries()
        except BaseException:
            self.close()  # a project that cannot be opened holds no lock
            raise

    def __repr__(self) -> str:
        return f"FileProject({str(self.path)!r}, mode={self.mode!r}, entries={len(self._entries)})"

    def _create(self, final_folder: str | os.PathLike[str] | None) -> None:
        """A new ``project.qpproj`` (no images) and QuPath's default ``classes.json``, under the lock."""
        if self.qpproj.exists():
            raise ProjectExistsError(
                f"{self.qpproj} already exists; choose an empty folder or open it with mode 'r+'"
            )
        self._lock()
        now = int(time.time() * 1000)
        self._data: dict[str, Any] = {
            "version": WRITTEN_QUPATH_VERSION,
            "createTimestamp": now,
            "modifyTimestamp": now,
            "uri": path_to_uri(Path(final_folder or self.path).absolute() / "project.qpproj"),
            "lastID": 0,
            "images": [],
        }
        self._write(backup=False)
        self._write_classes(QUPATH_DEFAULT_CLASSES)

    def _open_existing(self) -> None:
        if not self.qpproj.is_file():
            raise ProjectNotFoundError(
                f"no QuPath project at {self.qpproj}; pass a project folder or its project.qpproj "
                "(create one with 'qcamseg synth' or QuPath's File > Project > Create project)"
            )
        if self.mode == "r+":
            self._lock()
        self._data = self._load()

    # -- reading
    def _load(self) -> dict[str, Any]:
        hint = self._restore_hint()
        try:
            data = json.loads(self.qpproj.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ProjectError(f"{self.qpproj} is not a text (JSON) file; {hint}") from err
        except json.JSONDecodeError as err:
            raise ProjectError(
                f"{self.qpproj} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); {hint}"
            ) from err
        except RecursionError as err:  # a crafted file, nested thousands of levels deep
            raise ProjectError(f"{self.qpproj} is nested too deeply to be a QuPath project; {hint}") from err
        if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
            raise ProjectError(f"{self.qpproj} is not a QuPath project (no 'images' list); {hint}")
        if "version" not in data and "lastID" not in data:
            raise ProjectError(
                f"{self.qpproj} has neither 'version' nor 'lastID' (QuPath refuses it too); {hint}"
            )
        for i, image in enumerate(data.get("images", [])):
            if not isinstance(image, dict):
                raise ProjectError(f"{self.qpproj}: images[{i}] is not an object; {hint}")
        return data

    def _restore_hint(self) -> str:
        """How to get a damaged ``project.qpproj`` back: from the backups that exist, else anew."""
        qupath_backup = self.qpproj.with_name(self.qpproj.name + ".backup")
        ours = sorted((self.camseg_dir / "backups").glob("project.qpproj.*.bak"))
        found = ([f"{qupath_backup} (QuPath's)"] if qupath_backup.is_file() else []) + ([str(ours[-1])] if ours else [])
        if found:
            return "restore it from " + " or ".join(found)
        return ("no backup of it exists: re-create the project in QuPath (File > Project > Create project) "
                "and add the images again")

    def _parse_entries(self) -> list[ProjectEntry]:
        """The entries; an ``entryID`` that is not a whole number, or one used twice, is refused
        (it names files under ``camseg/``: a crafted ID must never become a path)."""
        previous = self._data.get("uri") if isinstance(self._data.get("uri"), str) else None
        entries: list[ProjectEntry] = []
        seen: dict[str, str] = {}
        for i, image in enumerate(self._data.get("images", [])):
            uri = _find_uri(image.get("serverBuilder"))
            name = str(image.get("imageName") or f"Image {i + 1}")
            entry_id = entry_stem(image.get("entryID", i + 1), where=f"{self.qpproj}: images[{i}] ({name!r})")
            if entry_id in seen:
                raise ProjectError(
                    f"{self.qpproj}: images {seen[entry_id]!r} and {name!r} have the same entryID {entry_id}; "
                    "QuPath gives each image its own - restore the project from a backup, or remove one image "
                    "and add it again in QuPath")
            seen[entry_id] = name
            meta = image.get("metadata") or {}
            entries.append(
                ProjectEntry(
                    entry_id=entry_id,
                    image_name=str(image.get("imageName") or f"Image {entry_id}"),
                    uri=uri,
                    path=resolve_image(uri, self.path, previous),
                    metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {},
                    description=image.get("description"),
                    recorded_path=uri_to_path(uri) if uri else None,
                )
            )
        return entries

    @property
    def version(self) -> str | None:
        """The QuPath version string stored in the project (e.g. ``"0.3.2"``, ``"0.6.0-rc3"``)."""
        v = self._data.get("version")
        return str(v) if v is not None else None

    @property
    def path_classes(self) -> list[tuple[str, tuple[int, int, int] | None]]:
        """``classifiers/classes.json`` as ``[(name, (r, g, b) or None)]`` (empty when absent)."""
        f = self.path / "classifiers" / "classes.json"
        if not f.is_file():
            return []
        try:
            items = json.loads(f.read_text(encoding="utf-8")).get("pathClasses", [])
        except (ValueError, AttributeError, RecursionError) as err:
            raise ProjectError(f"{f} is not valid QuPath classes JSON; delete it and QuPath recreates it") from err
        return [
            (str(c["name"]), argb_to_rgb(c["color"]) if isinstance(c.get("color"), int) else None)
            for c in items
            if isinstance(c, dict) and "name" in c
        ]

    # -- annotations (under camseg/)
    def annotations_file(self, entry: str | ProjectEntry) -> Path:
        """``<project>/camseg/annotations/<entryID>.geojson`` (proven to stay under ``camseg/``)."""
        return entry_file(self.camseg_dir, "annotations", self.entry(entry).entry_id, ".geojson")

    def read_annotations(self, entry: str | ProjectEntry) -> list[QPObject]:
        """The entry's objects (list of :class:`~qupath_camseg.annotations.objects.QPObject`); ``[]`` if none."""
        f = self.annotations_file(entry)
        return read_geojson(f) if f.is_file() else []

    def write_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject], *,
                          keep_user: bool = True) -> Path | None:
        """Replace *our* objects of ``entry`` by ``objs``; the user's objects are kept unless
        ``keep_user=False``. The previous file is backed up first; returns the backup (or None)."""
        self._check_writable()
        current = self.read_annotations(entry)
        kept = [o for o in current if keep_user and not is_ours(o)]
        return self._save_annotations(entry, kept + list(objs))

    def add_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject]) -> Path | None:
        """Append ``objs`` to the entry's objects, keeping all that are there (backup first)."""
        self._check_writable()
        return self._save_annotations(entry, self.read_annotations(entry) + list(objs))

    def _save_annotations(self, entry: str | ProjectEntry, objs: list[QPObject]) -> Path | None:
        f = self.annotations_file(entry)
        backup = backup_file(f, backup_dir=self.camseg_dir / "backups") if f.is_file() else None
        write_geojson(f, objs)
        return backup

    # -- changing the project
    def add_image(self, image: str | os.PathLike[str], *, name: str | None = None, metadata: dict[str, str] | None = None,
                  final_path: str | os.PathLike[str] | None = None, info: ImageInfo | None = None) -> ProjectEntry:
        """Add an image file as a new entry and save the project (backup first).

        ``final_path``: where the image will be when the project is used, if it differs from
        ``image`` now (``qcamseg synth`` builds projects in a temporary folder, then renames it).
        ``info``: the image's size/levels/mpp when known (else read from the file); recorded as
        QuPath's server metadata so QuPath shows the right pixel size.
        """
        self._check_writable()
        src = Path(image).absolute()
        where = Path(final_path).absolute() if final_path is not None else src
        last = self._data.get("lastID")
        last = last if isinstance(last, int) and not isinstance(last, bool) else 0
        entry_id = max([last] + [int(e.entry_id) for e in self._entries]) + 1
        record = {
            "serverBuilder": server_builder(src, where, name or where.name, info),
            "entryID": entry_id,
            "randomizedName": str(uuid.uuid4()),
            "imageName": name or where.name,
            "metadata": dict(metadata or {}),
        }
        self._data["images"].append(record)
        self._data["lastID"] = entry_id
        self._write()
        self._entries = self._parse_entries()
        if final_path is not None:  # the image is not there yet: report where it will be
            e = self._entries[-1]
            self._entries[-1] = ProjectEntry(e.entry_id, e.image_name, e.uri, src, e.metadata, e.description, e.recorded_path)
        return self.entry(str(entry_id))

    def set_path_classes(self, classes: Sequence[tuple[str, Sequence[int] | None]]) -> None:
        """Write ``classifiers/classes.json`` (names and (r, g, b) colours) for QuPath's class list."""
        self._check_writable()
        self._write_classes(classes)

    def _write_classes(self, classes: Sequence[tuple[str, Sequence[int] | None]]) -> None:
        f = path_inside(no_link(self.path / "classifiers"), "classes.json")
        if f.is_file():
            backup_file(f, backup_dir=self.camseg_dir / "backups")
        items = [{"name": n, "color": rgb_to_argb(c) if c is not None else None} for n, c in classes]
        atomic_write_json(f, {"pathClasses": items})

    def _write(self, *, backup: bool = True) -> None:
        if backup and not self._created and self.qpproj.is_file():
            backup_file(self.qpproj, backup_dir=self.camseg_dir / "backups")
        self._data["modifyTimestamp"] = int(time.time() * 1000)
        atomic_write_json(self.qpproj, self._data)


def _find_uri(builder: Any) -> str | None:
    """The first image URI in a serverBuilder (``uri``, or nested ``builder``/``regions``...),
    depth first; iterative, so a deeply nested (crafted) builder cannot exhaust the stack."""
    stack = [builder]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("uri"), str) and node["uri"]:
                return str(node["uri"])
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return None
