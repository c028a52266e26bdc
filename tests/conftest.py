"""Shared pytest fixtures. Test data is generated (synthetic slides) or read in place from
``../shared/data`` (real slides and annotations); nothing is copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("QCAMSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample files (``../shared/data``); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set QCAMSEG_SHARED_DATA)")
    return SHARED_DATA
