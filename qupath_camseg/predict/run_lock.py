"""The lock a prediction run holds on its output folder, from before any work to the end.

``<out>/camseg.lock`` (for a project ``<project>/camseg/camseg.lock``, the project's own lock):
a second ``qcamseg predict``, an ``import-annotations`` or an ``export-qupath --into-project`` on
the same project stops at once with :class:`~qupath_camseg.errors.ProjectLockedError` instead of
running beside it. Under ``torchrun`` rank 0 holds it for the whole run (the other ranks are part
of the same run). The run may open the project for writing on the way (nested).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from qupath_camseg._dist import env_rank
from qupath_camseg._io import file_lock

__all__ = ["run_lock"]


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str], *, what: str) -> Iterator[None]:
    """Hold ``<out_dir>/camseg.lock`` for the block (rank 0 only; nested use by the holder is free)."""
    if env_rank()[0] != 0:
        yield
        return
    with file_lock(Path(out_dir) / "camseg.lock", what=what, allow_nested=True):
        yield
