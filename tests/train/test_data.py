"""Training data: labels from polygons, class-balanced sampling from tissue, determinism, sharding,
split by slide, and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon, box

from qupath_camseg._runtime import mp_context
from qupath_camseg.annotations import QPObject, label_mask
from qupath_camseg.train import (
    IDENTITY_PARAMS,
    AugmentConfig,
    augment_tile,
    dihedral,
    draw_params,
    photometric,
)
from qupath_camseg.train.collect import _split
from qupath_camseg.train.datasets import TileSampler, TrainTileDataset, ValTileDataset, val_tiles
from qupath_camseg.train.images import IGNORE_INDEX, build_shapes, prepare_image

MPP = 2.0
TILE = 64


def _objs() -> list[QPObject]:
    tumour = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], holes=[[(40, 40), (60, 40), (60, 60), (40, 60)]])
    return [
        QPObject(tumour, classification="Tumor"),
        QPObject(box(80, 80, 120, 120), classification="Ignore*"),
        QPObject(box(150, 0, 200, 50), classification="Stroma"),
        QPObject(box(0, 150, 50, 200), object_type="detection", classification="Tumor"),  # not a label
    ]


@pytest.mark.parametrize("unannotated, fill", [("negative", 0), ("ignore", IGNORE_INDEX)])
def test_labels_from_polygons(unannotated: str, fill: int) -> None:
    shapes, regions = build_shapes(_objs(), {"Tumor": 1}, background_classes=["Stroma"])
    from qupath_camseg.train import LabelledImage

    img = LabelledImage(
        name="a",
        entry_id="1",
        path="a.tif",
        slide_mpp=1.0,
        dimensions=(200, 200),
        tile_px_level0=200,
        shapes=shapes,
        fill=fill if unannotated == "ignore" else 0,
        regions=regions,
        tissue_xy=np.zeros((0, 2), np.int64),
        grid_xy=np.zeros((0, 2), np.int64),
    )
    lab = img.label_tile((0, 0, 200, 200), (200, 200))
    assert lab[10, 10] == 1  # tumour
    assert lab[50, 50] == fill  # the hole is not tumour
    assert lab[100, 100] == IGNORE_INDEX and lab[90, 90] == IGNORE_INDEX  # Ignore* wins over tumour
    assert lab[25, 175] == 0  # another class is background in both modes
    assert lab[175, 25] == fill  # a detection is not a label
    assert lab[190, 190] == fill  # unannotated
    assert set(regions) == {1} and regions[1].area == pytest.approx(100 * 100 - 20 * 20)
    if unannotated == "negative":  # the same labels as masks.label_mask
        ref = label_mask(_objs()[:3], {"Tumor": 1}, (0, 0, 200, 200), (200, 200))
        np.testing.assert_array_equal(lab, ref)


def test_sampler_shards_and_resumes() -> None:
    single = list(TileSampler(5, 4))
    assert single == [(0, i) for i in range(20)]
    r0, r1 = TileSampler(5, 4, rank=0, world_size=2), TileSampler(5, 4, rank=1, world_size=2)
    r0.set_epoch(3), r1.set_epoch(3)
    k0, k1 = list(r0), list(r1)
    assert len(k0) == len(k1) == 20 and not set(k0) & set(k1)
    assert sorted(k0 + k1) == [(3, i) for i in range(40)]
    resumed = TileSampler(5, 4, rank=1, world_size=2)
    resumed.set_epoch(3, skip_batches=2)
    assert list(resumed) == k1[8:] and len(resumed) == 12


@pytest.fixture(scope="module")
def slide_image(tmp_path_factory: pytest.TempPathFactory):
    from qupath_camseg.synthetic import write_synthetic_slide

    path = tmp_path_factory.mktemp("data") / "s.tif"
    truth = write_synthetic_slide(path, width=768, height=768, seed=1, mpp=MPP, tile_px=256)
    objs = [QPObject(g, classification="Tumor") for g in truth.tumor.geoms]
    img = prepare_image(
        name="s.tif",
        entry_id="1",
        path=path,
        objs=objs,
        class_to_label={"Tumor": 1},
        background_classes=[],
        unannotated="negative",
        mpp=MPP,
        tile_px=TILE,
        min_tissue=0.25,
    )
    return img, truth


def test_prepare_image(slide_image) -> None:
    img, truth = slide_image
    assert img.slide_mpp == MPP and img.dimensions == (768, 768) and img.tile_px_level0 == TILE
    assert len(img.tissue_xy) > 10 and len(img.grid_xy) > 5
    # negatives come from tissue: every candidate tile overlaps the true tissue
    for x, y in img.tissue_xy:
        assert truth.tissue.intersection(box(x, y, x + TILE, y + TILE)).area > 0


def test_sampling_is_class_balanced_and_on_tissue(slide_image) -> None:
    img, truth = slide_image
    ds = TrainTileDataset([img], mpp=MPP, tile_px=TILE, seed=0)
    rng = np.random.default_rng(0)
    tumour_frac, tissue_frac = [], []
    for _ in range(300):
        _, (x, y, w, h) = ds.sample_box(rng)
        tile = box(x, y, x + w, y + h)
        assert 0 <= x <= 768 - w and 0 <= y <= 768 - h
        tumour_frac.append(truth.tumor.intersection(tile).area / tile.area)
        tissue_frac.append(truth.tissue.intersection(tile).area / tile.area)
    slide_tumour = truth.tumor.area / truth.tissue.area
    hits = np.mean(np.array(tumour_frac) > 0)
    assert hits > 0.45, hits  # inside + border fractions (0.35 + 0.15), far above the area share
    assert np.mean(tumour_frac) > 3 * slide_tumour
    assert min(tissue_frac) > 0  # never blank glass


@pytest.mark.multiprocessing
def test_items_are_deterministic_and_worker_independent(slide_image) -> None:
    img, truth = slide_image
    ds = TrainTileDataset([img], mpp=MPP, tile_px=TILE, seed=5)
    a_img, a_lab, a_par = ds[(2, 7)]
    b_img, b_lab, b_par = ds[(2, 7)]
    assert a_img.dtype == torch.uint8 and a_img.shape == (3, TILE, TILE) and a_lab.shape == (TILE, TILE)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab) and torch.equal(a_par, b_par)
    assert not torch.equal(ds[(2, 8)][0], a_img)
    sampler = TileSampler(3, 4)
    serial = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=0))
    parallel = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2,
                                                multiprocessing_context=mp_context()))
    assert len(serial) == len(parallel) == 3
    for (x0, y0, p0), (x1, y1, p1) in zip(serial, parallel):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(p0, p1)
    # labels agree with the truth polygons where the tile is unambiguous (no augmentation)
    plain = TrainTileDataset([img], mpp=MPP, tile_px=TILE, seed=5, augment=None)
    mixed = 0
    for i in range(40):
        lab = plain[(0, i)][1].numpy()
        if not 0.1 < np.mean(lab == 1) < 0.9:
            continue
        mixed += 1
        _, (x, y, w, h) = plain.sample_box(np.random.default_rng([5, 0, i]))
        cy, cx = np.mgrid[0:TILE, 0:TILE] + 0.5
        inside = shapely.contains_xy(truth.tumor, x + cx, y + cy)
        assert np.mean(inside == (lab == 1)) > 0.98
    assert mixed >= 3  # border tiles are drawn and checked


def test_val_tiles_fixed_and_capped(slide_image) -> None:
    img, _ = slide_image
    all_tiles = val_tiles([img], max_tiles=10_000, seed=0)
    assert len(all_tiles) == len(img.grid_xy)
    capped = val_tiles([img], max_tiles=4, seed=0)
    assert len(capped) == 4 and capped == val_tiles([img], max_tiles=4, seed=0)
    ds = ValTileDataset([img], capped, mpp=MPP, tile_px=TILE)
    x, y = ds[0]
    assert x.shape == (3, TILE, TILE) and y.shape == (TILE, TILE)


def test_split_by_slide() -> None:
    names = [f"s{i}" for i in range(10)]
    positive = {"s0", "s1", "s2", "s3"}
    held = _split(names, positive, 0.2, seed=0)
    assert len(held) == 2 and held == _split(names, positive, 0.2, seed=0)
    assert held & positive and positive - held  # positives on both sides
    assert _split(["only"], {"only"}, 0.2, seed=0) == set()
    assert len(_split(["a", "b", "c"], {"a", "b", "c"}, 0.2, seed=1)) == 1


# ----------------------------------------------------------------------------- augmentation
def test_dihedral_keeps_image_and_label_aligned() -> None:
    rng = np.random.default_rng(0)
    label = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    rgb = np.repeat((label * 200)[..., None], 3, axis=2).astype(np.uint8)
    seen = set()
    for k in range(4):
        for flip in (False, True):
            r, lab = dihedral(rgb, label, k, flip)
            np.testing.assert_array_equal(r[..., 0], lab * 200)
            seen.add(lab.tobytes())
    assert len(seen) == 8
    r, lab, params = augment_tile(rgb, label, np.random.default_rng(3))
    np.testing.assert_array_equal(r[..., 0], lab * 200)
    assert params.shape == IDENTITY_PARAMS.shape


def test_photometric_identity_and_range() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 255
    ident = torch.from_numpy(np.stack([IDENTITY_PARAMS] * 2))
    torch.testing.assert_close(photometric(x, ident), x, atol=0.02, rtol=0)
    params = torch.from_numpy(
        np.stack([draw_params(np.random.default_rng(i), AugmentConfig(blur_p=1.0)) for i in range(2)])
    )
    y = photometric(x, params)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    assert (y - x).abs().mean() > 1  # something changed
    # the blur keeps a flat image flat and smooths a checkerboard
    board = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 255.0
    board = board.expand(1, 3, 16, 16).clone()
    blur_only = torch.tensor([[1, 1, 1, 0, 0, 0, 1, 0, 1.0]])
    assert photometric(board, blur_only).std() < 0.5 * board.std()


def test_stain_jitter_matches_skimage_hed() -> None:
    """Scaling haematoxylin by 1.5 moves the colour as skimage's rgb2hed → ×1.5 → hed2rgb does."""
    from skimage.color import hed2rgb, rgb2hed

    pink = np.array([220.0, 150.0, 190.0], np.float32)
    x = torch.tensor(pink).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    params = torch.tensor([[1.5, 1, 1, 0, 0, 0, 1, 0, 0]])
    ours = photometric(x, params)[0, :, 0, 0].numpy()
    hed = rgb2hed(pink[None, None] / 255.0)
    hed[..., 0] *= 1.5
    ref = hed2rgb(hed)[0, 0] * 255.0
    np.testing.assert_array_equal(np.sign(ours - pink), np.sign(ref - pink))
    np.testing.assert_allclose(ours, ref, atol=12)


