"""The predict reader cuts overlapping tiles from cached, stored-tile-aligned blocks: every tile
must be pixel-identical to ``Slide.read_region_mpp`` (the uncached path), edges included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qupath_camseg.predict import TilePlan, TileReader
from qupath_camseg.wsi import open_slide


def _compare_all_tiles(path: Path, model_mpp: float, *, tile_px: int, slide_mpp: float | None = None,
                       max_tiles: int = 400) -> int:
    with open_slide(path, mpp=slide_mpp) as slide:
        plan = TilePlan.create(slide.dimensions, slide.mpp, model_mpp, tile_px=tile_px, chunk_px=128,
                               stripe_chunks=2)
        gh, gw = plan.grid_shape
        reader = TileReader(path, slide_mpp, plan, model_mpp)
        try:
            checked = 0
            for ty in range(gh):
                for tx in range(gw):
                    if checked >= max_tiles:
                        return checked
                    p, t = plan, plan.tile_px
                    box = (p.tile_origin(tx) * p.ds, p.tile_origin(ty) * p.ds, t * p.ds, t * p.ds)
                    expected = slide.read_region_mpp(box, model_mpp, out_size=(t, t))
                    got = reader.read(ty, tx)
                    assert got.shape == expected.shape and got.dtype == np.uint8
                    assert np.array_equal(got, expected), f"tile {(ty, tx)} of {path.name} at {model_mpp} µm/px"
                    checked += 1
        finally:
            reader.close()
    return checked


@pytest.mark.parametrize("model_mpp", [0.5, 1.0, 0.7])  # exact pyramid levels and a resampled one
def test_cached_reader_matches_read_region_mpp_on_synthetic(synthetic_slide: tuple[Path, object],
                                                            model_mpp: float) -> None:
    path, _ = synthetic_slide
    assert _compare_all_tiles(path, model_mpp, tile_px=256) > 20


def test_cached_reader_matches_on_real_svs(shared_data: Path) -> None:
    # JPEG tiles of 240 px (not a power of two) at 0.499 µm/px
    assert _compare_all_tiles(shared_data / "svs" / "cmu-1-small-region.svs", 1.0, tile_px=256) > 10
    # JPEG-2000, no MPP in the file, level 1 at downsample 2.0005
    assert _compare_all_tiles(shared_data / "svs" / "tcga-cr-7395-01a-01-ts1.svs", 1.9, tile_px=256,
                              slide_mpp=0.25) >= 9


def test_auto_readers_use_processes_only_on_cuda_with_room_in_dev_shm(monkeypatch):
    """Containers often give /dev/shm 64 MB; DataLoader readers would die there, so auto keeps threads."""
    import qupath_camseg._runtime as io_mod
    from qupath_camseg.predict import use_read_processes

    batch = 32 * 512 * 512 * 3  # 25 MB
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 64 << 20)
    assert not use_read_processes("auto", "cuda", 16, batch_bytes=batch)
    assert use_read_processes("processes", "cuda", 16, batch_bytes=batch)  # asked for: obeyed
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 64 << 30)
    assert use_read_processes("auto", "cuda", 16, batch_bytes=batch)
    assert not use_read_processes("auto", "cpu", 16, batch_bytes=batch)
    assert not use_read_processes("auto", "cuda", 1, batch_bytes=batch)
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: None)  # no /dev/shm (not Linux)
    assert use_read_processes("auto", "cuda", 4, batch_bytes=batch)
    assert io_mod.shm_free_bytes() is None
