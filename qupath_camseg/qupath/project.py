"""QuPath projects through the QuPath-free door: ``project.qpproj`` read and written as JSON.

A QuPath project is a folder holding ``project.qpproj`` (JSON: ``version``, ``createTimestamp``,
``modifyTimestamp``, ``uri`` of the file when last saved, ``lastID`` and ``images[]``, each with a
``serverBuilder`` {``builderType``, ``providerClassName``, ``uri``, ``args``, ``metadata``},
``entryID``, ``randomizedName``, ``imageName``, ``description``, ``metadata``), plus
``classifiers/classes.json`` and QuPath's own ``data/<entryID>/`` folders (``data.qpdata`` is
Java-serialised and only the paquo door can read it). The schema rules here follow QuPath's
``DefaultProject`` (0.2–0.6): it needs both timestamps, and a ``version`` or a ``lastID``; it builds
entries without ``data/<entryID>/`` (a fresh, empty hierarchy); ``classes.json`` holds signed
32-bit ARGB colours.

Everything this package writes for a project lives under ``<project>/camseg/``:
``annotations/<entryID>.geojson`` (annotations exported by the Groovy bridge, or written by
``qcamseg synth`` / ``import-annotations``), ``backups/`` and ``camseg.lock``. Writers hold the
lock for as long as the project is open, so two writers fail fast with
:class:`~qupath_camseg.errors.ProjectLockedError`.

:func:`open_project` picks the door: paquo (QuPath's own Java code, annotations in the project
hierarchy) when a QuPath installation is found, these files otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

from qupath_camseg._io import atomic_write_json, backup_file, file_lock
from qupath_camseg.errors import (
    ImageMissingError,
    ProjectError,
    ProjectExistsError,
    ProjectNotFoundError,
)

__all__ = [
    "ProjectEntry",
    "FileProject",
    "open_project",
    "create_project",
    "uri_to_path",
    "find_entry",
    "entry_image_path",
    "resolve_image",
    "path_to_uri",
    "argb_to_rgb",
    "rgb_to_argb",
    "QUPATH_DEFAULT_CLASSES",
    "ImageInfo",
    "read_image_info",
    "WRITTEN_QUPATH_VERSION",
]

Mode = Literal["r", "r+", "x"]
Door = Literal["auto", "files", "paquo"]

#: The project version string we write into new projects (QuPath reads any 0.2+ project).
WRITTEN_QUPATH_VERSION = "0.5.1"
_OPENSLIDE_PROVIDER = "qupath.lib.images.servers.openslide.OpenslideServerBuilder"
_BIOFORMATS_PROVIDER = "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder"
#: QuPath's default classes (name, (r, g, b)), as in a ``classes.json`` written by QuPath 0.6.
QUPATH_DEFAULT_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Tumor", (200, 0, 0)),
    ("Stroma", (150, 200, 150)),
    ("Immune cells", (160, 90, 160)),
    ("Necrosis", (50, 50, 50)),
    ("Other", (255, 200, 0)),
    ("Region*", (0, 0, 180)),
    ("Ignore*", (180, 180, 180)),
    ("Positive", (250, 62, 62)),
    ("Negative", (112, 112, 225)),
)


# --------------------------------------------------------------------------- colours, URIs
def rgb_to_argb(rgb: Sequence[int]) -> int:
    """``(r, g, b)`` 0–255 → QuPath's packed colour: opaque ARGB as a *signed* 32-bit int."""
    r, g, b = (int(c) & 0xFF for c in rgb[:3])
    value = (0xFF << 24) | (r << 16) | (g << 8) | b
    return value - (1 << 32) if value >= 1 << 31 else value


