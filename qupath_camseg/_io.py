"""Safe file writing: temp file + rename, backups, output paths that stay inside their folder,
and an inter-process lock.

Nothing the package writes is ever left half-written: :func:`atomic_write` writes into a
temporary file in the destination folder, fsyncs it and renames it over the target, so a reader
sees the old file or the new one, never a mix. ``ENOSPC`` / ``EACCES`` / ``EFBIG`` become
:class:`~qupath_camseg.errors.OutputNotWritableError` with the path and a fix. On Windows a
rename over a file another program holds open fails for a moment (virus scanners, QuPath reading
it): the rename is retried for about a second before the error names the file.

:func:`entry_file` is the one place that turns a project entry's ID into a file name under
``<project>/camseg/`` and proves the result stays there; :func:`file_lock` is a cross-platform
lock (the ``filelock`` package: ``flock`` on POSIX, ``msvcrt`` on Windows) that the same process
may take again (a nested ``with`` is free) and that dies with its process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

with warnings.catch_warnings():  # without fcntl (simulated Windows) filelock falls back to a lock file and says so
    warnings.simplefilter("ignore")
    import filelock

from qupath_camseg.errors import OutputNotWritableError, ProjectLockedError, UnsafePathError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "backup_file",
    "entry_file",
    "entry_stem",
    "file_lock",
    "no_link",
    "path_inside",
    "replace_file",
    "safe_file_stem",
]

#: How long a rename over a file another program holds open is retried (Windows), in seconds.
_REPLACE_RETRY_S = 1.0


def _not_writable(path: Path, err: OSError) -> OutputNotWritableError:
    if err.errno == errno.ENOSPC:
        fix = "free disk space or choose another output folder"
        what = "disk full"
    elif err.errno == errno.EFBIG:
        fix = "raise the file-size limit (ulimit -f) or write to another file system"
        what = "file too large for this system's file-size limit"
    elif isinstance(err, PermissionError) and getattr(err, "winerror", None) in (5, 32, 33):
        fix = "close it in the program that has it open (QuPath, a viewer), then run again"
        what = "the file is open in another program"
    else:
        fix = "choose a folder you can write to or fix its permissions"
        what = err.strerror or type(err).__name__
    return OutputNotWritableError(f"cannot write {path}: {what}; {fix}")


def _final_mode(target: Path) -> int:
    """The permission bits a plain ``open(target, "w")`` would give: the existing file's mode,
    else 0o666 minus the umask (``mkstemp`` alone would leave an owner-only 0o600 file, which
    breaks projects shared between users)."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it onto ``path``.

    ``mode`` is ``"w"`` (text, UTF-8 by default) or ``"wb"``. On any exception the temporary file
    is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise _not_writable(target, err) from err
    tmp = Path(tmp_name)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
        open_kwargs.setdefault("newline", "\n")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            if hasattr(os, "fchmod"):  # POSIX (Windows only from Python 3.13; its files have no mode bits)
                os.fchmod(fh.fileno(), _final_mode(target))
            os.fsync(fh.fileno())
        replace_file(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _not_writable(target, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(src: Path, dst: Path) -> None:
    """``os.replace(src, dst)``, retried for about a second while ``dst`` is held open by another
    program (Windows refuses to rename over such a file; POSIX never does)."""
    deadline = time.monotonic() + _REPLACE_RETRY_S
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON (UTF-8, ``µ`` kept as is) and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def backup_file(path: str | os.PathLike[str], *, backup_dir: str | os.PathLike[str] | None = None) -> Path:
    """Copy ``path`` to ``<backup_dir or path's folder>/<name>.<UTC timestamp>.bak`` and return it.

    Called before any change to a file the user owns (e.g. ``project.qpproj``). The copy is made
    under a temporary name and renamed, so a backup file is always complete.
    """
    src = Path(path)
    folder = Path(backup_dir) if backup_dir is not None else src.parent
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dst = folder / f"{src.name}.{stamp}.bak"
    n = 1
    while dst.exists():
        dst = folder / f"{src.name}.{stamp}-{n}.bak"
        n += 1
    tmp = folder / f".{dst.name}.tmp"
    try:  # copy, then rename: a crash never leaves a truncated file that looks like a backup
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tmp)
        replace_file(tmp, dst)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _not_writable(dst, err) from err
    return dst


# ------------------------------------------------------------------------------ output paths
#: A project entry's ID as QuPath writes it: a decimal integer (``entryID``, a Java ``long``).
_ENTRY_ID = re.compile(r"[0-9]{1,19}")
#: Characters no file name may hold on Windows, macOS or Linux (and control characters).
_UNSAFE_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
#: Windows device names, reserved with any extension (``CON.geojson`` is the console).
_WINDOWS_DEVICE = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])")


def entry_stem(entry_id: object, *, where: str = "the project") -> str:
    """QuPath's ``entryID`` (a whole number, as JSON number or digits) as a string; anything else
    (``"../x"``, ``"/tmp/x"``, ``[1]``, ``true``) is refused with
    :class:`~qupath_camseg.errors.UnsafePathError` naming ``where``."""
    text = str(entry_id) if isinstance(entry_id, int) and not isinstance(entry_id, bool) else entry_id
    if not isinstance(text, str) or not _ENTRY_ID.fullmatch(text):
        raise UnsafePathError(
            f"{where} has entryID {json.dumps(entry_id)[:200]}, which is not a QuPath entry ID (a whole number); "
            "the project file was edited or crafted - restore it from a backup or re-create the project in QuPath")
    return text


