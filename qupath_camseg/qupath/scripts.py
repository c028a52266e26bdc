"""The QuPath scripts (Groovy) that run camseg from QuPath's menus, and installing them.

The scripts live in the repository's ``groovy/`` folder and ship inside the package as
``qupath_camseg/groovy/*.groovy`` (package data; in a source checkout that folder is a link to
``groovy/``). :func:`install_scripts` copies them into a folder QuPath lists as a menu:

* QuPath 0.5 and 0.6 list ``<QuPath user directory>/scripts`` under *Automate › User scripts…*;
  the user directory is ``~/QuPath/v0.5`` or ``~/QuPath/v0.6`` unless changed in the preferences
  (``UserDirectoryManager.getScriptsDirectoryPath()`` in QuPath's sources).
* *Automate › Shared scripts…* lists the folder in the ``scriptsPath`` preference
  (``PathPrefs.scriptsPathProperty()``), which is unset until the user picks one with
  *Set script directory…*; QuPath 0.4 has only this menu.

All camseg scripts must sit in one folder: they load their shared helper ``camseg_lib.groovy``
from the folder of the running script.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from qupath_camseg._io import atomic_write_bytes, backup_file
from qupath_camseg.errors import CamsegError, OutputNotWritableError

__all__ = ["InstallResult", "default_scripts_dir", "install_scripts", "script_files", "scripts_source_dir"]

_LIB_NAME = "camseg_lib.groovy"
_VERSION_DIR = re.compile(r"v(\d+)\.(\d+)")


def scripts_source_dir() -> Path:
    """The folder holding the shipped ``*.groovy`` scripts (package data, else the checkout's)."""
    candidates = [Path(__file__).with_name("groovy"), Path(__file__).resolve().parents[1] / "groovy"]
    for folder in candidates:
        if (folder / _LIB_NAME).is_file():
            return folder
    raise CamsegError(
        f"the camseg QuPath scripts are missing (looked in {', '.join(map(str, candidates))}); "
        "reinstall qupath-camseg"
    )


def script_files() -> list[Path]:
    """All shipped scripts, sorted by name (the menu order in QuPath)."""
    return sorted(scripts_source_dir().glob("*.groovy"))


def default_scripts_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """``<newest ~/QuPath/v0.N>/scripts``: the folder of QuPath 0.5+'s *Automate › User scripts…*.

    QuPath creates ``~/QuPath/v0.N`` (its user directory) when first started; raises
    :class:`CamsegError` when there is none.
    """
    base = Path(home) if home is not None else Path.home()
    versions = []
    for path in (base / "QuPath").glob("v*"):
        match = _VERSION_DIR.fullmatch(path.name)
        if match and path.is_dir():
            versions.append(((int(match[1]), int(match[2])), path))
    if not versions:
        raise CamsegError(
            f"no QuPath user directory in {base / 'QuPath'} (QuPath makes ~/QuPath/v0.N when first "
            "started); start QuPath once, or choose the folder with --dir"
        )
    return max(versions)[1] / "scripts"


@dataclass
class InstallResult:
    """What :func:`install_scripts` did: files ``copied`` into ``folder``; ``unchanged`` ones were
    already identical; ``backups`` of scripts that had been edited there (e.g. settings)."""

    folder: Path
    copied: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)


def install_scripts(folder: str | os.PathLike[str] | None = None) -> InstallResult:
    """Copy every shipped script into ``folder`` (default :func:`default_scripts_dir`).

    Other files there are left alone. A script of ours that differs from the shipped one (edited
    settings, older version) is backed up as ``<name>.<timestamp>.bak`` before it is replaced.
    """
    target = Path(folder).expanduser() if folder is not None else default_scripts_dir()
    sources = script_files()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritableError(f"cannot create {target} ({err.strerror}); choose another --dir") from err
    result = InstallResult(folder=target.resolve())
    for src in sources:
        data = src.read_bytes()
        dst = target / src.name
        if dst.is_file():
            if dst.read_bytes() == data:
                result.unchanged.append(dst)
                continue
            result.backups.append(backup_file(dst))
        atomic_write_bytes(dst, data)
        result.copied.append(dst)
    return result
