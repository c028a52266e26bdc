"""The probability heatmap TIFF: pyramid, pixel values and pixel size as tiffslide and OpenSlide see them."""

from __future__ import annotations

import numpy as np
import pytest

from qupath_camseg.wsi import heatmap_levels, open_slide, write_heatmap


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


def test_heatmap_mostly_zero_map_every_level_and_every_tile_stored(tmp_path):
    """Glass-dominated maps take the zero-tile shortcut; pixels must not change at any level and
    every tile must still be stored (zero-byte 'sparse' tiles are not read by every TIFF reader)."""
    import tifffile

    full = np.zeros((600, 1000), np.uint8)
    full[70:200, 130:390] = 200  # straddles tile borders of levels 0 and 1
    full[500:600, 900:1000] = 17  # in the clipped last row/column of tiles
    path = write_heatmap(tmp_path / "sparse.tif", full, 1.0, tile_px=64, workers=3)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == len(heatmap_levels(1000, 600, 64))
        level = full.astype(np.float64)
        for page in tif.pages:
            assert all(n > 0 for n in page.databytecounts)
            got = page.asarray()
            h, w = got.shape
            assert np.abs(got.astype(np.float64) - level[:h, :w]).max() <= 1.0
            # next level: mean of the valid pixels of each 2×2 block (edge blocks may be partial)
            ph, pw = level.shape
            pad = np.zeros((ph + ph % 2, pw + pw % 2))
            cnt = np.zeros_like(pad)
            pad[:ph, :pw], cnt[:ph, :pw] = got, 1
            level = (pad.reshape(pad.shape[0] // 2, 2, -1, 2).sum(axis=(1, 3))
                     / cnt.reshape(cnt.shape[0] // 2, 2, -1, 2).sum(axis=(1, 3)))
        assert tif.pages[0].asarray()[:70].max() == 0
