"""QuPath projects through the paquo door: QuPath's own Java code reads and writes the project.

This is the only module that imports :mod:`paquo`, and it does so inside functions: importing
``paquo.java`` starts a JVM, which needs a QuPath installation. :func:`find_qupath_installation`
asks paquo's own finder (``paquo.jpype_backend.find_qupath`` with paquo's settings:
``PAQUO_QUPATH_DIR``, ``.paquo.toml``, the default search folders) and never starts the JVM.

:class:`PaquoProject` implements :class:`~qupath_camseg.qupath.entries.Project` (as
:class:`~qupath_camseg.qupath.file_project.FileProject` does), but reads annotations from, and
writes objects into, the QuPath object hierarchy (``data/<id>/data.qpdata``) so they show in
QuPath as soon as the project is reopened. paquo exposes no per-object metadata, so here the name
alone marks our objects: they are written with a name starting with
:data:`~qupath_camseg.annotations.objects.OUR_NAME_PREFIX` (``camseg Tumor``, ``camseg tile``), the
same rule as :func:`~qupath_camseg.annotations.objects.is_ours` and the Groovy bridge; rewriting
removes only those, and of those not the ones the user reshaped or reclassified (their measurement
``camseg fingerprint`` no longer matches, :mod:`qupath_camseg.annotations.fingerprint`). The project file and the entry's data file are backed up to
``<project>/camseg/backups/`` before each write.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qupath_camseg._io import backup_file, entry_stem, path_inside
from qupath_camseg.annotations import (
    CAMSEG_METADATA,
    FINGERPRINT_KEY,
    OUR_NAME_PREFIX,
    QPObject,
    default_class_color,
    is_ours,
)
from qupath_camseg.errors import (
    ImageMissingError,
    ProjectError,
    ProjectExistsError,
    ProjectNotFoundError,
    QuPathNotFoundError,
)
from qupath_camseg.qupath.entries import Mode, Project, ProjectEntry
from qupath_camseg.qupath.uris import resolve_image, uri_to_path

__all__ = ["find_qupath_installation", "PaquoProject", "PAQUO_API", "path_class"]


#: Every paquo callable this module calls, by the name used at the call site → "module:qualname"
#: in paquo. ``tests/qupath/test_paquo_door.py`` parses this file, finds each call by that name and
#: checks its arguments bind to paquo's real signature (``inspect.signature``), so a call that
#: drifts from paquo's API fails a test even without QuPath.
PAQUO_API: dict[str, str] = {
    "find_qupath": "paquo.jpype_backend:find_qupath",
    "to_kwargs": "paquo._config:to_kwargs",
    "QuPathProject": "paquo.projects:QuPathProject",
    "update_image_paths": "paquo.projects:QuPathProject.update_image_paths",
    "add_image": "paquo.projects:QuPathProject.add_image",
    "save": "paquo.projects:QuPathProject.save",
    "QuPathPathClass": "paquo.classes:QuPathPathClass",
    "to_rgb": "paquo.colors:QuPathColor.to_rgb",
    "add_annotation": "paquo.hierarchy:QuPathPathObjectHierarchy.add_annotation",
    "add_detection": "paquo.hierarchy:QuPathPathObjectHierarchy.add_detection",
    "add_tile": "paquo.hierarchy:QuPathPathObjectHierarchy.add_tile",
    "discard": "paquo.hierarchy:PathObjectProxy.discard",
}

_FIX = ("install QuPath (https://qupath.github.io) and set PAQUO_QUPATH_DIR=/path/to/QuPath "
        "(or run 'paquo get_qupath'), or use the QuPath-free door (--door files)")


def find_qupath_installation() -> tuple[Path | None, str]:
    """Where paquo finds QuPath: ``(folder, "found by paquo ...")`` or ``(None, why not + fix)``.

    Uses paquo's settings and finder only; starts no JVM.
    """
    from paquo import settings
    from paquo._config import to_kwargs
    from paquo.jpype_backend import find_qupath

    kwargs = to_kwargs(settings)
    if kwargs.get("mock_backend"):
        return None, f"PAQUO_MOCK_BACKEND is set, so paquo has no QuPath; unset it and {_FIX}"
    qupath_dir = kwargs.get("qupath_dir") or None
    try:
        info = find_qupath(
            qupath_dir=qupath_dir,
            qupath_search_dirs=kwargs.get("qupath_search_dirs"),
            qupath_search_dir_regex=kwargs.get("qupath_search_dir_regex"),
            qupath_search_conda=kwargs.get("qupath_search_conda"),
            qupath_prefer_conda=kwargs.get("qupath_prefer_conda"),
            java_opts=list(kwargs.get("java_opts") or []),
            jvm_path_override=kwargs.get("jvm_path_override") or None,
        )
    except (FileNotFoundError, IsADirectoryError) as err:
        where = f"PAQUO_QUPATH_DIR={qupath_dir}" if qupath_dir else "paquo's jvm_path_override"
        return None, f"{where} is not a usable QuPath installation ({err}); {_FIX}"
    except ValueError as err:
        dirs = ", ".join(str(d) for d in kwargs.get("qupath_search_dirs") or [])
        return None, f"paquo found no QuPath ({err}; searched {dirs or 'nothing'}); {_FIX}"
    app_dir = Path(info.app_dir)
    folder = app_dir.parent if platform.system() == "Windows" else app_dir.parent.parent
    return folder, f"found by paquo at {folder} (JVM {info.jvm_path})"


def _is_ours_name(name: str | None) -> bool:
    return bool(name) and str(name).startswith(OUR_NAME_PREFIX)


def _replaceable(obj: Any, object_type: str) -> bool:
    """A hierarchy object that a rewrite replaces: ours by name and, when it holds a shape
    fingerprint, not reshaped or reclassified since (:func:`~qupath_camseg.annotations.is_ours`)."""
    if not _is_ours_name(obj.name):
        return False
    if FINGERPRINT_KEY not in obj.measurements:
        return True  # tiles and older predictions: the name decides (no geometry read from Java)
    return is_ours(_to_qpobject(obj, object_type))


class PaquoProject(Project):
    """A QuPath project opened with paquo (QuPath's Java code): a
    :class:`~qupath_camseg.qupath.entries.Project`; modes ``"r"``, ``"r+"``, ``"x"``."""

    door = "paquo"

    def __init__(self, path: str | os.PathLike[str], mode: Mode = "r") -> None:
        super().__init__(path, mode)
        folder, reason = find_qupath_installation()
        if folder is None:
            raise QuPathNotFoundError(f"the paquo door needs QuPath: {reason}")
        if mode != "x" and not self.qpproj.is_file():
            raise ProjectNotFoundError(f"no QuPath project at {self.qpproj}; pass a project folder or its project.qpproj")
        if mode == "x" and self.qpproj.exists():
            raise ProjectExistsError(f"{self.qpproj} already exists; choose an empty folder or open it with mode 'r+'")
        if mode == "r+":  # for "x" the lock comes after QuPath made the project (it wants an empty folder)
            self._lock()
        from paquo.projects import QuPathProject

        try:
            self._qp = QuPathProject(self.qpproj, mode=mode)
        except (OSError, ValueError, RuntimeError) as err:
            self.close()
            raise ProjectError(f"QuPath cannot open {self.qpproj} ({err}); check it opens in QuPath") from err
        if mode == "x":
            self._lock()
        if mode != "r":  # QuPath's rule for a project moved together with its images
            self._qp.update_image_paths(try_relative=True)
        self._refresh()

    def _refresh(self) -> None:
        previous = None  # paquo has already applied the moved-project rule to the URIs
        self._images = {}
        entries = []
        for img in self._qp.images:
            uri = img.uri
            e = ProjectEntry(
                entry_id=str(img.entry_id),
                image_name=str(img.image_name),
                uri=uri,
                path=resolve_image(uri, self.path, previous),
                metadata={str(k): str(v) for k, v in dict(img.metadata).items()},
                description=img.description,
                recorded_path=uri_to_path(uri) if uri else None,
            )
            self._images[e.entry_id] = img
            entries.append(e)
        self._entries = entries

    # -- the Project interface
    @property
    def version(self) -> str | None:
        """The QuPath version string stored in the project."""
        return self._qp.version

    @property
    def path_classes(self) -> list[tuple[str, tuple[int, int, int] | None]]:
        """QuPath's class list as ``[(name, (r, g, b) or None)]``."""
        out = []
        for pc in self._qp.path_classes:
            out.append((pc.id, tuple(pc.color.to_rgb()) if pc.color is not None else None))  # id: "Tumor: Positive"
        return out

    def read_annotations(self, entry: str | ProjectEntry) -> list[QPObject]:
        """The entry's annotations from the QuPath hierarchy, as :class:`QPObject`."""
        img = self._images[self.entry(entry).entry_id]
        return [_to_qpobject(a, "annotation") for a in img.hierarchy.annotations]

    def write_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject], *,
                          keep_user: bool = True) -> Path | None:
        """Replace our objects of ``entry`` in the hierarchy by ``objs`` (annotations, detections,
        tiles; cells are written as detections). Backs up first; returns the backup folder."""
        e, img = self._writable_entry(entry)
        backup = self._backup(e)
        h = img.hierarchy
        for proxy, kind in ((h.annotations, "annotation"), (h.detections, "detection")):
            for obj in list(proxy):
                if not keep_user or _replaceable(obj, kind):
                    proxy.discard(obj)
        for obj in objs:
            self._add(h, obj, mark=is_ours(obj))
        self._qp.save()
        return backup

    def add_annotations(self, entry: str | ProjectEntry, objs: Iterable[QPObject]) -> Path | None:
        """Add ``objs`` to the entry's hierarchy, keeping everything there (backup first)."""
        e, img = self._writable_entry(entry)
        backup = self._backup(e)
        for obj in objs:
            self._add(img.hierarchy, obj, mark=is_ours(obj))
        self._qp.save()
        return backup

    def add_image(self, image: str | os.PathLike[str], *, name: str | None = None,
                  metadata: dict[str, str] | None = None) -> ProjectEntry:
        """Add an image (QuPath reads it now; type brightfield H&E) and save the project."""
        from paquo.images import QuPathImageType

        self._check_writable()
        if self.qpproj.is_file():
            backup_file(self.qpproj, backup_dir=self.camseg_dir / "backups")
        img = self._qp.add_image(Path(image).absolute(), image_type=QuPathImageType.BRIGHTFIELD_H_E,
                                 allow_duplicates=False)
        if name:
            img.image_name = name
        for k, v in (metadata or {}).items():
            img.metadata[k] = v
        self._qp.save()
        self._refresh()
        return self.entry(str(img.entry_id))

    # -- internals
    def _writable_entry(self, entry: str | ProjectEntry) -> tuple[ProjectEntry, Any]:
        self._check_writable()
        e = self.entry(entry)
        try:
            self.image_path(e)
        except ImageMissingError as err:
            raise ImageMissingError(f"{err} (QuPath saves objects only for images it can open)") from err
        return e, self._images[e.entry_id]

    def _backup(self, e: ProjectEntry) -> Path:
        folder = self.camseg_dir / "backups"
        backup_file(self.qpproj, backup_dir=folder)
        data = path_inside(self.path, "data", entry_stem(e.entry_id), "data.qpdata")
        if data.is_file():
            backup_file(data, backup_dir=path_inside(folder, f"data-{e.entry_id}"))
        return folder

    @staticmethod
    def _add(h: Any, obj: QPObject, *, mark: bool) -> None:
        pc = path_class(obj.classification, obj.color) if obj.classification else None
        meas = {str(k): float(v) for k, v in obj.measurements.items()}
        kind = obj.object_type
        if kind == "annotation":
            new = h.add_annotation(obj.geometry, path_class=pc, measurements=meas)
        elif kind == "tile":
            new = h.add_tile(obj.geometry, path_class=pc, measurements=meas)
        elif kind in ("detection", "cell"):
            new = h.add_detection(obj.geometry, path_class=pc, measurements=meas)
        else:
            raise ProjectError(f"cannot write a {kind!r} object into QuPath; use annotation, detection or tile")
        if mark and not _is_ours_name(obj.name):
            new.name = f"{OUR_NAME_PREFIX} {obj.name or obj.classification or kind}"
        else:
            new.name = obj.name
        if obj.locked:  # e.g. the camseg Tissue annotation
            new.locked = True


