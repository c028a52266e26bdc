"""Tile grids: full coverage, edge policies, tissue filtering."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qupath_camseg.wsi import level0_size, tile_grid, tissue_fractions, tissue_tiles


class _Mask:
    """A minimal object with the TissueMask fields tissue_fractions reads."""

    def __init__(self, mask: np.ndarray, downsample: float) -> None:
        self.mask, self.downsample = mask, downsample


def test_exact_grid() -> None:
    assert tile_grid((0, 0, 20, 10), 10) == [(0, 0, 10, 10), (10, 0, 10, 10)]
    assert tile_grid((5, 7, 20, 10), 10, 5) == [(5, 7, 10, 10), (10, 7, 10, 10), (15, 7, 10, 10)]


def test_edge_policies() -> None:
    assert tile_grid((0, 0, 25, 10), 10, edge="shift") == [(0, 0, 10, 10), (10, 0, 10, 10), (15, 0, 10, 10)]
    assert tile_grid((0, 0, 25, 10), 10, edge="overhang")[-1] == (20, 0, 10, 10)
    assert tile_grid((0, 0, 25, 10), 10, edge="drop") == [(0, 0, 10, 10), (10, 0, 10, 10)]
    assert tile_grid((3, 3, 4, 4), 10) == [(3, 3, 10, 10)]  # smaller than a tile: one tile
    assert tile_grid((0, 0, 4, 4), 10, edge="drop") == []


@given(w=st.integers(1, 300), h=st.integers(1, 300), tile=st.integers(1, 64), frac=st.floats(0.25, 1.0))
def test_grid_covers_every_pixel(w: int, h: int, tile: int, frac: float) -> None:
    stride = max(1, int(tile * frac))
    cover = np.zeros((h, w), bool)
    for x, y, tw, th in tile_grid((0, 0, w, h), tile, stride):
        assert tw == th == tile
        if w >= tile and h >= tile:
            assert x >= 0 and x + tw <= w and y >= 0 and y + th <= h
        cover[y : y + th, x : x + tw] = True
    assert cover.all()


def test_level0_size() -> None:
    assert level0_size(512, 0.5, 0.25) == 1024
    assert level0_size(128, 2.0, 0.5) == 512


def test_tissue_fraction_and_filter() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True  # left half is tissue; each mask pixel = 8 level-0 px
    tm = _Mask(mask, 8.0)
    fr = tissue_fractions(tm, [(0, 0, 40, 40), (20, 0, 40, 40), (40, 0, 40, 40), (60, 60, 80, 80)])
    np.testing.assert_allclose(fr, [1.0, 0.5, 0.0, 0.0])
    kept = tissue_tiles((80, 80), tm, 40, 20, 0.5)
    assert kept == [(x, y, 40, 40) for y in (0, 20, 40) for x in (0, 20)]
    assert len(tissue_tiles((80, 80), None, 40)) == 4


def test_bad_sizes() -> None:
    with pytest.raises(ValueError):
        tile_grid((0, 0, 10, 10), 0)
    with pytest.raises(ValueError):
        tile_grid((0, 0, 10, 10), 5, edge="wrap")  # type: ignore[arg-type]
