"""The ``camseg Tissue`` annotation (the tissue a prediction analysed) never trains and is never scored."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import box

from qupath_camseg.annotations import CAMSEG_METADATA, TISSUE_CLASS, QPObject
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.evaluate.sources import missing_class_warning
from qupath_camseg.train import TrainConfig, collect_images
from qupath_camseg.train.collect import _found_classes, _usable
from qupath_camseg.train.images import build_shapes


def _tissue(*, ours: bool, children: list[QPObject] | None = None) -> QPObject:
    return QPObject(box(0, 0, 1000, 1000), classification=TISSUE_CLASS, name=TISSUE_CLASS, locked=True,
                    metadata=dict(CAMSEG_METADATA) if ours else {}, children=children or [])


def test_the_tissue_annotation_is_no_label_but_a_users_outline_inside_it_is() -> None:
    tumour = QPObject(box(100, 100, 300, 300), classification="Tumor", name="my tumour")
    for tissue in (_tissue(ours=True, children=[tumour]), _tissue(ours=False, children=[tumour])):
        usable = _usable([tissue])
        assert usable == [tumour]  # nested in QuPath's hierarchy: still the user's label
        assert set(_found_classes({"1": usable}, ["Tumor"], "here")) == {"Tumor"}
    # a copy the user made (no metadata, another name) of the tissue annotation: still never a label
    copy = QPObject(box(0, 0, 1000, 1000), classification=TISSUE_CLASS, name="my copy")
    assert _usable([copy, tumour]) == [tumour]
    assert set(_found_classes({"1": [copy, tumour]}, ["Tumor"], "here")) == {"Tumor"}
    shapes, regions = build_shapes([copy, tumour], {"Tumor": 1}, background_classes=[TISSUE_CLASS])
    assert [label for _, label in shapes] == [1] and set(regions) == {1}


def test_training_refuses_the_tissue_class(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettingsError, match="never trains"):
        collect_images(tmp_path, TrainConfig(classes=[TISSUE_CLASS]))


def test_predictions_with_only_the_tissue_annotation_raise_no_class_warning() -> None:
    """A normal slide: the model found no tumour, so the predictions hold only the analysed tissue."""
    assert missing_class_warning([_tissue(ours=True)], [], "predictions", ("tumor",), "scored as empty", ours=True) == []
    other = QPObject(box(0, 0, 10, 10), classification="Carcinoma", metadata=dict(CAMSEG_METADATA))
    (warning,) = missing_class_warning([_tissue(ours=True), other], [], "predictions", ("tumor",), "x", ours=True)
    assert "Carcinoma" in warning and TISSUE_CLASS not in warning
