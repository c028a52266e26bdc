"""The output stage: chunk summaries on a process pool equal the in-process ones, and regions
traced chunk by chunk join across chunk seams into the right shapes."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from qupath_camseg.predict import (
    ChunkStore,
    ChunkSummaries,
    TilePlan,
    build_objects,
    summarize_chunk,
)

CHUNK = 64
DS = 4.0  # level-0 px per map px


def _map(size: tuple[int, int]) -> np.ndarray:
    """``uint8 (2, h, w)``: class 0 a disc and a ring (with a hole) crossing chunk seams, class 1 noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    disc = (xx - 128) ** 2 + (yy - 128) ** 2 <= 70**2  # spans chunks 0..3 in both directions
    r = np.hypot(xx - 300, yy - 100)
    ring = (r >= 20) & (r <= 45)
    rng = np.random.default_rng(3)
    a = np.where(disc | ring, 230, 20).astype(np.uint8)
    b = (rng.random((h, w)) > 0.97).astype(np.uint8) * 200
    return np.stack([a, b])


def _store(tmp_path, size=(448, 320)) -> tuple[ChunkStore, TilePlan, np.ndarray]:
    plan = TilePlan.create((int(size[0] * DS), int(size[1] * DS)), 0.25, 1.0, tile_px=32, chunk_px=CHUNK)
    assert plan.map_size == size and plan.ds == DS
    store = ChunkStore(tmp_path / "store", plan, 2, {"test": 1})
    full = _map(size)
    rows, cols = plan.chunk_shape
    for r in range(rows):
        for c in range(cols):
            x, y, w, h = plan.chunk_box(r, c)
            store.write(r, c, np.ascontiguousarray(full[:, y:y + h, x:x + w]))
    return store, plan, full


def _key(summaries):
    return [(s.row, s.col, [[p.wkb for p in k] for k in s.pieces], [[p.wkb for p in k] for k in s.open_pieces],
             sorted((key, v.tobytes()) for key, v in s.tile_means.items())) for s in summaries]


