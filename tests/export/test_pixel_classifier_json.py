"""The pixel-classifier JSON validator: built from QuPath's Gson type adapters' field names and
discriminators (PixelClassifiers, PixelClassifierMetadata, PixelCalibration, ImageOps, DnnModels /
OpenCVDnn, the DJL extension's DjlDnnModel, GsonTools.PathClassTypeAdapter, ColorTransforms).
A valid export passes; each deliberately broken field is caught and named."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qupath_camseg.errors import CamsegError, InvalidPixelClassifierError
from qupath_camseg.export import (
    build_pixel_classifier,
    model_path_from_classifier,
    set_model_uri,
    validate_pixel_classifier,
)

CLASSES = [{"name": "Tumor", "color": [200, 0, 0]}]


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")  # the validator only checks that it exists
    return path


@pytest.fixture()
def valid(model_file: Path) -> dict[str, Any]:
    return build_pixel_classifier(model_uri=model_file.as_uri(), mpp=0.5, input_px=576, padding_px=32, classes=CLASSES)


def _dnn(d: dict) -> dict:
    return d["op"]["op"]["ops"][1]


def test_built_classifiers_are_valid(valid: dict, model_file: Path) -> None:
    validate_pixel_classifier(valid, check_files=True)
    djl = build_pixel_classifier(model_uri=model_file.as_uri(), mpp=0.5, input_px=576, padding_px=32,
                                 classes=CLASSES, dnn="DjlDnnModel")  # fmt: skip
    validate_pixel_classifier(djl, check_files=True)
    assert model_path_from_classifier(valid) == model_path_from_classifier(djl) == model_file
    assert valid["metadata"]["inputResolution"]["pixelWidth"]["unit"] == "\u00b5m"
    assert _dnn(valid)["model"]["scale"] == 1.0  # QuPath's deserialised OpenCVDnn would have 0.0


def test_legacy_class_forms_that_qupath_reads_are_accepted(valid: dict) -> None:
    # GsonTools.PathClassTypeAdapter reads a bare string and the pre-0.4 {name, colorRGB} form too.
    valid["metadata"]["classificationLabels"]["1"] = "Tumor"
    validate_pixel_classifier(valid)
    valid["metadata"]["classificationLabels"]["1"] = {"name": "Tumor", "colorRGB": -3670016}
    validate_pixel_classifier(valid)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        *parents, last = path.split("/")
        node = d
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()
M = "metadata"
DNN = "op/op/ops/1"
BROKEN: list[tuple[str, Callable[[dict], None], str]] = [
    ("classifier type discriminator", _set("pixel_classifier_type", "OpenCVClassifier"), "pixel_classifier_type"),
    ("unknown top-level field", _set("metdata", {}), "JSON.metdata"),
    ("metadata missing", _set(M, _DELETE), "JSON.metadata"),
    ("unit with Greek mu", _set(f"{M}/inputResolution/pixelWidth/unit", "\u03bcm"), "pixelWidth.unit"),
    ("unit 'um'", _set(f"{M}/inputResolution/pixelHeight/unit", "um"), "pixelHeight.unit"),
    ("pixel size zero", _set(f"{M}/inputResolution/pixelWidth/value", 0), "pixelWidth.value"),
    ("resolution missing", _set(f"{M}/inputResolution", _DELETE), "metadata.inputResolution"),
    ("time unit", _set(f"{M}/inputResolution/timeUnit", "SECOND"), "timeUnit"),
    ("input width as string", _set(f"{M}/inputWidth", "576"), "metadata.inputWidth"),
    ("padding eats the tile", _set(f"{M}/inputPadding", 288), "metadata.inputPadding"),
    ("output type lower case", _set(f"{M}/outputType", "Probability"), "metadata.outputType"),
    ("uint8 probabilities", _set(f"{M}/outputPixelType", "UINT8"), "metadata.outputPixelType"),
    ("missing pixel type (QuPath default UINT8)", _set(f"{M}/outputPixelType", _DELETE), "metadata.outputPixelType"),
    ("empty output channels", _set(f"{M}/outputChannels", []), "metadata.outputChannels"),
    ("misspelt metadata field", _set(f"{M}/inputPaddding", 32), "metadata.inputPaddding"),
    ("label key not a number", _set(f"{M}/classificationLabels/one", {"name": "X", "color": [1, 2, 3]}), "classificationLabels.one"),
    ("label gap", _set(f"{M}/classificationLabels/3", {"name": "X", "color": [1, 2, 3]}), "without gaps"),
    ("class without colour", _set(f"{M}/classificationLabels/1", {"name": "Tumor"}), "classificationLabels.1"),
    ("colour out of range", _set(f"{M}/classificationLabels/1/color", [300, 0, 0]), "classificationLabels.1.color"),
    ("colour as hex string", _set(f"{M}/classificationLabels/1/color", "#ff0000"), "classificationLabels.1.color"),
    ("data op discriminator", _set("op/type", "data.op.channel"), "op.type"),
    ("colour transforms swapped", _set("op/colorTransforms/0", {"channel": 2}), "op.colorTransforms[0].channel"),
    ("unknown colour transform", _set("op/colorTransforms/1", {"band": 1}), "op.colorTransforms[1]"),
    ("sequential discriminator", _set("op/op/type", "op.sequential"), "op.op.type"),
    ("convert discriminator", _set("op/op/ops/0/type", "op.core.ensure-type"), "op.op.ops[0].type"),
    ("convert pixel type", _set("op/op/ops/0/pixelType", "Float32"), "op.op.ops[0].pixelType"),
    ("dnn op discriminator", _set(f"{DNN}/type", "op.ml.dnn"), "op.op.ops[1].type"),
    ("dnn input width mismatch", _set(f"{DNN}/inputWidth", 512), "op.op.ops[1].inputWidth"),
    ("dnn padding mismatch", _set(f"{DNN}/padding/x2", 0), "op.op.ops[1].padding.x2"),
    ("dnn padding missing", _set(f"{DNN}/padding", _DELETE), "op.op.ops[1].padding"),
    ("output names not a list", _set(f"{DNN}/outputNames", "probabilities"), "outputNames"),
    ("dnn model discriminator", _set(f"{DNN}/model/dnn_model", "OpenCVDNN"), "model.dnn_model"),
    ("scale missing (Gson leaves 0.0)", _set(f"{DNN}/model/scale", _DELETE), "model.scale"),
    ("scale zero", _set(f"{DNN}/model/scale", 0.0), "model.scale"),
    ("relative model path", _set(f"{DNN}/model/pathModel", "model.onnx"), "model.pathModel"),
    ("windows path not a URI", _set(f"{DNN}/model/pathModel", "C:\\models\\model.onnx"), "model.pathModel"),
    ("swapRB", _set(f"{DNN}/model/swapRB", True), "model.swapRB"),
    ("model type", _set(f"{DNN}/model/modelType", "SEGMENTER"), "model.modelType"),
    ("misspelt OpenCVDnn field", _set(f"{DNN}/model/modelPath", "file:/x.onnx"), "model.modelPath"),
]


@pytest.mark.parametrize("what, mutate, field", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_broken_field_is_caught(valid: dict, what: str, mutate: Callable[[dict], None], field: str) -> None:
    broken = copy.deepcopy(valid)
    mutate(broken)
    with pytest.raises(InvalidPixelClassifierError) as info:
        validate_pixel_classifier(broken)
    assert field in str(info.value), (what, str(info.value))
    assert isinstance(info.value, CamsegError) and "\n" not in str(info.value)


def test_djl_fields_are_checked(model_file: Path) -> None:
    djl = build_pixel_classifier(model_uri=model_file.as_uri(), mpp=0.5, input_px=576, padding_px=32,
                                 classes=CLASSES, dnn="DjlDnnModel")  # fmt: skip
    for mutate, field in ((_set(f"{DNN}/model/uris", []), "model.uris"),
                          (_set(f"{DNN}/model/ndLayout", "NHWC"), "model.ndLayout"),
                          (_set(f"{DNN}/model/engine", _DELETE), "model.engine"),
                          (_set(f"{DNN}/model/pathModel", "file:/x.pt"), "model.pathModel")):  # fmt: skip
        broken = copy.deepcopy(djl)
        mutate(broken)
        with pytest.raises(InvalidPixelClassifierError, match=field.replace(".", r"\.")):
            validate_pixel_classifier(broken)


def test_missing_model_file_is_caught_only_when_asked(valid: dict, tmp_path: Path) -> None:
    set_model_uri(valid, (tmp_path / "gone.onnx").as_uri())
    validate_pixel_classifier(valid)  # structure is fine
    with pytest.raises(InvalidPixelClassifierError, match="does not exist"):
        validate_pixel_classifier(valid, check_files=True)
