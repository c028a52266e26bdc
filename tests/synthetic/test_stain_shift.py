"""Stain shifts of synthetic slides: the default stays bit-identical, a shift changes the colours
but not the truth, ``random`` is drawn from the seed, and projects record the shift."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qupath_camseg.synthetic import StainShift, make_truth, stain_shift, write_synthetic_project
from qupath_camseg.synthetic.render import TileRenderer
from qupath_camseg.wsi import estimate_stains


@pytest.fixture(scope="module")
def truth():
    return make_truth(2048, 2048, seed=3, mpp=0.25)


def _render(truth, shift) -> np.ndarray:
    r = TileRenderer(truth, shift)
    return np.concatenate([r.render(x, 768, 512) for x in (512, 1024)], 1)


def test_a_neutral_shift_renders_the_default_profile_bit_for_bit(truth):
    assert np.array_equal(_render(truth, None), _render(truth, StainShift()))


@pytest.mark.parametrize("name", ["strong-h", "pale-e", "scanner"])
def test_named_shifts_change_the_stains_as_documented(truth, name):
    base, shifted = _render(truth, None), _render(truth, stain_shift(name))
    assert np.abs(base.astype(int) - shifted).mean() > 3
    b, s = estimate_stains(base), estimate_stains(shifted)
    if name == "strong-h":
        assert s.max_concentrations[0] == pytest.approx(1.5 * b.max_concentrations[0], rel=0.1)
    elif name == "pale-e":
        assert s.max_concentrations[1] == pytest.approx(0.5 * b.max_concentrations[1], rel=0.15)
    else:  # other stain colours: the estimated vectors turn
        assert np.abs(s.matrix - b.matrix).max() > 0.05


def test_random_is_a_function_of_the_seed():
    assert stain_shift("random", 5) == stain_shift("random", 5) != stain_shift("random", 6)
    assert stain_shift("none") is None
    with pytest.raises(ValueError, match="stain shift"):
        stain_shift("purple")
    with pytest.raises(ValueError):
        StainShift(h_scale=0)


def test_project_records_the_shift_and_keeps_the_truth(tmp_path):
    write_synthetic_project(tmp_path / "a", slides=1, width=1024, height=1024, seed=2, door="files")
    write_synthetic_project(tmp_path / "b", slides=1, width=1024, height=1024, seed=2, door="files",
                            stain_shift="scanner")
    spec_a = json.loads((tmp_path / "a" / "camseg" / "synth.json").read_text())
    spec_b = json.loads((tmp_path / "b" / "camseg" / "synth.json").read_text())
    assert "stain_shift" not in spec_a and spec_b["stain_shift"] == "scanner"
    ann = [json.loads(p.read_text()) for p in (tmp_path / "a", tmp_path / "b")
           for p in sorted((p / "camseg" / "annotations").glob("*.geojson"))]
    assert [f["geometry"] for f in ann[0]["features"]] == [f["geometry"] for f in ann[1]["features"]]  # same tumours
    a = (tmp_path / "a" / "images" / "tumor_001.tif").read_bytes()
    b = (tmp_path / "b" / "images" / "tumor_001.tif").read_bytes()
    assert a != b
