"""Image URIs as QuPath writes them (``file:/I:/a%20b/x.svs``) ↔ paths, and finding an entry's
image on this machine (QuPath's rule for a project moved together with its images)."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from urllib.parse import quote, unquote, urlsplit

__all__ = ["uri_to_path", "path_to_uri", "resolve_image"]


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
    """An absolute local path → a URI in QuPath's form (``file:/abs/path``; Windows
    ``file:/C:/a%20b/x.svs``, UNC shares ``file:////server/share/x.svs``; ``%`` escapes).

    A :class:`~pathlib.PureWindowsPath` is written in the Windows form on any platform."""
    p = path if isinstance(path, PureWindowsPath) else Path(path).absolute()
    text = PureWindowsPath(p).as_posix() if isinstance(p, PureWindowsPath) else p.as_posix()
    if isinstance(p, PureWindowsPath) and not text.startswith("/"):
        text = "/" + text  # C:/x -> /C:/x; //server/share stays
    return "file:" + quote(text, safe="/:@!$&'()*+,;=~")


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