def path_class(name: str, color: tuple[int, int, int] | None = None) -> Any:
    """paquo's class for ``name``; a derived class (``"Tumor: Positive"``) is built part by part
    (``QuPathPathClass`` refuses ``':'`` in a name: the parts are chained with ``parent=``), and
    ``color`` goes to the last part (each parent gets its default colour)."""
    from paquo.classes import QuPathPathClass

    parts = [p.strip() for p in name.split(":") if p.strip()]
    pc = None
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        pc = QuPathPathClass(part, color=(color or default_class_color(name)) if last else default_class_color(part),
                             parent=pc)
    return pc


def _to_qpobject(obj: Any, object_type: str) -> QPObject:
    """A paquo path object → :class:`~qupath_camseg.annotations.objects.QPObject` (ours restored from the name)."""
    pc = obj.path_class
    name = obj.name
    ours = _is_ours_name(name)
    meas = {}
    for k, v in dict(obj.measurements).items():
        with contextlib.suppress(TypeError, ValueError):
            meas[str(k)] = float(v) if v is not None else math.nan
    return QPObject(
        geometry=obj.roi,
        object_type=object_type,
        classification=pc.id if pc is not None else None,  # the whole name ("Tumor: Positive"); .name is the last part
        color=tuple(pc.color.to_rgb()) if pc is not None and pc.color is not None else None,
        name=name,
        measurements=meas,
        metadata=dict(CAMSEG_METADATA) if ours else {},
        locked=bool(obj.locked),
    )
