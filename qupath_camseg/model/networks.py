"""Segmentation networks: a pure-PyTorch U-Net (default) and optional stronger encoders.

Every model built here has the same interface, so inference, export and the QuPath bridge never
need to know which architecture is inside:

* input: **float RGB in 0–255, NCHW** (``(N, 3, H, W)``), H and W divisible by
  :func:`input_multiple` (``2**depth`` for the U-Net, 32 for smp encoders);
* normalisation happens inside the model (``mean``/``std`` buffers, 0–255 scale), so exported
  ONNX/TorchScript graphs take raw pixel values too;
* output: **logits** ``(N, 1 + n_classes, H, W)``; channel 0 is background.

``arch`` dicts are JSON-serialisable and travel in ``model.json`` (see :mod:`qupath_camseg.model.bundle`):

* ``{"name": "unet", "width": 32, "depth": 4, "norm": "batch", "n_classes": 1}`` — the default.
  BatchNorm (folded into the convolutions on export) exports cleanly to ONNX for OpenCV 4.6 (the
  DNN module QuPath uses); ``"group"`` (GroupNorm) suits very small batches (≤ 4) better.
  Upsampling is a 2×2 transposed convolution (ONNX ``ConvTranspose``, supported by OpenCV 4.6).
* ``{"name": "smp", "encoder": "resnet34", "decoder": "Unet", "encoder_weights": "imagenet"}`` —
  any `segmentation-models-pytorch <https://smp.readthedocs.io>`_ model (``pip install
  "qupath-camseg[encoders]"``); ImageNet weights are downloaded on first use.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from qupath_camseg.errors import ModelBundleError

__all__ = [
    "DEFAULT_ARCH",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UNet",
    "build_model",
    "input_multiple",
    "normalize_arch",
    "check_input_size",
]

#: ImageNet statistics on the 0–255 scale (RGB).
IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)

#: The default architecture: a 4-level U-Net, 32 channels at full resolution (≈ 1.9 M parameters).
DEFAULT_ARCH: dict[str, Any] = {"name": "unet", "width": 32, "depth": 4, "norm": "batch", "n_classes": 1}

_NORMS = ("batch", "group")


def normalize_arch(arch: dict[str, Any] | None) -> dict[str, Any]:
    """Return a complete, validated copy of ``arch`` (defaults filled in).

    Raises :class:`ModelBundleError` for unknown names or invalid values.
    """
    arch = copy.deepcopy(dict(arch or {}))
    name = str(arch.get("name", "unet")).lower()
    arch["name"] = name
    n_classes = arch.setdefault("n_classes", 1)
    if not isinstance(n_classes, int) or n_classes < 1:
        raise ModelBundleError(f"arch n_classes must be an integer ≥ 1, not {n_classes!r}")
    if name == "unet":
        for key, default in DEFAULT_ARCH.items():
            arch.setdefault(key, default)
        width, depth, norm = arch["width"], arch["depth"], arch["norm"]
        if not isinstance(width, int) or width < 1:
            raise ModelBundleError(f"U-Net width must be an integer ≥ 1, not {width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 7:
            raise ModelBundleError(f"U-Net depth must be an integer from 1 to 7, not {depth!r}")
        if norm not in _NORMS:
            raise ModelBundleError(f"U-Net norm must be one of {_NORMS}, not {norm!r}")
        if norm == "group" and width % 8:
            raise ModelBundleError(f"U-Net with norm 'group' needs width divisible by 8, not {width}")
    elif name == "smp":
        arch.setdefault("encoder", "resnet34")
        arch.setdefault("decoder", "Unet")
        arch.setdefault("encoder_weights", "imagenet")
    else:
        raise ModelBundleError(f"unknown architecture {name!r}; use 'unet' or 'smp'")
    return arch


def input_multiple(arch: dict[str, Any]) -> int:
    """The number H and W of the model input must be divisible by (pad tiles to a multiple)."""
    arch = normalize_arch(arch)
    if arch["name"] == "unet":
        return 2 ** arch["depth"]
    return int(arch.get("input_multiple", 32))


def check_input_size(height: int, width: int, multiple: int) -> None:
    """Raise ``ValueError`` (smp-style, with the padded shape to use) unless both are divisible."""
    if height % multiple or width % multiple:
        new_h = -(-height // multiple) * multiple
        new_w = -(-width // multiple) * multiple
        raise ValueError(
            f"Wrong input shape height={height}, width={width}. Expected image height and width "
            f"divisible by {multiple}. Consider pad your images to shape ({new_h}, {new_w})."
        )


class _Normalize(nn.Module):
    """``(x - mean) / std`` on the 0–255 scale, with the statistics stored as buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    return nn.BatchNorm2d(channels)


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Classic U-Net (Ronneberger et al. 2015) with same-padding convolutions.

    Channels double at every level: ``width, 2·width, …, 2**depth·width`` at the bottleneck.
    Input ``(N, 3, H, W)`` float RGB 0–255 with H, W divisible by ``2**depth``; output logits
    ``(N, n_classes + 1, H, W)``.
    """

    def __init__(
        self,
        *,
        width: int = 32,
        depth: int = 4,
        norm: str = "batch",
        n_classes: int = 1,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.multiple = 2**depth
        self.normalize = _Normalize(mean, std)
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = _DoubleConv(3, chans[0], norm)
        self.down = nn.ModuleList(_DoubleConv(chans[i], chans[i + 1], norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth)))
        self.dec = nn.ModuleList(_DoubleConv(2 * chans[i], chans[i], norm) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], n_classes + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            check_input_size(int(x.shape[-2]), int(x.shape[-1]), self.multiple)
        x = self.stem(self.normalize(x))
        skips = [x]
        for block in self.down:
            x = block(self.pool(x))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class _SMPWrapper(nn.Module):
    """An smp model behind the package's interface (0–255 RGB in, normalised inside)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], multiple: int) -> None:
        super().__init__()
        self.normalize = _Normalize(mean, std)
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.jit.is_scripting():
            check_input_size(int(x.shape[-2]), int(x.shape[-1]), self.multiple)
        return self.net(self.normalize(x))


