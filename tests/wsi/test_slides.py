"""Slide access by µm/px: synthetic slides and the real files in ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from qupath_camseg.errors import (
    CamsegError,
    MissingMppError,
    SlideNotFoundError,
    SlideReadError,
)
from qupath_camseg.wsi import Slide, open_slide


@pytest.fixture(scope="module")
def level0(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        return slide.read_region((0, 0), 0, slide.dimensions).astype(float)


@pytest.mark.parametrize("target_mpp", [0.5, 2.0])
def test_read_region_mpp_matches_a_direct_downscale_of_level0(synthetic_slide, level0, target_mpp):
    path, _ = synthetic_slide
    f = round(target_mpp / 0.25)
    box = (1024, 512, 2048, 2048)
    with open_slide(path) as slide:
        assert slide.best_level_for_mpp(target_mpp) > 0  # read from a lower level, not level 0
        out = slide.read_region_mpp(box, target_mpp).astype(float)
    assert out.shape == (2048 // f, 2048 // f, 3)
    crop = level0[512:2560, 1024:3072]
    reference = crop.reshape(2048 // f, f, 2048 // f, f, 3).mean(axis=(1, 3))
    margin = 4
    err = np.abs(out - reference)[margin:-margin, margin:-margin]
    assert err.mean() < 3.0


def test_read_region_mpp_subpixel_boxes_sizes_and_outside(synthetic_slide, level0):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        # a box at odd level-0 offsets read at 0.5 µm/px (level 1) lands within one level-0 pixel
        out = slide.read_region_mpp((1001, 601, 1000, 800), 0.5).astype(float)
        assert out.shape == (400, 500, 3)
        errors = {}
        for d in range(-3, 5):
            ref = level0[601 + d:1401 + d, 1001 + d:2001 + d].reshape(400, 2, 500, 2, 3).mean(axis=(1, 3))
            errors[d] = np.abs(out - ref)[4:-4, 4:-4].mean()
        best = min(errors, key=errors.get)
        assert best in (0, 1) and errors[best] < 3.0
        assert slide.read_region_mpp((0, 0, 1000, 500), 1.0, out_size=(64, 48)).shape == (48, 64, 3)
        # outside the slide is white, and half-outside boxes are padded white
        assert (slide.read_region_mpp((-2000, -2000, 1000, 1000), 1.0) == 255).all()
        half = slide.read_region_mpp((4096 - 400, 0, 800, 400), 1.0)
        assert (half[:, 110:] == 255).all() and half.shape == (100, 200, 3)
        # upsampling works too
        assert slide.read_region_mpp((2000, 1500, 100, 100), 0.125).shape == (200, 200, 3)
        with pytest.raises(ValueError):
            slide.read_region_mpp((0, 0, 0, 10), 1.0)


def test_best_level_for_mpp(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        assert slide.level_downsamples == pytest.approx((1, 2, 4, 8))
        picks = {t: slide.best_level_for_mpp(t) for t in (0.1, 0.25, 0.49, 0.5, 0.504, 0.9, 1.0, 1.9, 2.0, 50.0)}
        assert picks == {0.1: 0, 0.25: 0, 0.49: 0, 0.5: 1, 0.504: 1, 0.9: 1, 1.0: 2, 1.9: 2, 2.0: 3, 50.0: 3}
        thumb, ds = slide.read_thumbnail_mpp(8.0)
        assert thumb.shape == (96, 128, 3) and ds == pytest.approx(32.0)


def test_mpp_override_tags_fallback_and_implausible_values(synthetic_slide, tmp_path):
    path, _ = synthetic_slide
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5 and slide.best_level_for_mpp(1.0) == 1
    # a reader that does not parse resolution tags: the TIFF tags are used
    import tiffslide

    handle = tiffslide.TiffSlide(path)
    handle.properties.pop("tiffslide.mpp-x")
    with Slide(path, handle, "tiffslide") as slide:
        assert slide.mpp == pytest.approx(0.25)
    # 72 dpi is a file-format default, not a microscope calibration
    plain = tmp_path / "72dpi.tif"
    tifffile.imwrite(plain, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(72, 72), resolutionunit="INCH", metadata=None)
    with open_slide(plain) as slide:
        assert not slide.has_mpp
        with pytest.raises(MissingMppError, match="not a microscope calibration"):
            _ = slide.mpp
    with pytest.raises(ValueError):
        open_slide(path, mpp=-1)
    with pytest.raises(ValueError):
        open_slide(path, backend="bioformats")


def test_bounds_offset_is_applied_like_qupath(synthetic_slide):
    """With bounds-x/y/width/height reported, pixel (0, 0) is the reader's (bounds-x, bounds-y)
    and the image is bounds-width x bounds-height, as in QuPath's OpenslideImageServer."""
    import tiffslide

    path, _ = synthetic_slide
    handle = tiffslide.TiffSlide(path)
    handle.properties.update({"tiffslide.bounds-x": 512, "tiffslide.bounds-y": 256,
                              "tiffslide.bounds-width": 2048, "tiffslide.bounds-height": 1024})
    with Slide(path, handle, "tiffslide") as cropped, open_slide(path) as full:
        assert cropped.dimensions == (2048, 1024)
        assert cropped.level_dimensions[1] == (1024, 512)
        assert np.array_equal(cropped.read_region((0, 0), 0, (300, 200)), full.read_region((512, 256), 0, (300, 200)))
        assert np.array_equal(cropped.read_region_mpp((100, 100, 400, 400), 1.0),
                              full.read_region_mpp((612, 356, 400, 400), 1.0))
        assert (cropped.read_region((2048, 0), 0, (10, 10)) == 255).all()  # beyond the bounds