@pytest.mark.multiprocessing
def test_pooled_summaries_equal_in_process_ones(tmp_path):
    store, plan, _ = _store(tmp_path)
    n_chunks = plan.chunk_shape[0] * plan.chunk_shape[1]
    assert n_chunks >= 32  # enough for the pool to start
    with ChunkSummaries(store, measure_px=32, threshold_q=128, processes=1, expected=n_chunks) as serial:
        ref = serial.finish()
    with ChunkSummaries(store, measure_px=32, threshold_q=128, processes=2, expected=n_chunks) as pooled:
        assert pooled._pool is not None
        for r in range(plan.chunk_shape[0]):  # as the chunk writers do, for the first half
            for c in range(plan.chunk_shape[1] // 2):
                pooled.submit(r, c)
        got = pooled.finish()  # the rest are summarised here (as after a resume)
    assert len(ref) == n_chunks and _key(got) == _key(ref)


def test_summary_pieces_and_means_match_the_chunk(tmp_path):
    store, plan, full = _store(tmp_path)
    s = summarize_chunk(store.read(1, 2), plan.chunk_box(1, 2), ds=DS, measure_px=32, threshold_q=128, row=1, col=2)
    x, y, w, h = plan.chunk_box(1, 2)
    fg = full[0, y:y + h, x:x + w] >= 128
    area = sum(p.area for p in s.pieces[0] + s.open_pieces[0]) / DS**2
    assert area == pytest.approx(fg.sum(), rel=0.05)  # marching squares cuts corners a little
    block = full[:, y:y + 32, x + 32:x + 64].reshape(2, -1)
    np.testing.assert_allclose(s.tile_means[(y // 32, (x + 32) // 32)],
                               np.concatenate([block.mean(1) / 255, (block >= 128).mean(1)]))


def test_regions_join_across_chunk_seams(tmp_path):
    store, plan, _ = _store(tmp_path)
    with ChunkSummaries(store, measure_px=32, threshold_q=128) as s:
        summaries = s.finish()
    assert sum(len(x.open_pieces[0]) for x in summaries) > 2  # the shapes were cut into pieces

    def everything(boxes):
        return np.ones(len(boxes))

    objs, tumor_area = build_objects(
        summaries, plan, everything, None, class_names=["Tumor", "Noise"], colors=[(200, 0, 0), (0, 0, 200)],
        measure_px=32, min_tile_tissue=0.5, slide_mpp=0.25, min_area_um2=50.0, min_hole_um2=1.0,
        simplify_um=None, tumor_index=0)
    regions = [o.geometry for o in objs if o.object_type == "annotation" and o.classification == "Tumor"]
    assert len(regions) == 2  # the disc and the ring, each in one piece
    disc, ring = sorted(regions, key=lambda g: g.centroid.x)
    true_disc = shapely.Point(128 * DS, 128 * DS).buffer(70 * DS)
    assert disc.symmetric_difference(true_disc).area / true_disc.area < 0.02
    assert len(ring.interiors) == 1
    assert tumor_area == pytest.approx(disc.area + ring.area)
    tiles = [o for o in objs if o.object_type == "tile"]
    assert len(tiles) == (448 // 32) * (320 // 32)
    centre = next(o for o in tiles if o.geometry.contains(shapely.Point(140 * DS, 140 * DS)))
    assert centre.classification == "Tumor" and centre.measurements["Tumor area fraction"] == 1.0


def test_full_and_empty_chunks_take_the_shortcut_and_still_join(tmp_path):
    """A region larger than a chunk: interior chunks become boxes, the region one polygon."""
    plan = TilePlan.create((int(256 * DS), int(256 * DS)), 0.25, 1.0, tile_px=32, chunk_px=CHUNK)
    store = ChunkStore(tmp_path / "s", plan, 1, {"t": 2})
    full = np.zeros((1, 256, 256), np.uint8)
    full[0, 20:230, 10:250] = 255
    for r in range(4):
        for c in range(4):
            x, y, w, h = plan.chunk_box(r, c)
            store.write(r, c, np.ascontiguousarray(full[:, y:y + h, x:x + w]))
    with ChunkSummaries(store, measure_px=32, threshold_q=128) as s:
        summaries = s.finish()
    inner = next(x for x in summaries if (x.row, x.col) == (1, 1))
    assert len(inner.open_pieces[0]) == 1 and inner.open_pieces[0][0].equals(shapely.box(64 * DS, 64 * DS, 128 * DS, 128 * DS))
    objs, area = build_objects(summaries, plan, lambda b: np.ones(len(b)), None, class_names=["Tumor"],
                               colors=[(200, 0, 0)], measure_px=32, min_tile_tissue=0.5, slide_mpp=0.25,
                               min_area_um2=1.0, min_hole_um2=1.0, simplify_um=None, tumor_index=0)
    (region,) = [o.geometry for o in objs if o.object_type == "annotation"]
    assert len(region.interiors) == 0
    truth = shapely.box(10 * DS, 20 * DS, 250 * DS, 230 * DS)
    assert region.symmetric_difference(truth).area / truth.area < 0.005


@pytest.mark.multiprocessing
def test_a_dead_worker_process_costs_time_not_the_result(tmp_path, caplog):
    """If a summary process dies (killed for memory, say), the rest is done in-process: same result."""
    store, plan, _ = _store(tmp_path)
    n_chunks = plan.chunk_shape[0] * plan.chunk_shape[1]
    with ChunkSummaries(store, measure_px=32, threshold_q=128) as serial:
        ref = serial.finish()
    import os
    from concurrent.futures.process import BrokenProcessPool

    with ChunkSummaries(store, measure_px=32, threshold_q=128, processes=2, expected=n_chunks) as pooled:
        pooled.submit(0, 0)
        pooled.submit(0, 1)
        pooled._futures[(0, 0)].result()  # the pool is up
        death = pooled._pool.submit(os._exit, 1)  # a worker dies, as when the kernel kills it
        with pytest.raises(BrokenProcessPool):
            death.result(timeout=60)  # the pool knows it is broken: no respawn race from here on
        with caplog.at_level("WARNING"):
            for r in range(plan.chunk_shape[0]):
                for c in range(plan.chunk_shape[1]):
                    pooled.submit(r, c)  # must not raise
            got = pooled.finish()
    assert _key(got) == _key(ref)
    assert "worker process died" in caplog.text