def argb_to_rgb(value: int) -> tuple[int, int, int]:
    """QuPath's packed (signed or unsigned) ARGB int → ``(r, g, b)``."""
    value &= 0xFFFFFFFF
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def uri_to_path(uri: str) -> PurePath | None:
    """A ``file:`` URI as QuPath writes it → a path of the platform it names; else ``None``.

    Handles ``file:/I:/a%20b/x.svs`` (Windows drive → :class:`PureWindowsPath`),
    ``file:/home/x.svs``, ``file:///C:/x.svs``, UNC shares ``file:////server/share/x.svs`` and
    ``file://server/share/x.svs``, and ``%`` escapes (UTF-8).
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return None
    path = unquote(parts.path)
    if parts.netloc and parts.netloc.lower() != "localhost":
        return PureWindowsPath(f"//{parts.netloc}{path}")
    if re.match(r"^//+[^/]", path):  # file:////server/share/...
        return PureWindowsPath("//" + path.lstrip("/"))
    if re.match(r"^/[A-Za-z]:([/\\]|$)", path):
        return PureWindowsPath(path[1:])
    return PurePosixPath(path)


def path_to_uri(path: str | os.PathLike[str]) -> str:
    """An absolute local path → a URI in QuPath's form (``file:/abs/path``, ``%`` escapes)."""
    p = Path(path).absolute()
    return "file:" + quote(p.as_posix() if os.name != "nt" else "/" + p.as_posix(), safe="/:@!$&'()*+,;=~")


def _relativize(base: PurePath, target: PurePath) -> PurePath | None:
    """``target`` relative to ``base`` (``..`` allowed), as ``java.nio.file.Path.relativize``."""
    if type(base) is not type(target) or base.anchor.lower() != target.anchor.lower():
        return None
    fold = (lambda s: s.lower()) if isinstance(base, PureWindowsPath) else (lambda s: s)
    b, t = base.parts[1:], target.parts[1:]
    n = 0
    while n < min(len(b), len(t)) and fold(b[n]) == fold(t[n]):
        n += 1
    return PurePosixPath(*([".."] * (len(b) - n)), *t[n:])


def _find_uri(builder: Any) -> str | None:
    """The first image URI in a serverBuilder (``uri``, or nested ``builder``/``regions``...)."""
    if isinstance(builder, dict):
        if isinstance(builder.get("uri"), str):
            return builder["uri"]
        for value in builder.values():
            found = _find_uri(value)
            if found:
                return found
    elif isinstance(builder, list):
        for value in builder:
            found = _find_uri(value)
            if found:
                return found
    return None


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class ProjectEntry:
    """One image of a project.

    ``entry_id`` is QuPath's ``entryID`` as a string (also the ``data/<entryID>/`` folder name);
    ``path`` is the image file found on this machine (``None`` when missing: see
    :meth:`FileProject.image_path` for the reason); ``recorded_path`` is the path the URI names.
    """

    entry_id: str
    image_name: str
    uri: str | None
    path: Path | None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    recorded_path: PurePath | None = None


def resolve_image(uri: str | None, project_dir: Path, previous_project_uri: str | None) -> Path | None:
    """Find an entry's image: at its URI, else (QuPath's rule for a moved project) at the same
    place relative to the project folder as it was relative to the project's old location."""
    recorded = uri_to_path(uri) if uri else None
    if recorded is None:
        return None
    if isinstance(recorded, PurePosixPath) == (os.name != "nt") and Path(recorded).is_file():
        return Path(recorded)
    old = uri_to_path(previous_project_uri) if previous_project_uri else None
    if old is not None:
        rel = _relativize(old.parent, recorded)
        if rel is not None:
            candidate = Path(os.path.normpath(project_dir / rel))
            if candidate.is_file():
                return candidate
    return None


