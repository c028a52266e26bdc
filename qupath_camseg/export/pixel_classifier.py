"""QuPath pixel-classifier JSON: build it, point it at a model file, and emulate how QuPath tiles
it (the check against QuPath's type adapters is :mod:`qupath_camseg.export.pixel_classifier_check`).

Everything here follows QuPath's own sources (0.5–0.7; see the README section "Run your model
inside QuPath" for the list): the JSON is what ``PixelClassifiers.readClassifier`` parses with
Gson into an ``OpenCVPixelClassifier``::

    {"pixel_classifier_type": "OpenCVPixelClassifier",
     "metadata": PixelClassifierMetadata,      # resolution, tile size, padding, output, classes
     "op": {"type": "data.op.channels",        # ImageOps.ChannelImageDataOp: RGB by channel index
            "colorTransforms": [{"channel": 0}, {"channel": 1}, {"channel": 2}],
            "op": {"type": "op.core.sequential", "ops": [
                {"type": "op.core.convert", "pixelType": "FLOAT32"},
                {"type": "op.ml.opencv-dnn", "model": DnnModel, "inputWidth": W, "inputHeight": H,
                 "outputNames": [], "padding": {"x1": p, "x2": p, "y1": p, "y2": p}}]}}}

How QuPath runs it (``PixelClassificationImageServer``, ``ServerTools.getPaddedRequest``,
``ImageOps.ML.DnnOp``, ``OpenCVTools.applyTiled``): output tiles are ``inputWidth − 2·inputPadding``
px at the classifier resolution; each is read with ``padding`` px of context on every side (edge
pixels replicated where the context leaves the image); a padded tile of exactly
``inputWidth × inputHeight`` goes through the network at once, a smaller one (the last column/row)
is first padded to that size with ``BORDER_REFLECT``, centred; the padding is stripped from the
output. For ``PROBABILITY`` output, objects come from the argmax over channels and classes named
like ``Ignore*`` (``PathClassTools.isIgnoredClass``) produce no objects: we name channel 0
(background) ``Ignore*`` for that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import numpy.typing as npt

__all__ = [
    "BACKGROUND_CLASS",
    "BACKGROUND_COLOR",
    "MICROMETER",
    "build_pixel_classifier",
    "model_path_from_classifier",
    "qupath_tiled_predict",
    "set_model_uri",
]

#: QuPath's micrometre unit (``PixelCalibration.MICROMETER``): MICRO SIGN U+00B5, not Greek mu.
MICROMETER = "\u00b5m"
#: ``PathClass.StandardPathClasses.IGNORE``: QuPath creates no objects for it.
BACKGROUND_CLASS = "Ignore*"
BACKGROUND_COLOR = (180, 180, 180)


def _calibration(mpp: float) -> dict[str, Any]:
    """A ``PixelCalibration`` as QuPath's Gson writes it (all fields: Gson skips initialisers)."""
    return {
        "pixelWidth": {"value": float(mpp), "unit": MICROMETER},
        "pixelHeight": {"value": float(mpp), "unit": MICROMETER},
        "zSpacing": {"value": 1.0, "unit": "z-slice"},
        "timeUnit": "SECONDS",
        "timepoints": [],
    }


def build_pixel_classifier(
    *,
    model_uri: str,
    mpp: float,
    input_px: int,
    padding_px: int,
    classes: Sequence[Mapping[str, Any]],
    dnn: str = "OpenCVDnn",
    name: str = "qupath-camseg",
) -> dict[str, Any]:
    """The pixel-classifier JSON (a dict) for a network exported by :mod:`qupath_camseg.export.onnx`.

    ``model_uri``: absolute ``file:`` URI of ``model.onnx`` (``OpenCVDnn``) or ``model.pt``
    (``DjlDnnModel``); ``mpp``: classifier resolution (µm/px); ``input_px``: network input size
    (= QuPath tile + 2·padding); ``classes``: foreground ``[{name, color: [r, g, b]}]`` in channel
    order 1…n (channel 0 becomes ``Ignore*``).
    """
    model = _dnn_model_json(dnn, model_uri, name)
    labels = {"0": {"name": BACKGROUND_CLASS, "color": list(BACKGROUND_COLOR)}}
    for i, c in enumerate(classes, start=1):
        labels[str(i)] = {"name": str(c["name"]), "color": [int(v) for v in c["color"]]}
    pad = int(padding_px)
    return {
        "pixel_classifier_type": "OpenCVPixelClassifier",
        "metadata": {
            "inputPadding": pad,
            "inputResolution": _calibration(mpp),
            "inputWidth": int(input_px),
            "inputHeight": int(input_px),
            "inputNumChannels": 3,
            "outputType": "PROBABILITY",
            "outputPixelType": "FLOAT32",
            "classificationLabels": labels,
        },
        "op": {
            "type": "data.op.channels",
            "colorTransforms": [{"channel": 0}, {"channel": 1}, {"channel": 2}],
            "op": {
                "type": "op.core.sequential",
                "ops": [
                    {"type": "op.core.convert", "pixelType": "FLOAT32"},
                    {
                        "type": "op.ml.opencv-dnn",
                        "model": model,
                        "inputWidth": int(input_px),
                        "inputHeight": int(input_px),
                        "outputNames": [],
                        "padding": {"x1": pad, "x2": pad, "y1": pad, "y2": pad},
                    },
                ],
            },
        },
    }


