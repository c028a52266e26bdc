"""A project's images (:class:`ProjectEntry`) and :class:`Project`, the interface both doors
implement: :class:`~qupath_camseg.qupath.file_project.FileProject` (QuPath's files read as JSON)
and :class:`~qupath_camseg.qupath.paquo_project.PaquoProject` (QuPath's own Java code).

Everything this package writes for a project lives under ``<project>/camseg/``:
``annotations/<entryID>.geojson`` (annotations exported by the Groovy bridge, or written by
``qcamseg synth`` / ``import-annotations``), ``backups/`` and ``camseg.lock``. Writers hold the
lock for as long as the project is open, so two writers fail fast with
:class:`~qupath_camseg.errors.ProjectLockedError`.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import ClassVar, Literal, TypeVar

from qupath_camseg._io import file_lock, no_link
from qupath_camseg.annotations import QPObject
from qupath_camseg.errors import ImageMissingError, ProjectError

__all__ = ["Mode", "Project", "ProjectEntry", "entry_image_path", "find_entry"]

#: Modes as paquo's (and ``open``'s): read-only, read/write an existing project, create a new one.
Mode = Literal["r", "r+", "x"]


@dataclass(frozen=True)
class ProjectEntry:
    """One image of a project.

    ``entry_id`` is QuPath's ``entryID`` as a string (also the ``data/<entryID>/`` folder name);
    ``path`` is the image file found on this machine (``None`` when missing: see
    :meth:`Project.image_path` for the reason); ``recorded_path`` is the path the URI names.
    """

    entry_id: str
    image_name: str
    uri: str | None
    path: Path | None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    recorded_path: PurePath | None = None


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


_P = TypeVar("_P", bound="Project")


class Project(abc.ABC):
    """A QuPath project opened through one door (open one with
    :func:`~qupath_camseg.qupath.doors.open_project`); use it as a context manager.

    Shared here: locating ``project.qpproj`` (``path``: the project folder), the mode check,
    entry lookup, the writer lock and closing. Each door lists the entries (``_entries``), reads
    and writes objects and adds images; subclasses call :meth:`_lock` when opened for writing.
    """

    door: ClassVar[str]
    path: Path
    qpproj: Path
    mode: Mode
    _entries: list[ProjectEntry]
    _stack: contextlib.ExitStack

    def __init__(self, path: str | os.PathLike[str], mode: Mode) -> None:
        if mode not in ("r", "r+", "x"):
            raise ValueError(f"mode must be 'r', 'r+' or 'x', not {mode!r}")
        p = Path(path).expanduser().absolute()
        self.qpproj = p if p.suffix == ".qpproj" else p / "project.qpproj"
        self.path = self.qpproj.parent
        self.mode = mode
        self._entries = []
        self._stack = contextlib.ExitStack()

    # -- reading
    @property
    def camseg_dir(self) -> Path:
        """``<project>/camseg``: everything this package writes for the project. A ``camseg`` that is
        a link (a crafted project could point it anywhere) is refused with
        :class:`~qupath_camseg.errors.UnsafePathError`."""
        return no_link(self.path / "camseg")

    @property
    @abc.abstractmethod
    def version(self) -> str | None:
        """The QuPath version string stored in the project (e.g. ``"0.3.2"``, ``"0.6.0-rc3"``)."""

    @property
    @abc.abstractmethod
    def path_classes(self) -> list[tuple[str, tuple[int, int, int] | None]]:
        """The project's class list as ``[(name, (r, g, b) or None)]``."""

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

    @abc.abstractmethod
    def read_annotations(self, entry: str | ProjectEntry) -> list[QPObject]:
        """The entry's objects (level-0 px); ``[]`` if none."""

    # -- writing
    @abc.abstractmethod
    def write_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject], *,
                          keep_user: bool = True) -> Path | None:
        """Replace *our* objects of ``entry`` by ``objs`` (the user's are kept unless
        ``keep_user=False``); backs up first and returns the backup (or None)."""

    def write_objects(self, entry: str | ProjectEntry, objs: Iterable[QPObject], *,
                      keep_user: bool = True) -> Path | None:
        """The same as :meth:`write_annotations` (objects of any type: annotations, detections, tiles)."""
        return self.write_annotations(entry, objs, keep_user=keep_user)

    @abc.abstractmethod
    def add_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject]) -> Path | None:
        """Append ``objs`` to the entry's objects, keeping all that are there (backup first)."""

    @abc.abstractmethod
    def add_image(self, image: str | os.PathLike[str], *, name: str | None = None,
                  metadata: dict[str, str] | None = None) -> ProjectEntry:
        """Add an image file as a new entry and save the project; returns the new entry."""

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise ProjectError(f"{self.qpproj} is open read-only; open it with mode 'r+' to change it")

    def _lock(self) -> None:
        self._stack.enter_context(file_lock(self.camseg_dir / "camseg.lock", what=f"QuPath project {self.path}"))

    # -- closing
    def close(self) -> None:
        """Release the writer lock (if any). Safe to call twice."""
        self._stack.close()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