def test_missing_corrupt_and_foreign_files(synthetic_slide, tmp_path):
    with pytest.raises(SlideNotFoundError, match="nope.svs") as info:
        open_slide(tmp_path / "nope.svs")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CamsegError)
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"not a slide" * 100)
    with pytest.raises(SlideReadError, match="garbage.svs"):
        open_slide(garbage)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(synthetic_slide[0].read_bytes()[:150_000])
    with pytest.raises(SlideReadError, match="truncated.tif") as info:
        with open_slide(truncated) as slide:
            slide.read_region((0, 0), 0, slide.dimensions)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- real files
def test_aperio_svs_reads_at_its_mpp(shared_data):
    with open_slide(shared_data / "svs" / "cmu-1-small-region.svs") as slide:
        assert slide.backend == "tiffslide"
        assert slide.mpp == pytest.approx(0.499)
        assert slide.dimensions == (2220, 2967)
        rgb = slide.read_region_mpp((0, 0, 2220, 2967), 2.0)
        assert rgb.shape == (round(2967 * 0.499 / 2), round(2220 * 0.499 / 2), 3)
        assert rgb.min() < 150  # stained tissue is there
    with open_slide(shared_data / "svs" / "cmu-1-small-region.svs", backend="openslide") as slide:
        assert slide.mpp == pytest.approx(0.499) and slide.dimensions == (2220, 2967)


def test_jpeg2000_svs_without_mpp_names_the_fix_and_works_with_override(shared_data):
    path = shared_data / "svs" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide:
        assert not slide.has_mpp
        with pytest.raises(MissingMppError) as info:
            slide.read_region_mpp((0, 0, 1000, 1000), 2.0)
    message = str(info.value)
    assert "tcga-cr-7395-01a-01-ts1.svs" in message and "--slide-mpp" in message and "mpp=" in message
    assert "\n" not in message
    with open_slide(path, mpp=0.5) as slide:
        assert slide.level_count == 2 and slide.best_level_for_mpp(1.0) == 1  # downsample 2.0005
        rgb = slide.read_region_mpp((0, 0, 4443, 3567), 4.0)
        assert rgb.shape == (446, 555, 3) and rgb.std() > 10  # JPEG 2000 tiles decoded