def test_draw_params_deterministic() -> None:
    a = draw_params(np.random.default_rng(9))
    assert np.array_equal(a, draw_params(np.random.default_rng(9)))
    assert not np.array_equal(a, draw_params(np.random.default_rng(10)))
    off = AugmentConfig(hed_alpha=0, hed_beta=0, brightness=0, contrast=0, blur_p=0)
    np.testing.assert_array_equal(draw_params(np.random.default_rng(1), off), IDENTITY_PARAMS)


def test_collect_images_names_missing_val_image(tmp_path: Path) -> None:
    from qupath_camseg.cli import main
    from qupath_camseg.errors import ProjectError
    from qupath_camseg.train import TrainConfig, collect_images

    folder = tmp_path / "p"
    assert (
        main(
            [
                "synth",
                str(folder),
                "--slides",
                "3",
                "--negatives",
                "1",
                "--width",
                "512",
                "--height",
                "512",
                "--mpp",
                "2",
                "--tile-px",
                "256",
                "--door",
                "files",
            ]
        )
        == 0
    )
    with pytest.raises(ProjectError):
        collect_images(folder, TrainConfig(classes=("Tumor",), mpp=MPP, tile_px=TILE, val_images=("nope.tif",)))
    data = collect_images(folder, TrainConfig(classes=("Tumor",), mpp=MPP, tile_px=TILE))
    assert len(data.train_images) == 1 and len(data.val_images) == 1
    assert data.classes == [{"name": "Tumor", "color": [200, 0, 0]}]
    names = [i.name for i in data.train_images + data.val_images]
    data2 = collect_images(folder, TrainConfig(classes=("Tumor",), mpp=MPP, tile_px=TILE, val_images=(names[0],)))
    assert [i.name for i in data2.val_images] == [names[0]]
    # the tumour-free slide has no annotations: left out unless asked for (then all negative)
    assert all(i.regions for i in data.train_images + data.val_images)
    every = collect_images(folder, TrainConfig(classes=("Tumor",), mpp=MPP, tile_px=TILE, include_unannotated=True))
    images = every.train_images + every.val_images
    assert len(images) == 3 and sum(not i.regions for i in images) == 1
    assert all(i.regions for i in every.val_images)  # validation keeps a slide with tumour


