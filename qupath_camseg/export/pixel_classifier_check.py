"""Check a QuPath pixel-classifier JSON against what QuPath's Gson type adapters read, before
QuPath sees it: field names, enum constants and discriminators as in QuPath's sources (0.5–0.7;
the JSON's shape is in :mod:`qupath_camseg.export.pixel_classifier`).

:func:`validate_pixel_classifier` raises :class:`InvalidPixelClassifierError` naming the first
field QuPath would reject or misread (e.g. ``metadata.outputType``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from qupath_camseg.errors import InvalidPixelClassifierError
from qupath_camseg.export.pixel_classifier import MICROMETER

__all__ = ["validate_pixel_classifier"]

# Enum constants as Gson writes them (enum names).
_CHANNEL_TYPES = {"DEFAULT", "MULTIPLEXED", "FEATURE", "PROBABILITY", "MULTICLASS_PROBABILITY", "CLASSIFICATION"}
_PIXEL_TYPES = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "FLOAT64"}
_TIME_UNITS = {"NANOSECONDS", "MICROSECONDS", "MILLISECONDS", "SECONDS", "MINUTES", "HOURS", "DAYS"}
_MODEL_TYPES = {"DEFAULT", "DETECTION", "SEGMENTATION", "CLASSIFICATION", "KEYPOINTS",
                "TEXT_RECOGNITION", "TEXT_DETECTION_DB", "TEXT_DETECTION_EAST"}  # fmt: skip
_DNN_MODELS = {"OpenCVDnn", "DefaultDnnModel", "DjlDnnModel"}  # DnnModels + the DJL extension
_DATA_OPS = {"data.op.default", "data.op.channels", "data.op.multiscale", "data.op.caching"}
_METADATA_KEYS = {"inputPadding", "inputResolution", "inputWidth", "inputHeight", "inputNumChannels",
                  "outputType", "outputPixelType", "outputChannels", "classificationLabels"}  # fmt: skip
_OPENCV_DNN_KEYS = {"dnn_model", "name", "modelType", "pathModel", "pathConfig", "framework", "backend",
                    "target", "crop", "swapRB", "size", "mean", "scale", "inputs", "outputs"}  # fmt: skip
_DJL_KEYS = {"dnn_model", "uris", "engine", "ndLayout", "inputs", "outputs", "lazyInitialize"}


def _fail(where: str, problem: str) -> None:
    raise InvalidPixelClassifierError(f"pixel classifier {where}: {problem}")


def _obj(value: Any, where: str, *, required: Sequence[str] = (), allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(where, f"must be a JSON object, not {type(value).__name__}")
    for key in required:
        if key not in value:
            _fail(f"{where}.{key}", "is missing")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            _fail(f"{where}.{unknown[0]}", f"is not a field QuPath reads (expected one of {sorted(allowed)})")
    return value


def _int(value: Any, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"must be an integer ≥ {minimum}, not {value!r}")
    return value


def _enum(value: Any, where: str, allowed: set[str]) -> str:
    if value not in allowed:
        _fail(where, f"must be one of {sorted(allowed)}, not {value!r}")
    return value


def _file_uri(value: Any, where: str, *, check_files: bool) -> Path:
    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme != "file" or not parsed.path.startswith("/"):
        _fail(where, f"must be an absolute file: URI (Java's new File(URI) needs one), not {value!r}")
    path = Path(unquote(parsed.path))  # type: ignore[union-attr]
    if check_files and not path.is_file():
        _fail(where, f"points to {path}, which does not exist; re-export or fix the path")
    return path


def _validate_class(value: Any, where: str) -> None:
    # GsonTools.PathClassTypeAdapter: a string, {name|names, color}, or legacy {colorRGB|parentClass}.
    if isinstance(value, str):
        return
    obj = _obj(value, where)
    if "colorRGB" in obj or "parentClass" in obj:
        return
    if not ("name" in obj or "names" in obj) or "color" not in obj:
        _fail(where, "needs 'name' and 'color' (QuPath cannot parse a class without both)")
    color = obj["color"]
    if not isinstance(color, list) or len(color) not in (0, 1, 3, 4) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in color
    ):
        _fail(f"{where}.color", f"must be [r, g, b] (or [r, g, b, a]) integers, not {color!r}")
    if len(color) in (3, 4) and not all(0 <= v <= 255 for v in color):
        _fail(f"{where}.color", f"values must be 0–255, not {color!r}")


def _validate_metadata(md: Any) -> dict[str, Any]:
    md = _obj(md, "metadata", required=("inputResolution", "inputWidth", "inputHeight", "outputType",
                                        "classificationLabels"), allowed=_METADATA_KEYS)  # fmt: skip
    cal = _obj(md["inputResolution"], "metadata.inputResolution", required=("pixelWidth", "pixelHeight"),
               allowed={"pixelWidth", "pixelHeight", "zSpacing", "timeUnit", "timepoints"})  # fmt: skip
    for key in ("pixelWidth", "pixelHeight"):
        q = _obj(cal[key], f"metadata.inputResolution.{key}", required=("value", "unit"), allowed={"value", "unit"})
        if isinstance(q["value"], bool) or not isinstance(q["value"], (int, float)) or not q["value"] > 0:
            _fail(f"metadata.inputResolution.{key}.value", f"must be a positive number, not {q['value']!r}")
        if q["unit"] != MICROMETER:
            _fail(f"metadata.inputResolution.{key}.unit",
                  f"must be {MICROMETER!r} (U+00B5, QuPath's unit), not {q['unit']!r}")  # fmt: skip
    if "timeUnit" in cal:
        _enum(cal["timeUnit"], "metadata.inputResolution.timeUnit", _TIME_UNITS)
    width = _int(md["inputWidth"], "metadata.inputWidth", minimum=1)
    height = _int(md["inputHeight"], "metadata.inputHeight", minimum=1)
    pad = _int(md.get("inputPadding", 0), "metadata.inputPadding", minimum=0)
    if min(width, height) <= 2 * pad:
        _fail("metadata.inputPadding", f"{pad} leaves no output tile in a {width}×{height} input")
    if "inputNumChannels" in md:
        _int(md["inputNumChannels"], "metadata.inputNumChannels", minimum=1)
    _enum(md["outputType"], "metadata.outputType", _CHANNEL_TYPES)
    if "outputPixelType" in md:
        _enum(md["outputPixelType"], "metadata.outputPixelType", _PIXEL_TYPES)
    if md["outputType"] == "PROBABILITY" and md.get("outputPixelType") not in ("FLOAT32", "FLOAT64"):
        _fail("metadata.outputPixelType", "must be FLOAT32 for PROBABILITY output (QuPath's default is UINT8)")
    if md.get("outputChannels") == [] and md["outputType"] != "CLASSIFICATION":
        _fail("metadata.outputChannels", "an empty list hides the classes of PROBABILITY output; omit it")
    labels = _obj(md["classificationLabels"], "metadata.classificationLabels")
    if not labels:
        _fail("metadata.classificationLabels", "is empty; QuPath needs labels to create objects")
    keys = []
    for key, value in labels.items():
        if not (isinstance(key, str) and key.isdigit()):
            _fail(f"metadata.classificationLabels.{key}", "key must be a channel number (Map<Integer, PathClass>)")
        keys.append(int(key))
        _validate_class(value, f"metadata.classificationLabels.{key}")
    if sorted(keys) != list(range(len(keys))):
        _fail("metadata.classificationLabels", f"keys must be 0…{len(keys) - 1} without gaps, not {sorted(keys)}")
    return md


def _validate_dnn_model(model: Any, where: str, *, check_files: bool) -> None:
    model = _obj(model, where, required=("dnn_model",))
    kind = _enum(model["dnn_model"], f"{where}.dnn_model", _DNN_MODELS)
    if kind == "OpenCVDnn":
        _obj(model, where, required=("pathModel", "scale"), allowed=_OPENCV_DNN_KEYS)
        _file_uri(model["pathModel"], f"{where}.pathModel", check_files=check_files)
        scale = model["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale == 0:
            _fail(f"{where}.scale", f"must be a finite non-zero number (1.0 for raw pixels), not {scale!r}")
        if "modelType" in model:
            _enum(model["modelType"], f"{where}.modelType", _MODEL_TYPES)
        if model.get("swapRB") not in (None, False):
            _fail(f"{where}.swapRB", "must be false: the network expects RGB in QuPath's order")
    elif kind == "DjlDnnModel":
        _obj(model, where, required=("uris", "engine"), allowed=_DJL_KEYS)
        uris = model["uris"]
        if not isinstance(uris, list) or len(uris) != 1:
            _fail(f"{where}.uris", f"must list exactly one model file, not {uris!r}")
        _file_uri(uris[0], f"{where}.uris[0]", check_files=check_files)
        if model.get("ndLayout") not in (None, "NCHW"):
            _fail(f"{where}.ndLayout", f"must be 'NCHW' for a PyTorch model, not {model.get('ndLayout')!r}")


def _validate_op(op: Any, md: dict[str, Any], *, check_files: bool) -> None:
    op = _obj(op, "op", required=("type",))
    _enum(op["type"], "op.type", _DATA_OPS)
    if op["type"] != "data.op.channels":
        _fail("op.type", "must be 'data.op.channels' (RGB channels by index) for a qupath-camseg classifier")
    _obj(op, "op", required=("colorTransforms", "op"), allowed={"type", "colorTransforms", "op"})
    transforms = op["colorTransforms"]
    if not isinstance(transforms, list):
        _fail("op.colorTransforms", "must be a list")
    for i, t in enumerate(transforms):
        # ColorTransforms.ColorTransformTypeAdapter reads 'channel' first, then 'channelName', …
        t = _obj(t, f"op.colorTransforms[{i}]")
        if "channel" in t:
            if _int(t["channel"], f"op.colorTransforms[{i}].channel", minimum=0) != i:
                _fail(f"op.colorTransforms[{i}].channel", f"must be {i} (R, G, B in order), not {t['channel']}")
        elif not any(k in t for k in ("channelName", "combineType", "stains")):
            _fail(f"op.colorTransforms[{i}]", f"is not a ColorTransform QuPath knows: {t!r}")
    if len(transforms) != md.get("inputNumChannels", 3):
        _fail("op.colorTransforms", f"has {len(transforms)} channels but inputNumChannels is {md.get('inputNumChannels', 3)}")
    seq = _obj(op["op"], "op.op", required=("type",))
    if seq["type"] != "op.core.sequential":
        _fail("op.op.type", f"must be 'op.core.sequential', not {seq['type']!r}")
    ops = _obj(seq, "op.op", required=("ops",), allowed={"type", "ops"})["ops"]
    if not isinstance(ops, list) or len(ops) != 2:
        _fail("op.op.ops", "must be [op.core.convert, op.ml.opencv-dnn]")
    convert = _obj(ops[0], "op.op.ops[0]", required=("type", "pixelType"), allowed={"type", "pixelType"})
    if convert["type"] != "op.core.convert":
        _fail("op.op.ops[0].type", f"must be 'op.core.convert', not {convert['type']!r}")
    if _enum(convert["pixelType"], "op.op.ops[0].pixelType", _PIXEL_TYPES) != "FLOAT32":
        _fail("op.op.ops[0].pixelType", "must be FLOAT32 (the network takes float input)")
    where = "op.op.ops[1]"
    dnn = _obj(ops[1], where, required=("type", "model", "inputWidth", "inputHeight", "padding"),
               allowed={"type", "model", "inputWidth", "inputHeight", "outputNames", "padding"})  # fmt: skip
    if dnn["type"] != "op.ml.opencv-dnn":
        _fail(f"{where}.type", f"must be 'op.ml.opencv-dnn', not {dnn['type']!r}")
    for key in ("inputWidth", "inputHeight"):
        if _int(dnn[key], f"{where}.{key}", minimum=1) != md[key]:
            _fail(f"{where}.{key}", f"{dnn[key]} differs from metadata.{key} {md[key]}; QuPath would re-tile")
    names = dnn.get("outputNames", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        _fail(f"{where}.outputNames", f"must be a list of layer names, not {names!r}")
    pad = _obj(dnn["padding"], f"{where}.padding", required=("x1", "x2", "y1", "y2"), allowed={"x1", "x2", "y1", "y2"})
    for key in ("x1", "x2", "y1", "y2"):
        if _int(pad[key], f"{where}.padding.{key}", minimum=0) != md.get("inputPadding", 0):
            _fail(f"{where}.padding.{key}", f"{pad[key]} differs from metadata.inputPadding {md.get('inputPadding', 0)}")
    _validate_dnn_model(dnn["model"], f"{where}.model", check_files=check_files)


def validate_pixel_classifier(data: Any, *, check_files: bool = False) -> None:
    """Check a pixel-classifier JSON (dict) against QuPath's type adapters; raise on the first problem.

    Raises :class:`InvalidPixelClassifierError` naming the field (e.g. ``metadata.outputType``).
    ``check_files`` also requires the model file the JSON points to to exist.
    """
    top = _obj(data, "JSON", required=("pixel_classifier_type", "metadata", "op"),
               allowed={"pixel_classifier_type", "metadata", "op"})  # fmt: skip
    if top["pixel_classifier_type"] != "OpenCVPixelClassifier":
        _fail("pixel_classifier_type", f"must be 'OpenCVPixelClassifier', not {top['pixel_classifier_type']!r}")
    md = _validate_metadata(top["metadata"])
    _validate_op(top["op"], md, check_files=check_files)