def test_camelyon16_level5_reads_with_override(shared_data):
    path = shared_data / "camelyon16" / "tumor_001_level5.tif"
    with open_slide(path) as slide:
        assert slide.dimensions == (3072, 7168) and not slide.has_mpp
    with open_slide(path, mpp=0.243 * 32) as slide:
        rgb = slide.read_region_mpp((0, 0, 3072, 7168), 31.104)
        assert rgb.shape == (1792, 768, 3)
        assert rgb.min() < 150 and np.median(rgb) > 200  # a stained node on bright glass


def _direct_vs_tiffslide(path, **kw) -> int:
    """Compare random regions (edge tiles included) decoded straight from the stored tiles with
    tiffslide's own read of the same level pixels; returns how many regions took the direct path."""
    checked = 0
    with open_slide(path, backend="tiffslide", **kw) as slide:
        for level in range(slide.level_count):
            lw, lh = slide.level_dimensions[level]
            rng = np.random.default_rng(level)
            boxes = [(lw - min(300, lw), lh - min(200, lh), min(300, lw), min(200, lh))]  # bottom-right corner
            for _ in range(4):
                w, h = int(rng.integers(1, min(700, lw) + 1)), int(rng.integers(1, min(700, lh) + 1))
                boxes.append((int(rng.integers(0, lw - w + 1)), int(rng.integers(0, lh - h + 1)), w, h))
            for x, y, w, h in boxes:
                direct = slide._read_stored_tiles(level, x, y, x + w, y + h)
                if direct is None:
                    continue
                ds = slide.level_downsamples[level]
                ref = slide._h.read_region((int(np.ceil(x * ds)), int(np.ceil(y * ds))), level, (w, h), as_array=True)
                np.testing.assert_array_equal(direct.reshape(ref.shape), ref, err_msg=f"{path} level {level} {x, y, w, h}")
                checked += 1
    return checked


def test_stored_tiles_decoded_directly_equal_tiffslide(synthetic_slide, shared_data):
    """The fast read path (tifffile's decoder on the raw tiles) must give tiffslide's pixels on
    every kind of file here: our JPEG pyramid, a real Aperio SVS, a JPEG 2000 SVS, Camelyon16."""
    assert _direct_vs_tiffslide(synthetic_slide[0]) >= 5
    assert _direct_vs_tiffslide(shared_data / "svs" / "cmu-1-small-region.svs") >= 5
    assert _direct_vs_tiffslide(shared_data / "svs" / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.5) >= 5
    assert _direct_vs_tiffslide(shared_data / "camelyon16" / "tumor_001_level5.tif", mpp=7.8) >= 5


def test_a_read_larger_than_the_memory_available_is_refused_before_allocating(tmp_path, monkeypatch) -> None:
    """Issue 16 point 9: every read of a large region is checked against the memory available
    (here a simulated 100 MB machine): a clear error instead of a 700 GB allocation."""
    import qupath_camseg._runtime as runtime
    from qupath_camseg.errors import InvalidSettingsError
    from qupath_camseg.synthetic import write_synthetic_slide
    from qupath_camseg.wsi import open_slide

    path = tmp_path / "s.tif"
    write_synthetic_slide(path, width=1024, height=1024, seed=1, tile_px=256)
    monkeypatch.setattr(runtime, "available_memory", lambda device="cpu": 100 << 20)
    with open_slide(path) as slide:
        assert slide.read_region_mpp((0, 0, 512, 512), slide.mpp).shape == (512, 512, 3)  # small: unchecked
        with pytest.raises(InvalidSettingsError, match=r"needs at least .* 100\.0 MB available; choose a smaller region"):
            slide.read_region_mpp((0, 0, 20_000, 20_000), slide.mpp)