def find_entry(entries: Sequence[ProjectEntry], name_or_id: str | ProjectEntry, where: Path) -> ProjectEntry:
    """Look up an entry by image name (exact, case-insensitive, then without extension) or ID."""
    if isinstance(name_or_id, ProjectEntry):
        return name_or_id
    key = str(name_or_id)
    tests = (
        lambda e: e.image_name == key,
        lambda e: e.image_name.casefold() == key.casefold(),
        lambda e: PurePosixPath(e.image_name).stem.casefold() == PurePosixPath(key).stem.casefold(),
        lambda e: e.entry_id == key,
    )
    for test in tests:
        hits = [e for e in entries if test(e)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            ids = ", ".join(e.entry_id for e in hits)
            raise ProjectError(f"{key!r} matches several images in {where} (entry IDs {ids}); pass an entry ID")
    names = ", ".join(repr(e.image_name) for e in entries[:5])
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    available = f"images: {names}{more}" if entries else "the project has no images"
    raise ProjectError(f"no image {key!r} in {where} ({available}); pass an image name or entry ID")


def entry_image_path(e: ProjectEntry, where: Path) -> Path:
    """``e.path``, or :class:`ImageMissingError` naming the image, the missing path and the fix."""
    if e.path is not None:
        return e.path
    if e.uri is None:
        raise ImageMissingError(f"image {e.image_name!r} in {where} has no image URI; re-add it in QuPath")
    if e.recorded_path is None:
        raise ImageMissingError(
            f"image {e.image_name!r} in {where} is not a local file ({e.uri}); only file: images can be read"
        )
    raise ImageMissingError(
        f"image {e.image_name!r} not found at {e.recorded_path} (project {where}); put the file back, "
        "or keep the images at the same place relative to the project folder, or fix the path in QuPath "
        "(File > Project... > Check project URIs)"
    )


# --------------------------------------------------------------------------- the file door
_P = TypeVar("_P", bound="_ProjectBase")


class _ProjectBase:
    """What both doors (``FileProject`` and ``paquo_door.PaquoProject``) share: entry lookup,
    the writer lock and the context-manager protocol. Subclasses set ``path``, ``qpproj``,
    ``camseg_dir``, ``_entries`` and ``_stack`` (a :class:`contextlib.ExitStack`) and call
    :meth:`_lock` when opened for writing."""

    path: Path
    qpproj: Path
    camseg_dir: Path
    _entries: list[ProjectEntry]
    _stack: contextlib.ExitStack

    @property
    def entries(self) -> list[ProjectEntry]:
        """The project's images, in QuPath's order."""
        return list(self._entries)

    def entry(self, name_or_id: str | ProjectEntry) -> ProjectEntry:
        """The entry with this image name (exact, then case-insensitive, then without extension)
        or entry ID; :class:`ProjectError` naming the available images otherwise."""
        return find_entry(self._entries, name_or_id, self.qpproj)

    def image_path(self, entry: str | ProjectEntry) -> Path:
        """The image file of ``entry`` on this machine, or :class:`ImageMissingError` with the fix."""
        return entry_image_path(self.entry(entry), self.qpproj)

    def missing_images(self) -> list[ProjectEntry]:
        """Entries whose image file cannot be found on this machine."""
        return [e for e in self._entries if e.path is None]

    def _lock(self) -> None:
        self._stack.enter_context(file_lock(self.camseg_dir / "camseg.lock", what=f"QuPath project {self.path}"))

    def close(self) -> None:
        """Release the writer lock (if any). Safe to call twice."""
        self._stack.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileProject(_ProjectBase):
    """A QuPath project read and written as files (no Java). Open with :func:`open_project`.

    Modes as paquo's: ``"r"`` read-only (missing project → :class:`ProjectNotFoundError`),
    ``"r+"`` read/write an existing project, ``"x"`` create a new one (an existing
    ``project.qpproj`` → :class:`ProjectExistsError`). Writers hold ``camseg/camseg.lock`` until
    :meth:`close`. Use as a context manager.
    """

    door = "files"

    def __init__(self, path: str | os.PathLike[str], mode: Mode = "r", *,
                 final_folder: str | os.PathLike[str] | None = None) -> None:
        if mode not in ("r", "r+", "x"):
            raise ValueError(f"mode must be 'r', 'r+' or 'x', not {mode!r}")
        p = Path(path).expanduser().absolute()
        self.qpproj = p if p.suffix == ".qpproj" else p / "project.qpproj"
        self.path = self.qpproj.parent
        self.mode = mode
        self._created = mode == "x"  # a project made by this object needs no backups of itself
        self._stack = contextlib.ExitStack()
        if mode == "x":
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
        else:
            if not self.qpproj.is_file():
                raise ProjectNotFoundError(
                    f"no QuPath project at {self.qpproj}; pass a project folder or its project.qpproj "
                    "(create one with 'qcamseg synth' or QuPath's File > Project > Create project)"
                )
            if mode == "r+":
                self._lock()
            self._data = self._load()
        self._entries = self._parse_entries()

    def __repr__(self) -> str:
        return f"FileProject({str(self.path)!r}, mode={self.mode!r}, entries={len(self._entries)})"

    # -- reading
    def _load(self) -> dict[str, Any]:
        hint = f"restore it from {self.qpproj}.backup (QuPath's) or {self.camseg_dir / 'backups'}"
        try:
            data = json.loads(self.qpproj.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ProjectError(f"{self.qpproj} is not a text (JSON) file; {hint}") from err
        except json.JSONDecodeError as err:
            raise ProjectError(
                f"{self.qpproj} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); {hint}"
            ) from err
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

    def _parse_entries(self) -> list[ProjectEntry]:
        previous = self._data.get("uri") if isinstance(self._data.get("uri"), str) else None
        entries = []
        for i, image in enumerate(self._data.get("images", [])):
            uri = _find_uri(image.get("serverBuilder"))
            entry_id = str(image.get("entryID", i + 1))
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
    def camseg_dir(self) -> Path:
        """``<project>/camseg``: everything this package writes for the project."""
        return self.path / "camseg"

    @property
    def path_classes(self) -> list[tuple[str, tuple[int, int, int] | None]]:
        """``classifiers/classes.json`` as ``[(name, (r, g, b) or None)]`` (empty when absent)."""
        f = self.path / "classifiers" / "classes.json"
        if not f.is_file():
            return []
        try:
            items = json.loads(f.read_text(encoding="utf-8")).get("pathClasses", [])
        except (json.JSONDecodeError, AttributeError) as err:
            raise ProjectError(f"{f} is not valid QuPath classes JSON; delete it and QuPath recreates it") from err
        return [
            (str(c["name"]), argb_to_rgb(c["color"]) if isinstance(c.get("color"), int) else None)
            for c in items
            if isinstance(c, dict) and "name" in c
        ]

    # -- annotations (under camseg/)
    def annotations_file(self, entry: str | ProjectEntry) -> Path:
        """``<project>/camseg/annotations/<entryID>.geojson``."""
        return self.camseg_dir / "annotations" / f"{self.entry(entry).entry_id}.geojson"

    def read_annotations(self, entry: str | ProjectEntry) -> list[Any]:
        """The entry's objects (list of :class:`~qupath_camseg.annotations.geojson.QPObject`); ``[]`` if none."""
        from qupath_camseg.annotations import read_geojson

        f = self.annotations_file(entry)
        return read_geojson(f) if f.is_file() else []

    def write_annotations(self, entry: str | ProjectEntry, objs: Iterable[Any], *, keep_user: bool = True) -> Path | None:
        """Replace *our* objects of ``entry`` by ``objs``; the user's objects are kept unless
        ``keep_user=False``. The previous file is backed up first; returns the backup (or None)."""
        from qupath_camseg.annotations import is_ours

        self._check_writable()
        current = self.read_annotations(entry)
        kept = [o for o in current if keep_user and not is_ours(o)]
        return self._save_annotations(entry, kept + list(objs))

    def add_annotations(self, entry: str | ProjectEntry, objs: Iterable[Any]) -> Path | None:
        """Append ``objs`` to the entry's objects, keeping all that are there (backup first)."""
        self._check_writable()
        return self._save_annotations(entry, self.read_annotations(entry) + list(objs))

    write_objects = write_annotations

    def _save_annotations(self, entry: str | ProjectEntry, objs: list[Any]) -> Path | None:
        from qupath_camseg.annotations import write_geojson

        f = self.annotations_file(entry)
        backup = backup_file(f, backup_dir=self.camseg_dir / "backups") if f.is_file() else None
        write_geojson(f, objs)
        return backup

    # -- changing the project
    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.qpproj} is open read-only; open it with mode 'r+' to change it")

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
        entry_id = max([int(self._data.get("lastID") or 0)] + [int(e.entry_id) for e in self._entries if e.entry_id.isdigit()]) + 1
        provider = _provider_for(src)
        builder: dict[str, Any] = {
            "builderType": "uri",
            "providerClassName": provider,
            "uri": path_to_uri(where),
            "args": [] if provider == _OPENSLIDE_PROVIDER else ["--series", "0"],
        }
        info = info if info is not None else read_image_info(src)
        if info is not None:
            builder["metadata"] = _server_metadata(info, name or where.name)
        record = {
            "serverBuilder": builder,
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
        f = self.path / "classifiers" / "classes.json"
        if f.is_file():
            backup_file(f, backup_dir=self.camseg_dir / "backups")
        items = [{"name": n, "color": rgb_to_argb(c) if c is not None else None} for n, c in classes]
        atomic_write_json(f, {"pathClasses": items})

    def _write(self, *, backup: bool = True) -> None:
        if backup and not self._created and self.qpproj.is_file():
            backup_file(self.qpproj, backup_dir=self.camseg_dir / "backups")
        self._data["modifyTimestamp"] = int(time.time() * 1000)
        atomic_write_json(self.qpproj, self._data)


def _provider_for(path: Path) -> str:
    """QuPath's reader for ``path``: OpenSlide when it recognises the file, else Bio-Formats."""
    try:
        import openslide
    except ImportError:  # optional dependency: Bio-Formats reads every TIFF we write
        return _BIOFORMATS_PROVIDER
    try:
        return _OPENSLIDE_PROVIDER if openslide.OpenSlide.detect_format(str(path)) else _BIOFORMATS_PROVIDER
    except Exception:  # noqa: BLE001 - any failure just means "not for OpenSlide"
        return _BIOFORMATS_PROVIDER


@dataclass(frozen=True)
class ImageInfo:
    """What QuPath's server metadata records: level-0 size (w, h) px, pyramid level sizes,
    level-0 µm/px (None if unknown) and the file's tile size in px."""

    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: float | None = None
    tile_px: int = 256


def read_image_info(path: str | os.PathLike[str]) -> ImageInfo | None:
    """:class:`ImageInfo` of a slide file (via :mod:`qupath_camseg.wsi.slides`), None if unreadable."""
    from qupath_camseg.errors import CamsegError
    from qupath_camseg.wsi import open_slide

    try:
        with open_slide(path) as slide:
            return ImageInfo(
                int(slide.dimensions[0]), int(slide.dimensions[1]),
                tuple((int(w), int(h)) for w, h in slide.level_dimensions),
                float(slide.mpp) if slide.has_mpp else None,
            )
    except (CamsegError, OSError):
        return None


def _server_metadata(info: ImageInfo, name: str) -> dict[str, Any]:
    """ImageServerMetadata in the form QuPath writes it (size, levels, µm/px, tiles, RGB channels)."""
    meta: dict[str, Any] = {
        "name": name, "width": info.width, "height": info.height, "sizeZ": 1, "sizeT": 1,
        "channelType": "DEFAULT", "isRGB": True, "pixelType": "UINT8",
        "levels": [{"downsample": info.width / w if i else 1.0, "width": w, "height": h}
                   for i, (w, h) in enumerate(info.level_dimensions)],
        "channels": [{"name": n, "color": rgb_to_argb(c)} for n, c in
                     (("Red", (255, 0, 0)), ("Green", (0, 255, 0)), ("Blue", (0, 0, 255)))],
    }
    if info.mpp is not None:
        meta["pixelCalibration"] = {
            "pixelWidth": {"value": float(info.mpp), "unit": "µm"},
            "pixelHeight": {"value": float(info.mpp), "unit": "µm"},
            "zSpacing": {"value": 1.0, "unit": "z-slice"},
            "timeUnit": "SECONDS",
            "timepoints": [],
        }
    meta["preferredTileWidth"] = meta["preferredTileHeight"] = int(info.tile_px)
    return meta


# --------------------------------------------------------------------------- opening
def open_project(path: str | os.PathLike[str], mode: Mode = "r", *, door: Door = "auto") -> Any:
    """Open a QuPath project (its folder or ``project.qpproj``).

    ``door="auto"`` uses paquo (annotations in the QuPath hierarchy) when
    :func:`~qupath_camseg.qupath.paquo_project.find_qupath_installation` finds QuPath, the files otherwise;
    ``"files"`` / ``"paquo"`` force one (``"paquo"`` without QuPath →
    :class:`~qupath_camseg.errors.QuPathNotFoundError` naming the fix).
    """
    if door not in ("auto", "files", "paquo"):
        raise ValueError(f"door must be 'auto', 'files' or 'paquo', not {door!r}")
    if door != "files":
        from qupath_camseg.qupath import paquo_project as paquo_door

        if door == "paquo" or paquo_door.find_qupath_installation()[0] is not None:
            return paquo_door.PaquoProject(path, mode)
    return FileProject(path, mode)


def create_project(folder: str | os.PathLike[str], *, final_folder: str | os.PathLike[str] | None = None) -> FileProject:
    """Create a new QuPath project in ``folder`` (file door, mode ``"x"``); close it when done.

    ``final_folder``: where the project will live, when it is built elsewhere and moved there
    (recorded as the project's ``uri``, which QuPath uses to resolve moved images).
    """
    return FileProject(folder, "x", final_folder=final_folder)
