"""Turn a trained network into files QuPath can run without Python: ONNX (OpenCV DNN) and TorchScript.

The exported graph is self-contained: it takes **float RGB 0–255, NCHW, fixed size
``(1, 3, input_px, input_px)``** (exactly what QuPath's ``op.ml.opencv-dnn`` feeds through
``blobFromImage``: no scaling, no channel swap), normalises inside (the model's mean/std buffers)
and ends in a softmax over the class axis, so its output ``(1, 1 + n_classes, input_px, input_px)``
is per-pixel probabilities with channel 0 = background. A calibrated model folder
(:mod:`qupath_camseg.model.calibration`) exports its calibration too (a ``Mul`` and an ``Add``
before the softmax), so QuPath sees the probabilities ``qcamseg predict`` writes.

OpenCV's ONNX importer (4.6 in QuPath 0.5, 4.10 in 0.6, 4.11 in 0.7) is the weakest link, so the
export uses the TorchScript-based ``torch.onnx`` exporter at opset 11, a fixed input size, constant
folding (BatchNorm folds into the convolutions) and :func:`check_onnx_graph` refuses graphs with
dynamic dimensions or standalone ``Pad`` nodes (padding inside ``Conv`` is an attribute and fine).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from qupath_camseg._io import atomic_write_bytes
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model import Calibration

__all__ = [
    "INPUT_NAME",
    "ONNX_OPSET",
    "OPENCV_SAFE_OPS",
    "OUTPUT_NAME",
    "ProbabilityModel",
    "check_onnx_graph",
    "export_onnx",
    "export_torchscript",
]

#: Opset 11: imported by OpenCV 4.6 – 4.11 (checked by the tests against all three builds).
ONNX_OPSET = 11
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"

#: ONNX ops the exported U-Net uses, all imported by OpenCV 4.6+ (verified in the tests); others
#: are reported by :func:`check_onnx_graph` as "not verified" rather than refused.
OPENCV_SAFE_OPS = frozenset(
    {
        "Add", "BatchNormalization", "Concat", "Constant", "Conv", "ConvTranspose", "Div",
        "Identity", "MaxPool", "Mul", "Relu", "Softmax", "Sub", "Transpose",
    }
)  # fmt: skip
_FORBIDDEN_OPS = frozenset({"Pad", "Loop", "If", "Scan", "NonZero", "Shape", "ConstantOfShape"})


class ProbabilityModel(nn.Module):
    """Wrap a logits model (float RGB 0–255 NCHW in) so it returns softmax probabilities, with the
    model folder's ``calibration`` applied to the logits first (``None``: the raw softmax)."""

    def __init__(self, model: nn.Module, calibration: Calibration | None = None) -> None:
        super().__init__()
        self.model = model
        self.calibrated = calibration is not None
        if calibration is not None:
            self.register_buffer("scale", torch.tensor(1.0 / calibration.temperature, dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(calibration.logit_bias, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.calibrated:
            logits = logits * self.scale + self.bias
        return torch.softmax(logits, dim=1)


def _example(input_px: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.rand((1, 3, input_px, input_px), generator=gen) * 255.0


def export_onnx(model: nn.Module, path: str | Path, *, input_px: int, opset: int = ONNX_OPSET,
                calibration: Calibration | None = None) -> Path:
    """Write ``model`` (logits model, eval mode is forced) as ONNX with softmax at ``path``
    (``calibration`` applied to the logits first).

    The input is fixed to ``(1, 3, input_px, input_px)``; the graph is checked with
    :func:`check_onnx_graph` and :class:`ModelBundleError` is raised (nothing written) when it
    contains anything OpenCV's DNN module cannot run.
    """
    import onnx

    wrapper = ProbabilityModel(model, calibration).eval().to("cpu")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (_example(input_px),),
            buf,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            do_constant_folding=True,
            dynamic_axes=None,
            dynamo=False,
        )
    graph = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(graph)
    problems = [p for p in check_onnx_graph(graph, input_px=input_px) if not p.startswith("note:")]
    if problems:
        raise ModelBundleError(
            f"cannot export {path} for QuPath's OpenCV: {'; '.join(problems)}; use the default U-Net "
            "architecture (arch name 'unet') or export with --format torchscript for the DJL extension"
        )
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def check_onnx_graph(graph: object, *, input_px: int | None = None) -> list[str]:
    """List what would stop QuPath's OpenCV (4.6–4.11) from running this ONNX graph.

    ``graph`` is an ``onnx.ModelProto`` or a path. Problems: dynamic or unexpected input/output
    shapes, standalone ``Pad`` (and control-flow/shape) nodes, opset > 13. Ops outside
    :data:`OPENCV_SAFE_OPS` come back as ``"note: ..."`` lines (not verified, not refused).
    """
    import onnx

    model = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph))
    problems: list[str] = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx", 0) > 13:
        problems.append(f"opset {opsets['ai.onnx']} is newer than OpenCV 4.6 reliably imports (use ≤ 13)")
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        initializers = {i.name for i in model.graph.initializer}
        for value in values:
            if value.name in initializers:
                continue
            dims = value.type.tensor_type.shape.dim
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            if any(not isinstance(s, int) or s <= 0 for s in shape):
                problems.append(f"{kind} {value.name!r} has dynamic shape {shape}")
            elif input_px is not None and (len(shape) != 4 or shape[0] != 1 or shape[2:] != [input_px, input_px]):
                problems.append(f"{kind} {value.name!r} has shape {shape}, expected (1, C, {input_px}, {input_px})")
    op_types = {n.op_type for n in model.graph.node}
    for op in sorted(op_types & _FORBIDDEN_OPS):
        problems.append(f"graph contains {op} nodes")
    unverified = sorted(op_types - OPENCV_SAFE_OPS - _FORBIDDEN_OPS)
    if unverified:
        problems.append(f"note: ops not verified with OpenCV 4.6: {', '.join(unverified)}")
    return problems


def export_torchscript(model: nn.Module, path: str | Path, *, input_px: int,
                       calibration: Calibration | None = None) -> Path:
    """Write a traced TorchScript module (same contract as the ONNX graph) for the DJL extension."""
    wrapper = ProbabilityModel(model, calibration).eval().to("cpu")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, (_example(input_px),), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out