def test_a_normal_box_across_a_tumour_never_paints_over_it() -> None:
    """A review box marked Normal that cuts a larger tumour outline: the tumour keeps its label; a
    Normal island inside the tumour still wins (size order)."""
    tumour = box(0, 0, 300, 300)
    objs = [QPObject(tumour, classification="Tumor"), QPObject(box(200, 100, 400, 200), classification="Normal"),
            QPObject(box(50, 50, 80, 80), classification="Normal")]
    shapes, regions = build_shapes(objs, {"Tumor": 1}, background_classes=["Normal"])
    from qupath_camseg.train import LabelledImage

    img = LabelledImage(name="a", entry_id="1", path="a.tif", slide_mpp=1.0, dimensions=(400, 400),
                        tile_px_level0=400, shapes=shapes, fill=IGNORE_INDEX, regions=regions,
                        tissue_xy=np.zeros((0, 2), np.int64), grid_xy=np.zeros((0, 2), np.int64))
    lab = img.label_tile((0, 0, 400, 400), (400, 400))
    assert lab[150, 250] == 1  # tumour under the Normal box
    assert lab[150, 350] == 0  # the box outside the tumour
    assert lab[65, 65] == 0  # the island
    assert lab[350, 350] == IGNORE_INDEX
    assert img.negative_area() == pytest.approx(200 * 100 + 30 * 30)
