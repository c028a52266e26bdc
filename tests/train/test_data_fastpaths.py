"""The DataLoader workers' shortcuts give exactly the pixels of the plain path: large outlines are
clipped to the tile before rasterising, and the dihedral transform + (3, H, W) layout is one copy."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import Polygon, box

from qupath_camseg.annotations import rasterize
from qupath_camseg.train import AugmentConfig, augment_tile, dihedral
from qupath_camseg.train.datasets import _to_tensors
from qupath_camseg.train.images import IGNORE_INDEX, LabelledImage


def _wiggly(cx: float, cy: float, radius: float, n: int, seed: int) -> Polygon:
    """A hand-drawn-like outline with ``n`` vertices (valid: radius stays positive)."""
    rng = np.random.default_rng(seed)
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius * (1 + 0.15 * np.sin(7 * th) + 0.01 * rng.standard_normal(n))
    return Polygon(np.column_stack((cx + r * np.cos(th), cy + r * np.sin(th))))


def _staircase(x0: int, y0: int, steps: int, step: int) -> Polygon:
    """An axis-aligned staircase with ``4 · steps`` vertices on odd integers (edges through pixel centres
    of a 2× downsampled mask whose box starts on an even coordinate)."""
    pts = [(x0, y0)]
    for i in range(steps):
        pts += [(x0 + (i + 1) * step, y0 + i * step), (x0 + (i + 1) * step, y0 + (i + 1) * step)]
    pts += [(x0, y0 + steps * step)]
    return Polygon(pts)


def _image(shapes: list[tuple[Polygon, int]]) -> LabelledImage:
    return LabelledImage(
        name="big", entry_id="1", path="big.tif", slide_mpp=0.243, dimensions=(60_000, 60_000),
        tile_px_level0=1054.0, shapes=shapes, fill=0, regions={1: shapely.MultiPolygon([shapes[0][0]])},
        tissue_xy=np.zeros((0, 2), np.int64), grid_xy=np.zeros((0, 2), np.int64),
    )


def test_clipped_label_tiles_equal_rasterising_the_whole_shapes() -> None:
    tumour = _wiggly(30_000, 30_000, 12_000, 3000, seed=1)
    tumour = Polygon(tumour.exterior, holes=[_wiggly(33_000, 30_000, 1_500, 400, seed=2).exterior.coords[::-1]])
    stairs = _staircase(20_001, 20_001, 40, 100)  # 80 vertices, painted after the tumour
    ignore = box(29_000, 29_000, 29_700, 29_600)  # few vertices: never clipped, painted last
    bowtie = Polygon([(40_000, 40_000), (45_000, 45_000), (45_000, 40_000), (40_000, 45_000)]
                     + [(40_000, 45_000 - i) for i in range(1, 80)])  # invalid: must be left alone
    shapes = [(tumour, 1), (stairs, 2), (ignore, IGNORE_INDEX), (bowtie, 1)]
    img = _image(shapes)
    assert list(img._clip) == [True, True, False, False]
    rng = np.random.default_rng(0)
    boxes = [(20_000, 20_000, 1024, 1024), (20_500, 20_900, 1024, 1024), (29_100, 29_100, 1054, 1054),
             (41_000, 41_000, 1054, 1054), (0, 0, 1054, 1054)]
    for _ in range(25):
        for cx, cy in (img.inside_point(1, rng), img.border_point(1, rng)):
            boxes.append((int(cx) - 527, int(cy) - 527, 1054, 1054))
    mixed = 0
    for b in boxes:
        for out in ((512, 512), (b[2] // 2, b[3] // 2), (300, 200)):
            got = img.label_tile(b, out)
            want = rasterize(shapes, b, out, fill=0)
            np.testing.assert_array_equal(got, want, err_msg=f"box {b}, out_size {out}")
            mixed += len(np.unique(got)) > 1
    assert mixed > 20  # the comparison covered tiles with edges, not just uniform ones


def test_clipping_keeps_tiles_fully_inside_and_outside() -> None:
    img = _image([(_wiggly(30_000, 30_000, 12_000, 3000, seed=3), 1)])
    assert (img.label_tile((29_000, 29_000, 1054, 1054), (512, 512)) == 1).all()
    assert (img.label_tile((1_000, 1_000, 1054, 1054), (512, 512)) == 0).all()


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_views_give_the_same_tensors_as_copies(k: int, flip: bool) -> None:
    rng = np.random.default_rng(k)
    rgb = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (48, 40), dtype=np.uint8)
    copied = dihedral(rgb, label, k, flip)
    views = dihedral(rgb, label, k, flip, copy=False)
    assert copied[0].flags.c_contiguous and copied[1].flags.c_contiguous
    assert np.shares_memory(views[0], rgb) and np.shares_memory(views[1], label)  # no pixel moved
    x_copy, y_copy = _to_tensors(*copied)
    x_view, y_view = _to_tensors(*views)
    assert x_view.is_contiguous() and y_view.is_contiguous() and x_view.shape == (3, *copied[1].shape)
    assert torch.equal(x_copy, x_view) and torch.equal(y_copy, y_view)
    assert torch.equal(x_view, torch.from_numpy(copied[0]).permute(2, 0, 1))


def test_augment_tile_copy_flag_changes_layout_only() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    label = (np.arange(32 * 32).reshape(32, 32) % 3).astype(np.uint8)
    for seed in range(8):
        a = augment_tile(rgb, label, np.random.default_rng(seed), AugmentConfig())
        b = augment_tile(rgb, label, np.random.default_rng(seed), AugmentConfig(), copy=False)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_training_workers_fit_dev_shm(monkeypatch, caplog):
    """Default loader workers shrink to what /dev/shm holds; a number the user gave is kept, with a warning."""
    import qupath_camseg._runtime as io_mod
    from qupath_camseg.train.loaders import _fit_shared_memory

    batch = 32 * 512 * 512 * 4  # 32 MB: RGB + label
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 1 << 30)  # 1 GB: 512 MB usable, 4 batches each
    assert _fit_shared_memory(15, batch_bytes=batch, given=False) == 4
    with caplog.at_level("WARNING"):
        assert _fit_shared_memory(15, batch_bytes=batch, given=True) == 15
    assert "--shm-size" in caplog.text
    assert _fit_shared_memory(2, batch_bytes=batch, given=False) == 2  # fits
    assert _fit_shared_memory(0, batch_bytes=batch, given=False) == 0
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: 64 << 20)
    assert _fit_shared_memory(15, batch_bytes=batch, given=False) == 0  # main process reads
    monkeypatch.setattr(io_mod, "shm_free_bytes", lambda: None)
    assert _fit_shared_memory(15, batch_bytes=batch, given=False) == 15
