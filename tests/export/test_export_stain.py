"""Exporting a model trained with stain normalisation: QuPath's pixel classifier cannot apply it,
so the export says so (and a model without it gets no such note)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qupath_camseg.export import export_qupath
from qupath_camseg.model import ModelConfig, build_model, save_bundle

ARCH = {"name": "unet", "width": 4, "depth": 2}
STAIN = {"method": "macenko", "stain_matrix": [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]], "max_concentrations": [1.6, 0.5]}


@pytest.mark.parametrize("stain", [STAIN, None])
def test_export_notes_that_qupath_does_not_normalise_stains(tmp_path: Path, stain) -> None:
    torch.manual_seed(0)
    save_bundle(tmp_path / "m", build_model({**ARCH, "n_classes": 1}),
                ModelConfig(arch=ARCH, mpp=2.0, tile_px=32, classes=[{"name": "Tumor"}], stain=stain))
    result = export_qupath(tmp_path / "m", tmp_path / "out", padding_px=8)
    noted = any("--stain-norm" in n for n in result.notes)
    assert noted is (stain is not None)
