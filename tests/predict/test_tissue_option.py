"""``PredictOptions.tissue`` / ``qcamseg predict --tissue auto|none|FILE``: which tissue is analysed,
the ``camseg Tissue`` annotation that shows it, and the settings key that follows the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from shapely.geometry import box

from qupath_camseg.annotations import TISSUE_CLASS, QPObject, is_ours, read_geojson, write_geojson
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.model import LoadedModel, ModelConfig
from qupath_camseg.predict import PredictOptions, predict_slide, resolve_tissue
from qupath_camseg.synthetic import write_synthetic_slide

MODEL_MPP, TILE = 4.0, 32


class DarknessNet(torch.nn.Module):
    """Test double for a trained network: the tumour logit rises with local darkness (tissue)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.avg_pool2d(F.pad(x.mean(1, keepdim=True), (5, 5, 5, 5), mode="replicate"), 11, stride=1)
        tumour = (235.0 - g) / 4.0  # high on any stain, low only on bright glass
        return torch.cat([torch.zeros_like(tumour), tumour], 1)


def _model() -> LoadedModel:
    cfg = ModelConfig(arch={"name": "unet", "width": 8, "depth": 2}, mpp=MODEL_MPP, tile_px=TILE,
                      classes=[{"name": "Tumor", "color": [200, 0, 0]}])
    return LoadedModel(DarknessNet().eval(), cfg, None, "darkness-net", "cpu")


def _opts(**kw) -> PredictOptions:
    return PredictOptions(**{"chunk_px": 64, "workers": 2, "batch_size": 8, **kw})


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("tissue") / "slide.tif"
    write_synthetic_slide(path, width=2048, height=1536, seed=4, mpp=1.0, tile_px=256)
    return path


@pytest.fixture(scope="module")
def auto(slide, tmp_path_factory):
    return predict_slide(slide, _model(), tmp_path_factory.mktemp("auto"), options=_opts())


def _tissue_objects(res) -> list[QPObject]:
    return [o for o in read_geojson(res.outputs["geojson"]) if o.classification == TISSUE_CLASS]


def _heat(res) -> np.ndarray:
    from qupath_camseg.wsi import open_slide

    with open_slide(res.outputs["heatmap"]) as h:
        return h.read_region((0, 0), 0, h.dimensions)[..., 0]


def test_auto_writes_one_locked_tissue_annotation(auto) -> None:
    (t,) = _tissue_objects(auto)
    assert t.locked and is_ours(t) and t.name == TISSUE_CLASS and t.object_type == "annotation"
    assert t.geometry.area * 1e-6 == pytest.approx(auto.report["tissue_area_mm2"], rel=0.05)
    data = json.loads(auto.outputs["geojson"].read_text(encoding="utf-8"))
    assert data["features"][0]["properties"]["isLocked"] is True  # what QuPath's reader honours


def test_a_users_geojson_outline_replaces_the_detected_tissue(slide, auto, tmp_path) -> None:
    outline = box(200, 200, 1000, 1300)  # level-0 px: a part of the section
    path = write_geojson(tmp_path / "mine.geojson", [QPObject(outline, classification="Tissue")])
    res = predict_slide(slide, _model(), tmp_path / "out", options=_opts(tissue=str(path)))
    (t,) = _tissue_objects(res)
    assert t.geometry.equals(outline) and t.locked
    assert res.report["tissue_source"] == str(path) and res.report["settings"]["tissue"] == str(path)
    assert res.report["tiles"]["active"] < auto.report["tiles"]["active"]
    assert res.report["settings_key"] != auto.report["settings_key"]
    heat = _heat(res)  # the map is 0 outside the outline (grown by one mask pixel, 8 µm/px here)
    outside = np.ones(heat.shape, bool)
    outside[(200 - 16) // 4:(1300 + 16) // 4 + 1, (200 - 16) // 4:(1000 + 16) // 4 + 1] = False
    assert heat[outside].max() == 0 and heat[~outside].mean() > 100
    # the same file again: finished, skipped; the file edited: a new key, recomputed
    assert predict_slide(slide, _model(), tmp_path / "out", options=_opts(tissue=str(path))).skipped
    write_geojson(path, [QPObject(box(200, 200, 1200, 1300), classification="Tissue")])
    again = predict_slide(slide, _model(), tmp_path / "out", options=_opts(tissue=str(path)))
    assert not again.skipped and again.report["settings_key"] != res.report["settings_key"]


def test_a_histoqc_mask_image_and_a_roi(slide, tmp_path) -> None:
    mask = np.zeros((1536 // 16, 2048 // 16), np.uint8)  # HistoQC-style: the whole slide, downsampled
    mask[:, : 1024 // 16] = 255
    Image.fromarray(mask).save(tmp_path / "slide.tif_mask_use.png")
    roi = write_geojson(tmp_path / "roi.geojson", [QPObject(box(0, 0, 2048, 700))])
    res = predict_slide(slide, _model(), tmp_path / "out",
                        options=_opts(tissue=str(tmp_path / "slide.tif_mask_use.png"), roi=str(roi)))
    (t,) = _tissue_objects(res)
    assert t.geometry.within(box(0, 0, 1024, 700).buffer(1))  # the mask, inside the ROI
    assert t.geometry.area == pytest.approx(1024 * 700, rel=0.05)


def test_none_analyses_the_whole_slide_without_a_tissue_annotation(slide, auto, tmp_path) -> None:
    res = predict_slide(slide, _model(), tmp_path / "out", options=_opts(tissue="none"))
    assert _tissue_objects(res) == []
    assert res.report["tiles"]["active"] > auto.report["tiles"]["active"]
    assert res.report["tissue_area_mm2"] == pytest.approx(2.048 * 1.536, rel=0.01)


def test_a_folder_gives_each_slide_its_own_file(tmp_path) -> None:
    slide = tmp_path / "slides" / "case 7.svs"
    folder = tmp_path / "masks"
    (folder / "case 7.svs").mkdir(parents=True)
    histoqc = folder / "case 7.svs" / "case 7.svs_mask_use.png"
    histoqc.write_bytes(b"")
    assert resolve_tissue(str(folder), slide) == str(histoqc)
    (folder / "case 7.geojson").write_text("{}")
    assert resolve_tissue(str(folder), slide) == str(folder / "case 7.geojson")
    (folder / "12.xml").write_text("")
    assert resolve_tissue(str(folder), slide, entry_id="12") == str(folder / "12.xml")  # the entry ID first
    assert resolve_tissue("auto", slide) == "auto" and resolve_tissue("none", slide) == "none"
    with pytest.raises(InvalidSettingsError, match="has no file for slide other.svs"):
        resolve_tissue(str(folder), tmp_path / "other.svs")
