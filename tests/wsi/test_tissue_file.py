"""The user's tissue outline (``--tissue FILE``): GeoJSON, ASAP XML and HistoQC-style mask images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box

from qupath_camseg.annotations import QPObject, write_asap_xml, write_geojson
from qupath_camseg.errors import InvalidAnnotationError, InvalidSettingsError
from qupath_camseg.wsi import read_tissue_file

SLIDE = (4000, 3000)  # level-0 px


def test_geojson_outline_is_rasterised_and_kept(tmp_path) -> None:
    outline = box(1000, 500, 2600, 2100)
    path = write_geojson(tmp_path / "t.geojson", [QPObject(outline, classification="Tissue")])
    mask, geom = read_tissue_file(path, SLIDE, mask_downsample=32)
    assert mask.mask.shape == (94, 125) and mask.downsample == pytest.approx(32.0)
    assert geom.equals(outline)
    assert mask.fraction((1100, 600, 1000, 1000)) == 1.0 and mask.fraction((0, 0, 900, 400)) == 0.0
    assert mask.mask.sum() * 32**2 == pytest.approx(outline.area, rel=0.05)


def test_only_tissue_classed_areas_count_when_there_are_some(tmp_path) -> None:
    tissue, tumour = box(0, 0, 1000, 1000), box(3000, 2000, 3500, 2500)
    path = write_geojson(tmp_path / "t.geojson", [QPObject(tissue, classification="Tissue"),
                                                  QPObject(tumour, classification="Tumor")])
    _, geom = read_tissue_file(path, SLIDE, mask_downsample=16)
    assert geom.equals(tissue)
    path = write_geojson(tmp_path / "u.geojson", [QPObject(tissue), QPObject(tumour, classification="Tumor")])
    _, geom = read_tissue_file(path, SLIDE, mask_downsample=16)  # no tissue class: every area counts
    assert geom.area == pytest.approx(tissue.area + tumour.area)


def test_outline_is_clipped_to_the_slide_and_asap_xml_reads(tmp_path) -> None:
    path = write_asap_xml(tmp_path / "t.xml", [QPObject(box(3500, 2500, 5000, 4000), classification="Tissue")])
    mask, geom = read_tissue_file(path, SLIDE, mask_downsample=50)
    assert geom.equals(box(3500, 2500, 4000, 3000))
    assert mask.mask[-1, -1] and not mask.mask[0, 0]


def test_a_sliver_thinner_than_a_mask_pixel_is_not_lost(tmp_path) -> None:
    path = write_geojson(tmp_path / "t.geojson", [QPObject(box(1000, 1000, 1010, 1010))])
    mask, _ = read_tissue_file(path, SLIDE, mask_downsample=100)
    assert mask.mask.sum() == 1 and mask.fraction((1000, 1000, 10, 10)) == 1.0


def test_histoqc_mask_image_scale_comes_from_its_size(tmp_path) -> None:
    """HistoQC writes ``<slide>_mask_use.png`` at its working size (rounded): the scale is inferred."""
    mask = np.zeros((round(SLIDE[1] / 23.7), round(SLIDE[0] / 23.7)), np.uint8)  # 127 x 169: not a power of 2
    mask[20:60, 30:90] = 255
    path = tmp_path / "slide.svs_mask_use.png"
    Image.fromarray(mask).save(path)
    tm, geom = read_tissue_file(path, SLIDE, mask_downsample=32)
    assert geom is None and tm.mask.shape == mask.shape
    assert tm.downsample == pytest.approx(SLIDE[0] / mask.shape[1])
    ds = tm.downsample
    assert tm.fraction((31 * ds, 21 * ds, 50 * ds, 30 * ds)) == 1.0 and tm.fraction((0, 0, 20 * ds, 15 * ds)) == 0.0


@pytest.mark.parametrize(("name", "make", "error", "text"), [
    ("none.geojson", None, InvalidSettingsError, "does not exist"),
    ("t.txt", lambda p: p.write_text("x"), InvalidSettingsError, "unknown kind"),
    ("wide.png", lambda p: Image.new("L", (200, 50), 255).save(p), InvalidAnnotationError, "not the slide's"),
    ("black.png", lambda p: Image.new("L", (40, 30), 0).save(p), InvalidAnnotationError, "marks no tissue"),
    ("broken.png", lambda p: p.write_bytes(b"\x89PNG not really"), InvalidAnnotationError, "cannot be read"),
    ("far.geojson", lambda p: write_geojson(p, [QPObject(box(9000, 9000, 9500, 9500))]), InvalidAnnotationError,
     "no area lies on the slide"),
])
def test_bad_files_say_what_is_wrong(tmp_path, name, make, error, text) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(error, match=text) as info:
        read_tissue_file(path, SLIDE, mask_downsample=32)
    assert name in str(info.value) and "\n" not in str(info.value)