def safe_file_stem(stem: str) -> str:
    """``stem`` when it is one file name that is safe on Windows, macOS and Linux (no separators,
    drive letters, reserved characters or device names, not ``.``/``..``, no trailing dot or
    space); :class:`~qupath_camseg.errors.UnsafePathError` otherwise."""
    if (not isinstance(stem, str) or stem in ("", ".", "..") or _UNSAFE_NAME.search(stem)
            or stem != stem.strip() or stem.endswith(".") or len(stem.encode("utf-8")) > 200
            or _WINDOWS_DEVICE.fullmatch(stem.split(".")[0])):
        raise UnsafePathError(
            f"{str(stem)[:80]!r} cannot be used as a file name on every platform; rename the slide "
            "or predict it through a QuPath project")
    return stem


def path_inside(folder: str | os.PathLike[str], *parts: str) -> Path:
    """``folder / parts...``, proven to stay inside ``folder`` once links and ``..`` are resolved;
    :class:`~qupath_camseg.errors.UnsafePathError` naming both otherwise."""
    base = Path(folder).absolute().resolve()
    target = base.joinpath(*parts).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePathError(
            f"{Path(folder).joinpath(*parts)} leads outside {folder} (a link or '..'); refusing to write there - "
            "remove the link or choose another output folder")
    return Path(folder).absolute().joinpath(*parts)


def no_link(folder: Path) -> Path:
    """``folder``, unless it is a symbolic link (or junction): a project's own ``camseg/`` or
    ``classifiers/`` must be real folders, or a crafted project could send writes anywhere."""
    if folder.is_symlink() or (hasattr(folder, "is_junction") and folder.is_junction()):
        raise UnsafePathError(f"{folder} is a link to {os.readlink(folder)}; qcamseg writes only inside the project - "
                              "replace the link by a folder")
    return folder


def entry_file(folder: str | os.PathLike[str], kind: str, entry_id: str, suffix: str = "") -> Path:
    """``<folder>/<kind>/<entry ID><suffix>`` (e.g. ``<project>/camseg/predictions/3.geojson``):
    the one function that names the files written for a project entry (or a bare slide, whose
    file stem stands in for the ID). The stem must be one safe file name (:func:`safe_file_stem`)
    and the path is proven to stay inside ``folder`` (:func:`path_inside`)."""
    return path_inside(folder, *[k for k in kind.split("/") if k], f"{safe_file_stem(entry_id)}{suffix}")


# ------------------------------------------------------------------------------ the lock
#: Locks this process holds: normalised path → [pid, lock, nested depth, nestable, thread id].
_HELD: dict[str, list[Any]] = {}


def _owner_file(path: Path) -> Path:
    return path.with_name(path.name + ".owner")


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike[str], *, what: str = "this project",
              allow_nested: bool = False) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``lock_path`` for the block (``filelock``: ``flock``
    on POSIX, ``msvcrt`` on Windows, a lock file where neither exists).

    Another process that tries to take the same lock gets :class:`ProjectLockedError` at once
    (rather than two writers interleaving), naming the holder (written to ``<lock>.owner``); so
    does another writer in this process. With ``allow_nested`` the holder's own thread may take
    it again inside the block (a command that holds its project for the whole run and opens it
    for writing on the way). The lock dies with the process, so a ``kill -9`` never leaves a
    stale lock behind.
    """
    path = Path(lock_path).absolute()
    key = os.path.normcase(str(path))
    held = _HELD.get(key)
    if held is not None and held[0] == os.getpid() and held[3] and held[4] == threading.get_ident():
        held[2] += 1
        try:
            yield
        finally:
            held[2] -= 1
        return
    if held is not None and held[0] == os.getpid():
        raise ProjectLockedError(f"{what} is in use by qcamseg pid {os.getpid()} (another writer in this process; "
                                 f"lock {path}); wait for it to finish, then run again")
    lock = _acquire(path, what)
    _HELD[key] = [os.getpid(), lock, 1, allow_nested, threading.get_ident()]
    try:
        with contextlib.suppress(OutputNotWritableError):
            atomic_write_text(_owner_file(path), f"qcamseg pid {os.getpid()} ({' '.join(sys.argv[1:2]) or 'python'})")
        yield
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            _owner_file(path).unlink(missing_ok=True)
        lock.release()


def _acquire(path: Path, what: str) -> filelock.BaseFileLock:
    """Take the lock at ``path`` now, or raise :class:`ProjectLockedError` naming its holder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(path), thread_local=False)
        lock.acquire(blocking=False)
    except filelock.Timeout as err:
        try:
            holder = _owner_file(path).read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            holder = "another qcamseg command"
        raise ProjectLockedError(
            f"{what} is in use by {holder} (lock {path}); wait for it to finish, then run again") from err
    except OSError as err:
        raise _not_writable(path, err) from err
    return lock