def _dnn_model_json(dnn: str, model_uri: str, name: str) -> dict[str, Any]:
    """The ``DnnModel`` of the classifier: ``OpenCVDnn`` (ONNX in QuPath's OpenCV) or
    ``DjlDnnModel`` (TorchScript in the Deep Java Library extension)."""
    if dnn == "OpenCVDnn":
        # Every field that has no initialiser QuPath can rely on is written out: ``scale`` in
        # particular defaults to 0.0 on the deserialised object (only the Builder sets 1.0), and a
        # 0 scale would multiply every input pixel by zero.
        return {
            "dnn_model": "OpenCVDnn",
            "name": name,
            "modelType": "DEFAULT",
            "pathModel": model_uri,
            "framework": "ONNX",
            "crop": False,
            "swapRB": False,
            "scale": 1.0,
        }
    if dnn == "DjlDnnModel":
        return {
            "dnn_model": "DjlDnnModel",
            "uris": [model_uri],
            "engine": "PyTorch",
            "ndLayout": "NCHW",
            "lazyInitialize": True,
        }
    raise ValueError(f"dnn must be 'OpenCVDnn' or 'DjlDnnModel', not {dnn!r}")


def _dnn_model(data: Mapping[str, Any]) -> dict[str, Any]:
    return data["op"]["op"]["ops"][1]["model"]


def model_path_from_classifier(data: Mapping[str, Any]) -> Path:
    """The local path of the model file a (valid) classifier JSON points to."""
    model = _dnn_model(data)
    uri = model["pathModel"] if model["dnn_model"] == "OpenCVDnn" else model["uris"][0]
    return Path(unquote(urlparse(uri).path))


def set_model_uri(data: dict[str, Any], uri: str) -> dict[str, Any]:
    """Point a classifier JSON (in place) at another model file; returns ``data``."""
    model = _dnn_model(data)
    if model["dnn_model"] == "OpenCVDnn":
        model["pathModel"] = uri
    else:
        model["uris"] = [uri]
    return data


# ---------------------------------------------------------------------------------------------
# Emulation of QuPath's tiling (for tests and for checking an export without QuPath).


def qupath_tiled_predict(
    predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    image: npt.NDArray[np.uint8],
    *,
    input_px: int,
    padding_px: int,
) -> npt.NDArray[np.float32]:
    """Run ``predict`` over ``image`` the way QuPath runs the exported classifier.

    ``image``: RGB ``(H, W, 3)`` at the classifier resolution; ``predict`` maps a float32
    ``(1, 3, input_px, input_px)`` batch (RGB 0–255) to probabilities ``(1, C, input_px, input_px)``.
    Returns probabilities ``(C, H, W)`` (argmax over axis 0 gives QuPath's classes).
    """
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image must have at least one pixel, not shape {image.shape}")
    pad = int(padding_px)
    tile = input_px - 2 * pad
    if tile < 1:
        raise ValueError(f"input_px {input_px} leaves no tile with padding {pad}")
    # Context beyond the image: edge pixels replicated (ServerTools.getPaddedRequest).
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge").astype(np.float32)
    out = np.zeros((0, height, width), np.float32)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            h, w = min(tile, height - y0), min(tile, width - x0)
            patch = padded[y0 : y0 + h + 2 * pad, x0 : x0 + w + 2 * pad]
            ph, pw = patch.shape[:2]
            # OpenCVTools.applyTiled: smaller input padded to the network size, centred, BORDER_REFLECT
            top, left = (input_px - ph) // 2, (input_px - pw) // 2
            bottom, right = input_px - ph - top, input_px - pw - left
            if top or bottom or left or right:
                patch = np.pad(patch, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
            probs = np.asarray(predict(np.ascontiguousarray(patch.transpose(2, 0, 1)[None])), np.float32)[0]
            probs = probs[:, top + pad : top + pad + h, left + pad : left + pad + w]
            if out.shape[0] == 0:
                out = np.zeros((probs.shape[0], height, width), np.float32)
            out[:, y0 : y0 + h, x0 : x0 + w] = probs
    return out
