"""Training-time augmentation of H&E tiles, split so that a GPU never waits for it.

* **Geometric** (in the DataLoader workers, numpy, exact): the 8 dihedral transforms (90°
  rotations × flips), applied to image and label alike.
* **Photometric** (on the training device, batched torch): H&E stain jitter in optical-density
  space (Tellez et al. 2018, "HED jitter"), brightness/contrast, and a slight Gaussian blur. The
  workers only *draw* each tile's parameters (:func:`draw_params`, a float32 vector of
  :data:`N_PARAMS`), so results stay a pure function of ``(seed, epoch, index)``;
  :func:`photometric` applies a whole batch at once.

The stain jitter is the linear-algebra form of ``skimage.color.rgb2hed`` → scale/shift →
``hed2rgb``: with ``OD = -ln((rgb + 1) / 256)`` and the Ruifrok–Johnston stain matrix ``M``
(``skimage.color.rgb_from_hed``), jittered ``OD' = OD · M⁻¹ · diag(α) · M + β · M``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed

__all__ = ["AugmentConfig", "N_PARAMS", "IDENTITY_PARAMS", "augment_tile", "dihedral", "draw_params", "photometric"]

_HED_FROM_RGB = torch.tensor(np.asarray(hed_from_rgb), dtype=torch.float32)
_RGB_FROM_HED = torch.tensor(np.asarray(rgb_from_hed), dtype=torch.float32)

#: Per-tile photometric parameters: α_H, α_E, α_D, β_H, β_E, β_D, contrast, brightness, blur σ.
N_PARAMS = 9
IDENTITY_PARAMS = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0], np.float32)
_BLUR_RADIUS = 2  # px; covers σ ≤ 1 px


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (0 disables one).

    ``hed_alpha``: stain amount scaled by ``U(1 - a, 1 + a)`` per stain; ``hed_beta``: stain OD
    shifted by ``U(-b, b)``; ``brightness`` in 0–255 units; ``contrast`` relative; ``blur_p`` the
    probability of a Gaussian blur with σ in ``blur_sigma_px`` (pixels at the training mpp, ≤ 1).
    """

    dihedral: bool = True
    hed_alpha: float = 0.05
    hed_beta: float = 0.02
    brightness: float = 12.0
    contrast: float = 0.1
    blur_p: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.3, 1.0)


def dihedral(
    rgb: npt.NDArray[np.uint8], label: npt.NDArray[np.uint8], k: int, flip: bool, *, copy: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Rotate both ``(H, W, 3)`` and ``(H, W)`` arrays by ``k`` × 90° and optionally flip left-right.

    ``copy=False`` returns strided views (no pixel is moved; negative strides possible), for a
    caller that copies once anyway (e.g. into ``(3, H, W)`` order).
    """
    rgb, label = np.rot90(rgb, k, axes=(0, 1)), np.rot90(label, k, axes=(0, 1))
    if flip:
        rgb, label = rgb[:, ::-1], label[:, ::-1]
    return (np.ascontiguousarray(rgb), np.ascontiguousarray(label)) if copy else (rgb, label)


def draw_params(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> npt.NDArray[np.float32]:
    """Draw one tile's photometric parameters (float32 ``(N_PARAMS,)``, see :data:`N_PARAMS`)."""
    alpha = rng.uniform(1 - config.hed_alpha, 1 + config.hed_alpha, 3)
    beta = rng.uniform(-config.hed_beta, config.hed_beta, 3)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness)
    blur = rng.random() < config.blur_p
    sigma = rng.uniform(*config.blur_sigma_px)
    return np.array([*alpha, *beta, contrast, brightness, sigma if blur else 0.0], np.float32)


def augment_tile(
    rgb: npt.NDArray[np.uint8],
    label: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
    *,
    copy: bool = True,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Worker side: a random dihedral transform of ``(H, W, 3)`` + ``(H, W)`` and the tile's
    photometric parameters, all drawn from ``rng`` (same state, same result). ``copy=False``:
    the arrays come back as strided views (see :func:`dihedral`)."""
    if config.dihedral:
        rgb, label = dihedral(rgb, label, int(rng.integers(4)), bool(rng.integers(2)), copy=copy)
    return rgb, label, draw_params(rng, config)


def _gaussian_kernels(sigma: torch.Tensor) -> torch.Tensor:
    """``(N,)`` σ in px → ``(N, 2r+1)`` normalised 1-D kernels (σ = 0: identity)."""
    t = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, device=sigma.device, dtype=sigma.dtype)
    safe = sigma.clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / safe) ** 2)
    k = k / k.sum(1, keepdim=True)
    delta = (t == 0).to(sigma.dtype)[None].expand_as(k)
    return torch.where(sigma[:, None] > 0, k, delta)


def photometric(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply per-tile stain jitter, contrast/brightness and blur to a batch, on its device.

    ``x``: float ``(N, 3, H, W)`` RGB 0–255; ``params``: ``(N, N_PARAMS)``. Returns float
    ``(N, 3, H, W)`` clipped to 0–255. Identity parameters return ``x`` (up to float rounding).
    """
    p = params.to(device=x.device, dtype=torch.float32)
    x = x.float()
    n, c, h, w = x.shape
    hed_from, rgb_from = _HED_FROM_RGB.to(x.device), _RGB_FROM_HED.to(x.device)
    mix = hed_from @ torch.diag_embed(p[:, 0:3]) @ rgb_from  # (N, 3, 3)
    od = -torch.log((x + 1.0) / 256.0)
    od = torch.einsum("nchw,ncd->ndhw", od, mix) + (p[:, 3:6] @ rgb_from)[:, :, None, None]
    y = torch.exp(-od) * 256.0 - 1.0
    y = (y - 128.0) * p[:, 6, None, None, None] + 128.0 + p[:, 7, None, None, None]
    sigma = p[:, 8]
    if bool((sigma > 0).any()):
        k = _gaussian_kernels(sigma).repeat_interleave(c, dim=0)  # (N·3, 2r+1)
        r = _BLUR_RADIUS
        flat = F.pad(y.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
        flat = F.conv2d(flat, k[:, None, None, :], groups=n * c)
        flat = F.conv2d(flat, k[:, None, :, None], groups=n * c)
        y = flat.reshape(n, c, h, w)
    return y.clamp_(0.0, 255.0)
