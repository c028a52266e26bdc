"""The network contract: 0–255 RGB NCHW in, logits (N, 1 + classes, H, W) out, size checks."""

from __future__ import annotations

import pytest
import torch

from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model import (
    DEFAULT_ARCH,
    build_model,
    input_multiple,
    normalize_arch,
)


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("n_classes", [1, 3])
def test_unet_output_shape_and_channels(norm: str, n_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model({"name": "unet", "width": 8, "depth": 3, "norm": norm, "n_classes": n_classes}).eval()
    x = torch.rand(2, 3, 48, 64) * 255
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1 + n_classes, 48, 64)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_normalisation_is_inside_the_model() -> None:
    """The model sees 0–255 input: its first conv gets (x - mean) / std, whose mean is ≈ 0."""
    model = build_model({"width": 8, "depth": 2}).eval()
    seen: list[torch.Tensor] = []
    model.stem[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = torch.empty(1, 3, 32, 32)
    x[:, 0], x[:, 1], x[:, 2] = 0.485 * 255, 0.456 * 255, 0.406 * 255
    with torch.no_grad():
        model(x)
    assert seen[0].abs().max() < 1e-4
    names = dict(model.named_buffers())
    assert "normalize.mean" in names and "normalize.std" in names


def test_size_not_divisible_gives_smp_style_error() -> None:
    model = build_model({"width": 4, "depth": 3})
    with pytest.raises(ValueError, match=r"divisible by 8\. Consider pad your images to shape \(104, 64\)"):
        model(torch.zeros(1, 3, 100, 60))


def test_default_arch_and_multiple() -> None:
    arch = normalize_arch(None)
    assert arch == DEFAULT_ARCH
    assert input_multiple(arch) == 16
    assert input_multiple({"depth": 5}) == 32


@pytest.mark.parametrize(
    "arch, match",
    [
        ({"name": "vgg"}, "unknown architecture"),
        ({"width": 0}, "width"),
        ({"depth": 9}, "depth"),
        ({"norm": "layer"}, "norm"),
        ({"norm": "group", "width": 12}, "divisible by 8"),
        ({"n_classes": 0}, "n_classes"),
    ],
)
def test_bad_arch_is_rejected(arch: dict, match: str) -> None:
    with pytest.raises(ModelBundleError, match=match):
        build_model(arch)


def test_smp_without_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import fails
    with pytest.raises(ModelBundleError, match=r"qupath-camseg\[encoders\]"):
        build_model({"name": "smp", "encoder": "resnet34"})


def test_channels_last_and_backward() -> None:
    torch.manual_seed(0)
    model = build_model({"width": 8, "depth": 2}).to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, 32, 32) * 255).contiguous(memory_format=torch.channels_last)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_has_no_exotic_ops(tmp_path) -> None:
    """The default U-Net exports with ops OpenCV 4.6's DNN module reads (no GroupNorm/Resize)."""
    onnx = pytest.importorskip("onnx")
    model = build_model({"width": 4, "depth": 2}).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), opset_version=11, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= {
        "Sub",
        "Div",
        "Conv",
        "Relu",
        "MaxPool",
        "ConvTranspose",
        "Concat",
        "BatchNormalization",
        "Constant",
        "Identity",
    }, ops
