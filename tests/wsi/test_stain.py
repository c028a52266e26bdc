"""Stain normalisation (``qupath_camseg.wsi.stain``): estimation, the slide → reference transform,
its identity and round-trip properties, the glass fallback, and real slides."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from qupath_camseg.errors import StainNormalizationError
from qupath_camseg.wsi import StainReference, StainTransform, estimate_stains, fit_reference, pick_boxes
from qupath_camseg.wsi.stain import MIN_STAINED_PX, od_to_rgb, rgb_to_od

RUIFROK = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]])
RUIFROK /= np.linalg.norm(RUIFROK, axis=1, keepdims=True)
OTHER = np.array([[0.54, 0.72, 0.44], [0.10, 0.88, 0.46]])  # another lab's stains
OTHER /= np.linalg.norm(OTHER, axis=1, keepdims=True)


def _tile(stains: np.ndarray, seed: int = 0, n: int = 128, *, h_max: float = 1.6, e_max: float = 0.9,
          glass: float = 0.2) -> np.ndarray:
    """A tile made exactly of two stains (OD = c_H·h + c_E·e), a share ``glass`` of it empty:
    uint8 (n, n, 3)."""
    rng = np.random.default_rng(seed)
    c = np.stack([rng.uniform(0, h_max, (n, n)) * (rng.random((n, n)) < 0.5),
                  rng.uniform(0.05, e_max, (n, n))], -1)
    c[rng.random((n, n)) < glass] = 0.0
    return od_to_rgb(c @ stains)


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))


def test_od_round_trip_is_exact_for_every_byte():
    v = np.arange(256, dtype=np.uint8)
    assert np.array_equal(od_to_rgb(rgb_to_od(v)), v)
    assert rgb_to_od(np.array([255], np.uint8))[0] == 0.0


@pytest.mark.parametrize("stains", [RUIFROK, OTHER])
def test_estimate_recovers_known_stains(stains):
    tile = _tile(stains)
    found = estimate_stains(tile)
    assert found is not None
    # Macenko's robust extremes (1st/99th angle percentile) sit slightly inside the stains' cone
    assert _angle(found.matrix[0], stains[0]) < 3.0 and _angle(found.matrix[1], stains[1]) < 3.0
    od = rgb_to_od(tile).reshape(-1, 3)
    true_max = np.percentile((od @ np.linalg.pinv(stains))[od.max(axis=1) >= 0.15], 99, axis=0)
    assert found.max_concentrations == pytest.approx(true_max, rel=0.1)


def test_identity_on_the_reference():
    tile = _tile(RUIFROK, seed=1)
    ref = estimate_stains(tile)
    out = StainTransform.between(ref, ref)(tile)
    assert np.abs(out.astype(int) - tile).max() <= 1


def test_there_and_back_again():
    """Slide A → reference B → A gives A back (up to rounding): the transform is invertible on the stain plane."""
    a_tile = _tile(OTHER, seed=2, h_max=1.2, e_max=0.6)
    a, b = estimate_stains(a_tile), estimate_stains(_tile(RUIFROK, seed=3))
    back = StainTransform.between(b, a)(StainTransform.between(a, b)(a_tile))
    assert np.abs(back.astype(int) - a_tile).max() <= 2


def test_normalised_tile_looks_like_the_reference_stained_tile():
    """The same tissue in two stain profiles: normalising one onto the other's stains removes
    most of the colour difference."""
    rng = np.random.default_rng(4)
    c = np.stack([rng.uniform(0, 1.5, (96, 96)) * (rng.random((96, 96)) < 0.5), rng.uniform(0.05, 0.8, (96, 96))], -1)
    ref_tile = od_to_rgb(c @ RUIFROK)
    shifted = od_to_rgb((c * [1.4, 0.6]) @ OTHER)  # stronger H, paler E, other vectors
    out = StainTransform.between(estimate_stains(shifted), estimate_stains(ref_tile))(shifted)
    before = np.abs(shifted.astype(int) - ref_tile).mean()
    after = np.abs(out.astype(int) - ref_tile).mean()
    assert after < before / 5 and after < 3


def test_glass_falls_back_to_identity():
    glass = np.full((128, 128, 3), 242, np.uint8)
    glass += np.random.default_rng(0).integers(0, 6, glass.shape, dtype=np.uint8)
    assert estimate_stains(glass) is None
    with pytest.raises(StainNormalizationError, match="stained pixels"):
        fit_reference([glass, glass], what="the glass")
    with pytest.raises(StainNormalizationError):
        fit_reference([])
    few = glass.copy()
    few.reshape(-1, 3)[: MIN_STAINED_PX - 1] = _tile(RUIFROK, glass=0.0).reshape(-1, 3)[: MIN_STAINED_PX - 1]
    assert estimate_stains(few) is None
    assert StainTransform.identity()(glass) is glass


def test_one_stain_or_grey_ink_is_ill_posed():
    e_only = od_to_rgb(np.random.default_rng(5).uniform(0.2, 1.0, (64, 64, 1)) * RUIFROK[1])
    assert estimate_stains(e_only) is None
    ink = od_to_rgb(np.random.default_rng(6).uniform(0.3, 2.5, (64, 64, 1)) * np.ones(3) / np.sqrt(3))
    assert estimate_stains(ink) is None  # grey (pen ink, dust) is no stain


def test_ink_and_dust_do_not_move_the_estimate():
    tile = _tile(RUIFROK, seed=7)
    clean = estimate_stains(tile)
    inked = tile.copy()
    inked[:40] = od_to_rgb(np.random.default_rng(8).uniform(0.5, 2.8, (40, 128, 1)) * np.ones(3) / np.sqrt(3))
    found = estimate_stains(inked)
    assert _angle(found.matrix[0], clean.matrix[0]) < 1.0 and _angle(found.matrix[1], clean.matrix[1]) < 1.0


def test_deterministic_and_picklable():
    tile = _tile(OTHER, seed=9)
    t = StainTransform.between(estimate_stains(tile), estimate_stains(_tile(RUIFROK)))
    again = pickle.loads(pickle.dumps(t))
    assert np.array_equal(t(tile), again(tile)) and np.array_equal(t(tile), t(tile.copy()))
    assert estimate_stains(tile) == estimate_stains(tile.copy())


def test_reference_json_round_trip_and_validation():
    ref = fit_reference([_tile(RUIFROK, seed=s) for s in range(3)])
    assert StainReference.from_json(ref.to_json()) == ref
    for bad in [None, {"method": "vahadane"}, {**ref.to_json(), "stain_matrix": [[1, 0, 0]]},
                {**ref.to_json(), "max_concentrations": [1.0, float("nan")]},
                {**ref.to_json(), "max_concentrations": [1.0, -1.0]},
                {**ref.to_json(), "stain_matrix": [[1, 0, 0], [1, 0, 0]]},
                {**ref.to_json(), "stain_matrix": "abc"}]:
        with pytest.raises(StainNormalizationError):
            StainReference.from_json(bad)


def test_scale_factors_are_bounded():
    a = StainReference(tuple(map(tuple, RUIFROK)), (1.0, 1.0))
    b = StainReference(tuple(map(tuple, RUIFROK)), (100.0, 0.001))
    t = StainTransform.between(a, b)
    assert np.allclose(t.matrix, np.linalg.pinv(RUIFROK) @ np.diag([4.0, 0.25]) @ RUIFROK, atol=1e-5)


def test_pick_boxes_spreads_evenly():
    assert pick_boxes(list(range(5)), max_tiles=10) == list(range(5))
    assert pick_boxes(list(range(100)), max_tiles=3) == [0, 50, 99]


# -------------------------------------------------------------------------------- real slides
def _real(shared_data, name: str, mpp: float | None):
    from qupath_camseg.wsi import open_slide

    slide = open_slide(shared_data / name, mpp=mpp)
    thumb, _ = slide.read_thumbnail_mpp(max(slide.mpp, 2.0))
    slide.close()
    return thumb


@pytest.mark.parametrize("name, mpp", [("svs/cmu-1-small-region.svs", None),
                                       ("camelyon16/tumor_001_level5.tif", 7.776),
                                       ("svs/tcga-cr-7395-01a-01-ts1.svs", 0.5)])
def test_real_slides_give_h_and_e_and_self_normalise_to_themselves(shared_data, name, mpp):
    rgb = _real(shared_data, name, mpp)
    ref = estimate_stains(rgb)
    assert ref is not None
    h, e = ref.matrix
    assert h[0] > e[0] and e[1] > e[0]  # haematoxylin absorbs red more than eosin does; eosin absorbs green
    assert all(0.3 < c < 5 for c in ref.max_concentrations)
    out = StainTransform.between(ref, ref)(rgb)
    stained = rgb_to_od(rgb).max(axis=-1) > 0.15
    assert np.median(np.abs(out.astype(int) - rgb)[stained]) <= 3  # only the off-plane part is dropped


def test_real_slide_normalised_onto_synthetic_reference_keeps_glass_and_structure(shared_data):
    from qupath_camseg.synthetic import render_region
    from qupath_camseg.synthetic.truth import make_truth

    rgb = _real(shared_data, "svs/cmu-1-small-region.svs", None)
    synthetic = render_region(make_truth(2048, 2048, seed=1, mpp=0.25), (512, 512, 1024, 1024))
    out = StainTransform.between(estimate_stains(rgb), estimate_stains(synthetic))(rgb)
    glass = rgb.min(axis=-1) > 225
    assert out[glass].min() > 200  # glass stays glass
    grey_in, grey_out = rgb.mean(-1), out.mean(-1)
    assert np.corrcoef(grey_in.ravel(), grey_out.ravel())[0, 1] > 0.9  # same structure, other colours
    now = estimate_stains(out)
    ref = estimate_stains(synthetic)
    assert _angle(now.matrix[0], ref.matrix[0]) < 5 and _angle(now.matrix[1], ref.matrix[1]) < 5
