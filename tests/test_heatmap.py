"""The probability heatmap TIFF: pyramid, pixel values and pixel size as tiffslide and OpenSlide see them."""

from __future__ import annotations

import numpy as np
import pytest

from qupath_camseg.heatmap import heatmap_levels, write_heatmap
from qupath_camseg.slides import open_slide


@pytest.fixture(scope="module")
def prob() -> np.ndarray:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:700, 0:1000]
    smooth = 0.5 + 0.5 * np.sin(xx / 60.0) * np.cos(yy / 45.0)
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("backend", ["tiffslide", "openslide"])
def test_heatmap_opens_with_right_mpp_and_pixels(tmp_path, prob, backend):
    path = write_heatmap(tmp_path / "h.tif", prob, 2.5, tile_px=256)
    expected = np.round(prob.astype(np.float64) * 255).astype(np.uint8)
    with open_slide(path, backend=backend) as s:
        assert s.backend == backend
        assert s.mpp == pytest.approx(2.5, rel=1e-6)
        assert s.dimensions == (1000, 700)
        assert [tuple(d) for d in s.level_dimensions] == heatmap_levels(1000, 700, 256)
        assert s.level_count >= 3
        rgb = s.read_region((0, 0), 0, (1000, 700))
        np.testing.assert_array_equal(rgb[..., 0], expected)
        # level 1 is the 2x2 mean of level 0 (within rounding)
        l1 = s.read_region((0, 0), 1, (500, 350))[..., 0].astype(float)
        ref = expected.astype(float).reshape(350, 2, 500, 2).mean(axis=(1, 3))
        assert np.abs(l1 - ref).max() <= 1.0


def test_heatmap_odd_sizes_and_callable_source(tmp_path):
    """A map whose sides are not tile multiples, given tile by tile (as the chunk store does)."""
    full = (np.arange(300 * 170) % 251).astype(np.uint8).reshape(170, 300)

    def tile(r: int, c: int) -> np.ndarray:
        return full[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64]

    path = write_heatmap(tmp_path / "odd.tif", tile, 8.0, size=(300, 170), tile_px=64)
    with open_slide(path, backend="tiffslide") as s:
        assert s.dimensions == (300, 170)
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (300, 170))[..., 0], full)
        last = s.level_dimensions[-1]
        assert max(last) <= 64
        # a region of the coarsest level is the mean of the level-0 pixels it covers
        ds = s.level_downsamples[-1]
        assert ds == pytest.approx(300 / last[0], rel=0.02)


def test_heatmap_rejects_bad_tile_size(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        write_heatmap(tmp_path / "x.tif", np.zeros((10, 10), np.uint8), 1.0, tile_px=100)
