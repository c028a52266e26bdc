"""Safe file writing: temp file + rename, backups, and an inter-process lock.

Nothing the package writes is ever left half-written: :func:`atomic_write` writes into a
temporary file in the destination folder, fsyncs it and renames it over the target, so a reader
sees the old file or the new one, never a mix. ``ENOSPC`` / ``EACCES`` become
:class:`~qupath_camseg.errors.OutputNotWritableError` with the path and a fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from qupath_camseg.errors import OutputNotWritableError, ProjectLockedError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "backup_file",
    "file_lock",
]


def _not_writable(path: Path, err: OSError) -> OutputNotWritableError:
    if err.errno == errno.ENOSPC:
        fix = "free disk space or choose another output folder"
        what = "disk full"
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
            os.fchmod(fh.fileno(), _final_mode(target))
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _not_writable(target, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        os.replace(tmp, dst)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _not_writable(dst, err) from err
    return dst


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike[str], *, what: str = "this project") -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``lock_path`` (``fcntl.flock``) for the block.

    A second process that tries to take the same lock gets :class:`ProjectLockedError` at once
    (rather than two writers interleaving). The lock dies with the process, so a ``kill -9``
    never leaves a stale lock behind.
    """
    import fcntl  # POSIX only; Windows users get no lock rather than a crash

    path = Path(lock_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - closed in finally
    except OSError as err:
        raise _not_writable(path, err) from err
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ProjectLockedError(
                f"{what} is in use by {holder} (lock {path}); wait for it to finish, then run again"
            ) from err
        fh.seek(0)
        fh.truncate()
        fh.write(f"qcamseg pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()
