"""Opening a QuPath project through the right door: paquo (QuPath's own Java code, annotations in
the project hierarchy) when a QuPath installation is found, QuPath's files read as JSON otherwise."""

from __future__ import annotations

import os
from typing import Literal

from qupath_camseg.qupath.entries import Mode, Project
from qupath_camseg.qupath.file_project import FileProject
from qupath_camseg.qupath.paquo_project import PaquoProject, find_qupath_installation

__all__ = ["Door", "open_project", "create_project"]

Door = Literal["auto", "files", "paquo"]


def open_project(path: str | os.PathLike[str], mode: Mode = "r", *, door: Door = "auto") -> Project:
    """Open a QuPath project (its folder or ``project.qpproj``).

    ``door="auto"`` uses paquo (annotations in the QuPath hierarchy) when
    :func:`~qupath_camseg.qupath.paquo_project.find_qupath_installation` finds QuPath, the files otherwise;
    ``"files"`` / ``"paquo"`` force one (``"paquo"`` without QuPath →
    :class:`~qupath_camseg.errors.QuPathNotFoundError` naming the fix).
    """
    if door not in ("auto", "files", "paquo"):
        raise ValueError(f"door must be 'auto', 'files' or 'paquo', not {door!r}")
    if door != "files" and (door == "paquo" or find_qupath_installation()[0] is not None):
        return PaquoProject(path, mode)
    return FileProject(path, mode)


def create_project(folder: str | os.PathLike[str], *, final_folder: str | os.PathLike[str] | None = None) -> FileProject:
    """Create a new QuPath project in ``folder`` (file door, mode ``"x"``); close it when done.

    ``final_folder``: where the project will live, when it is built elsewhere and moved there
    (recorded as the project's ``uri``, which QuPath uses to resolve moved images).
    """
    return FileProject(folder, "x", final_folder=final_folder)
