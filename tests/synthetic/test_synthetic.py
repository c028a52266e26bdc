"""Synthetic Camelyon-style slides: layout like Camelyon16, readers agree, deterministic, learnable."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw, ImageFilter
from shapely.geometry import MultiPolygon

from qupath_camseg.synthetic import (
    make_truth,
    pyramid_dimensions,
    render_region,
    write_synthetic_slide,
)
from qupath_camseg.wsi import open_slide


def _raster(geom: MultiPolygon, size: tuple[int, int], scale: float) -> np.ndarray:
    """Rasterise a level-0 geometry into a (h, w) bool mask at 1/scale (test-side, via PIL)."""
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    for poly in geom.geoms:
        draw.polygon([(x / scale, y / scale) for x, y in poly.exterior.coords], fill=1)
        for ring in poly.interiors:
            draw.polygon([(x / scale, y / scale) for x, y in ring.coords], fill=0)
    return np.asarray(img, bool)


def test_file_is_a_camelyon_like_pyramid(synthetic_slide):
    path, truth = synthetic_slide
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [(p.imagewidth, p.imagelength) for p in pages] == pyramid_dimensions(4096, 3072)
        assert len(pages) == 4  # 4096, 2048, 1024, 512 px wide: successive IFDs, no SubIFDs
        for page in pages:
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (512, 512)
            assert page.compression == 7 and page.photometric == 6  # JPEG, YCbCr
            assert not page.tags.get("SubIFDs")
            assert page.tags["ResolutionUnit"].value == 3  # centimetre
        num, den = pages[0].tags["XResolution"].value
        assert 1e4 / (num / den) == pytest.approx(0.25, rel=1e-6)


def test_tiffslide_and_openslide_report_the_same_geometry_and_mpp(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path, backend="tiffslide") as ts, open_slide(path, backend="openslide") as osl:
        assert ts.dimensions == osl.dimensions == (4096, 3072)
        assert ts.level_dimensions == osl.level_dimensions
        assert ts.level_downsamples == pytest.approx(osl.level_downsamples)
        assert ts.mpp == pytest.approx(0.25) and osl.mpp == pytest.approx(0.25)
        a = ts.read_region((1000, 1000), 1, (300, 200))
        b = osl.read_region((1000, 1000), 1, (300, 200))
        assert np.abs(a.astype(int) - b).mean() < 1.0


def test_odd_sizes_and_lower_levels_are_2x2_means(tmp_path):
    path = tmp_path / "odd.tif"
    write_synthetic_slide(path, width=1500, height=1100, seed=3, tile_px=256)
    with open_slide(path, backend="tiffslide") as ts, open_slide(path, backend="openslide") as osl:
        assert ts.level_dimensions == osl.level_dimensions == ((1500, 1100), (750, 550), (375, 275), (187, 137))
        level0 = ts.read_region((0, 0), 0, (1500, 1100)).astype(float)
        level1 = ts.read_region((0, 0), 1, (750, 550)).astype(float)
        mean2x2 = level0.reshape(550, 2, 750, 2, 3).mean(axis=(1, 3))
        assert np.abs(level1 - mean2x2).mean() < 3.0


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.tif", "b.tif", "c.tif"))
    ta = write_synthetic_slide(a, width=1024, height=768, seed=7)
    tb = write_synthetic_slide(b, width=1024, height=768, seed=7)
    tc = write_synthetic_slide(c, width=1024, height=768, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert ta.tumor.equals(tb.tumor) and ta.tissue.equals(tb.tissue)
    assert a.read_bytes() != c.read_bytes()
    assert not ta.tissue.equals(tc.tissue)


def test_truth_has_varied_metastases_itcs_and_exclusion_islands(synthetic_slide):
    _, truth = synthetic_slide
    assert truth.tumor.within(truth.tissue.buffer(1))
    assert truth.tissue.area < 0.9 * 4096 * 3072  # white glass around an irregular section
    diameters_um = [
        max(p.bounds[2] - p.bounds[0], p.bounds[3] - p.bounds[1]) * truth.mpp for p in truth.tumor.geoms
    ]
    assert len(diameters_um) >= 3
    assert min(diameters_um) < 200  # isolated-tumour-cell size
    assert max(diameters_um) > 2 * min(diameters_um)  # varied sizes
    assert sum(len(p.interiors) for p in truth.tumor.geoms) >= 1  # normal islands inside tumour


def test_tumor_free_slides_and_input_checks():
    truth = make_truth(2048, 2048, seed=1, tumor=False)
    assert truth.tumor.is_empty and not truth.tissue.is_empty
    with pytest.raises(ValueError):
        make_truth(100, 2048, seed=0)
    with pytest.raises(ValueError):
        make_truth(2048, 2048, seed=0, mpp=0)


def test_rendering_follows_the_truth_and_is_seamless():
    truth = make_truth(2048, 1536, seed=2)
    rgb = render_region(truth, (0, 0, 2048, 1536))
    tissue = _raster(truth.tissue, (2048, 1536), 1.0)
    inner = np.asarray(Image.fromarray(tissue).filter(ImageFilter.MinFilter(5)))
    outer = ~np.asarray(Image.fromarray(tissue).filter(ImageFilter.MaxFilter(5)))
    assert (rgb[outer] == (242, 241, 244)).all()  # glass is glass
    assert (rgb[inner].astype(int).sum(-1) < 3 * 240).mean() > 0.9  # stained (fat vacuoles are white)
    # a region rendered on its own equals the same pixels of a larger render (tiles are seamless)
    assert np.array_equal(render_region(truth, (700, 300, 600, 500)), rgb[300:800, 700:1300])


def test_tumour_is_visibly_different_at_2_um_per_px(synthetic_slide):
    """Tumour is paler and pinker than node at 2 µm/px: a one-feature threshold separates them."""
    path, truth = synthetic_slide
    with open_slide(path) as slide:
        rgb = slide.read_region_mpp((0, 0, 4096, 3072), 2.0).astype(float)
    size = (rgb.shape[1], rgb.shape[0])
    tumour = _raster(truth.tumor, size, 8.0)
    normal = _raster(truth.tissue, size, 8.0) & ~_raster(truth.tumor.buffer(80), size, 8.0)
    tumour &= ~_raster(truth.tumor.boundary.buffer(80), size, 8.0)
    assert tumour.sum() > 200 and normal.sum() > 2000
    # local mean brightness over 16 x 16 µm (8 x 8 px at 2 µm/px), like a network's receptive field
    grey = rgb.mean(-1)
    k = 8
    h, w = (grey.shape[0] // k) * k, (grey.shape[1] // k) * k
    block = grey[:h, :w].reshape(h // k, k, w // k, k).mean((1, 3))
    t_blocks = block[tumour[:h, :w].reshape(h // k, k, w // k, k).all((1, 3))]
    n_blocks = block[normal[:h, :w].reshape(h // k, k, w // k, k).all((1, 3))]
    assert t_blocks.mean() > n_blocks.mean() + 10  # tumour is paler on average
    # a linear classifier (Fisher discriminant) on simple block statistics separates them
    def features(mask):
        sel = mask[:h, :w].reshape(h // k, k, w // k, k).all((1, 3))
        blocks = rgb[:h, :w].reshape(h // k, k, w // k, k, 3).transpose(0, 2, 1, 3, 4)[sel].reshape(-1, k * k, 3)
        g = blocks.mean(-1)
        return np.column_stack([blocks.mean(1), g.std(1), (g > 225).mean(1)])
    ft, fn = features(tumour), features(normal)
    rng = np.random.default_rng(0)
    ft, fn = ft[rng.permutation(len(ft))], fn[rng.permutation(len(fn))]
    (tt, te), (nt, ne) = np.array_split(ft, 2), np.array_split(fn, 2)
    cov = np.cov(np.vstack([tt - tt.mean(0), nt - nt.mean(0)]).T) + 1e-3 * np.eye(ft.shape[1])
    wvec = np.linalg.solve(cov, tt.mean(0) - nt.mean(0))
    cut = wvec @ (tt.mean(0) + nt.mean(0)) / 2
    accuracy = ((te @ wvec > cut).mean() + (ne @ wvec <= cut).mean()) / 2
    assert accuracy > 0.95
