"""Shared pytest fixtures. Test data is generated (synthetic slides) or read in place from
``../shared/data`` (real slides and annotations); nothing is copied into the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests choose their own torch thread counts (determinism): no automatic sizing to the free cores,
# here or in the commands they start (tests of the sizing itself unset this).
os.environ.setdefault("QCAMSEG_THREADS", "off")
SHARED_DATA = Path(os.environ.get("QCAMSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real sample files (``../shared/data``); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set QCAMSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic slide with tumour, shared by the session: ``(path, truth)``.

    4096 x 3072 px at 0.25 µm/px (1 x 0.77 mm), seed 0, written once (about 2 s).
    """
    from qupath_camseg.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("synthetic") / "synthetic_seed0.tif"
    truth = write_synthetic_slide(path, width=4096, height=3072, seed=0, mpp=0.25)
    return path, truth