def _build_smp(arch: dict[str, Any], *, pretrained: bool) -> nn.Module:
    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:
        raise ModelBundleError(
            f"architecture 'smp' (encoder {arch['encoder']!r}) needs segmentation-models-pytorch; "
            'install it with: pip install "qupath-camseg[encoders]"'
        ) from err
    weights = arch.get("encoder_weights") if pretrained else None
    try:
        net = smp.create_model(
            arch["decoder"],
            encoder_name=arch["encoder"],
            encoder_weights=weights,
            in_channels=3,
            classes=arch["n_classes"] + 1,
        )
    except (KeyError, ValueError) as err:
        raise ModelBundleError(
            f"segmentation-models-pytorch cannot build decoder {arch['decoder']!r} with encoder "
            f"{arch['encoder']!r}: {err}; see https://smp.readthedocs.io for the names"
        ) from err
    except OSError as err:  # URLError, HTTP errors, no network, read-only cache
        raise ModelBundleError(
            f"cannot download the {weights!r} weights of encoder {arch['encoder']!r} ({err}); "
            "connect to the internet once (weights are cached), or set encoder_weights to null "
            "to train from scratch"
        ) from err
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights is None:  # no download wanted: smp >= 0.5 would fetch the statistics from the hub;
        # a loaded bundle restores the trained mean/std buffers from its state dict anyway
        return _SMPWrapper(net, mean, std, int(arch.get("input_multiple", 32)))
    try:
        params = smp.encoders.get_preprocessing_params(arch["encoder"], pretrained=weights)
        if params.get("input_range", [0, 1])[1] == 1 and params.get("mean") and params.get("std"):
            mean = tuple(float(m) * 255 for m in params["mean"])  # type: ignore[assignment]
            std = tuple(float(s) * 255 for s in params["std"])  # type: ignore[assignment]
    except Exception:  # noqa: BLE001 - encoders without published statistics keep ImageNet's
        pass
    return _SMPWrapper(net, mean, std, int(arch.get("input_multiple", 32)))


def build_model(arch: dict[str, Any] | None = None, *, pretrained: bool = True) -> nn.Module:
    """Build the network described by ``arch`` (see the module docstring); ``None`` = default U-Net.

    ``pretrained=False`` skips downloading encoder weights (used when loading a bundle, whose
    weights replace them anyway). The returned module takes float RGB 0–255 ``(N, 3, H, W)`` and
    returns logits ``(N, 1 + n_classes, H, W)``.
    """
    arch = normalize_arch(arch)
    if arch["name"] == "unet":
        return UNet(width=arch["width"], depth=arch["depth"], norm=arch["norm"], n_classes=arch["n_classes"])
    return _build_smp(arch, pretrained=pretrained)
