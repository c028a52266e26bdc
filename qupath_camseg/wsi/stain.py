"""H&E stain normalisation (Macenko et al., ISBI 2009), pure numpy: light enough for tile-reader
threads and DataLoader reader processes.

Colours are handled in optical density (OD), ``od = -ln((rgb + 1) / 256)`` per channel (white
255 → 0; the convention of ``skimage.color.rgb2hed`` and of the training stain jitter). The
Beer–Lambert model writes each pixel's OD as ``c_H · h + c_E · e``: two unit *stain vectors*
``h``, ``e`` (OD per unit of stain) and the pixel's stain *concentrations*.

* :func:`estimate_stains` finds the stain vectors of a set of pixels the Macenko way: keep the
  stained pixels (OD ≥ :data:`BETA` in some channel, neither saturated nor grey), project their OD onto the
  plane of the two largest principal directions, and take the directions at the
  :data:`ALPHA_PERCENT` and ``100 - ALPHA_PERCENT`` percentiles of the angle (robust extremes);
  the vector absorbing more red is haematoxylin. The 99th percentile of each stain's
  concentration is its *maximum concentration*. Too few stained pixels (glass) or two vectors
  almost alike (a tile of one stain) give ``None``: there the problem is ill-posed.
* A :class:`StainReference` holds a stain matrix and maximum concentrations; the model's reference
  is fitted on the training slides (:func:`fit_reference`) and stored in its ``model.json``.
* A :class:`StainTransform` maps one slide's stains onto the reference: unmix with the slide's
  vectors, scale each concentration by ``reference max / slide max``, remix with the reference's
  vectors. That is a fixed 3 × 3 matrix in OD space, so normalising a tile costs a table look-up,
  a 3 × 3 product and an ``exp`` per pixel (no per-tile fitting: deterministic, cheap, and a
  slide's tiles keep their relative differences, e.g. dense dark lymphocytes vs paler tumour).
  As in Macenko's method, OD outside the plane of the slide's two stains is dropped.

qupath-camseg estimates the stains once per *slide* (:func:`pick_boxes` + :func:`estimate_stains`
over a sample of its tissue tiles), not per tile: Macenko on a single tile that holds one stain, or
mostly glass, is ill-posed, and per-tile rescaling would erase the intensity differences between
tiles that tell tumour from lymph node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qupath_camseg.errors import StainNormalizationError

__all__ = [
    "ALPHA_PERCENT", "BETA", "METHODS", "SAMPLE_MIN_TISSUE", "SAMPLE_TILES", "StainReference", "StainTransform", "estimate_stains", "fit_reference",
    "od_to_rgb", "pick_boxes", "rgb_to_od",
]

#: Stain-normalisation methods ``qcamseg train --stain-norm`` accepts.
METHODS = ("none", "macenko")
#: OD a pixel needs in at least one channel to count as stained (Macenko's β; glass is ≈ 0.05).
BETA = 0.15
#: Pixels with OD above this in every channel (black ink, folds: rgb ≲ 12) are left out of the fit.
_OD_SATURATED = 3.0
#: Grey pixels, whose OD direction lies within this many degrees of (1, 1, 1) (pen ink, dust, glass
#: edges, shadows: no stain is grey), are left out of the fit.
_GREY_DEG = 10.0
_COS_GREY = math.cos(math.radians(_GREY_DEG))
#: Percentile of the stain angle taken as each stain's direction (Macenko's α, a robust extreme).
ALPHA_PERCENT = 1.0
_MAX_C_PERCENT = 99.0
#: Fewest stained pixels a fit needs (below: ``None``).
MIN_STAINED_PX = 256
#: Stain vectors closer than this (degrees) are one stain, not two (``None``).
_MIN_ANGLE_DEG = 4.0
#: A slide's concentrations are rescaled by at most this factor (either way) onto the reference.
MAX_SCALE = 4.0
_BLOCK_PX = 1 << 14  # pixels normalised at a time (≈ 200 kB of float32 per array)
_OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)


def rgb_to_od(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Optical density ``float32 (..., 3)`` of RGB ``uint8 (..., 3)``: ``-ln((rgb + 1) / 256)``."""
    return _OD_LUT[np.asarray(rgb, dtype=np.uint8)]


def od_to_rgb(od: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """Inverse of :func:`rgb_to_od`, rounded (half up) and clipped to ``uint8``."""
    return _neg_od_to_rgb(-np.asarray(od, np.float32))


def _neg_od_to_rgb(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """``uint8`` of ``256 · exp(x) - 1`` rounded half up, computed in place in ``x`` (float32)."""
    np.exp(x, out=x)
    x *= np.float32(256)
    x -= np.float32(0.5)  # -1, then +0.5 so that truncation rounds
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


@dataclass(frozen=True)
class StainReference:
    """Stain vectors and maximum concentrations of one slide or of a model's training slides.

    ``stain_matrix``: ``((h_R, h_G, h_B), (e_R, e_G, e_B))``, unit OD vectors of haematoxylin and
    eosin; ``max_concentrations``: ``(H, E)``, the 99th percentile of each stain's concentration
    (OD units along its vector). ``pixels``: stained pixels the estimate used.
    """

    stain_matrix: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_concentrations: tuple[float, float]
    method: str = "macenko"
    pixels: int = 0

    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        """The stain matrix as ``float64 (2, 3)`` (rows H, E)."""
        return np.array(self.stain_matrix, np.float64)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored as ``stain`` in ``model.json``)."""
        return {"method": self.method, "stain_matrix": [list(r) for r in self.stain_matrix],
                "max_concentrations": list(self.max_concentrations), "pixels": self.pixels}

    @classmethod
    def from_json(cls, data: Any) -> StainReference:
        """Check and read :meth:`to_json`'s dict; :class:`StainNormalizationError` (one line) if invalid."""
        if not isinstance(data, dict) or data.get("method") != "macenko":
            method = data.get("method") if isinstance(data, dict) else data
            raise StainNormalizationError(f"stain reference method must be 'macenko', not {method!r}")
        m, c = data.get("stain_matrix"), data.get("max_concentrations")
        try:
            matrix = np.array(m, np.float64)
            conc = np.array(c, np.float64)
        except (TypeError, ValueError):
            matrix = conc = np.zeros(0)
        if matrix.shape != (2, 3) or conc.shape != (2,) or not (np.isfinite(matrix).all() and np.isfinite(conc).all()):
            raise StainNormalizationError(
                f"stain reference needs stain_matrix [[h_R, h_G, h_B], [e_R, e_G, e_B]] and max_concentrations "
                f"[H, E] of finite numbers, not {m!r} and {c!r}")
        if (conc <= 0).any() or _angle_deg(matrix[0], matrix[1]) < _MIN_ANGLE_DEG:
            raise StainNormalizationError("stain reference needs positive max_concentrations and two distinct stain vectors")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if np.abs(norms - 1).max() > 1e-9:  # written by hand: make the vectors unit (ours already are)
            matrix = matrix / norms
        pixels = data.get("pixels", 0)
        return cls(_rows(matrix), (float(conc[0]), float(conc[1])), "macenko",
                   int(pixels) if isinstance(pixels, int) and not isinstance(pixels, bool) else 0)


def _rows(matrix: npt.NDArray[np.float64]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    (a, b, c), (d, e, f) = (tuple(float(v) for v in row) for row in matrix)
    return (a, b, c), (d, e, f)


def _angle_deg(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> float:
    cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _stained_od(rgb: npt.NDArray[np.uint8], max_pixels: int) -> npt.NDArray[np.float32]:
    """OD ``(n, 3)`` of the stained, unsaturated pixels of ``rgb`` (any shape ``(..., 3)``), at most
    ``max_pixels`` of them (a regular stride: deterministic)."""
    px = np.asarray(rgb).reshape(-1, 3)
    px = px[::max(1, len(px) // (4 * max(1, max_pixels)))]  # bounds the work on large inputs
    od = rgb_to_od(px)
    keep = (od.max(axis=1) >= BETA) & (od.min(axis=1) <= _OD_SATURATED)
    keep &= od.sum(axis=1) < _COS_GREY * np.sqrt(3.0) * np.linalg.norm(od, axis=1)  # not grey
    od = od[keep]
    step = max(1, math.ceil(len(od) / max(1, max_pixels)))
    return od[::step]


def estimate_stains(rgb: npt.NDArray[np.uint8], *, max_pixels: int = 1 << 18) -> StainReference | None:
    """The stain vectors and maximum concentrations of the pixels ``rgb`` (``uint8 (..., 3)``, e.g. a
    tile or a stack of tiles), or ``None`` when they are ill-posed: fewer than
    :data:`MIN_STAINED_PX` stained pixels (glass) or a single stain. At most ``max_pixels``
    stained pixels are used (a regular subsample)."""
    return _estimate(_stained_od(rgb, max_pixels))


def _estimate(od: npt.NDArray[np.float32]) -> StainReference | None:
    if len(od) < MIN_STAINED_PX:
        return None
    x = od.astype(np.float64)
    _, vecs = np.linalg.eigh(np.cov(x, rowvar=False))
    plane = vecs[:, 1:3]  # the two largest principal directions (ascending eigenvalues)
    proj = x @ plane
    centre = math.atan2(*proj.mean(axis=0)[::-1])  # the stains' cone spans < 180°: no wrap around it
    phi = np.angle(np.exp(1j * (np.arctan2(proj[:, 1], proj[:, 0]) - centre)))
    lo, hi = np.percentile(phi, [ALPHA_PERCENT, 100.0 - ALPHA_PERCENT]) + centre
    vectors = [plane @ np.array([math.cos(a), math.sin(a)]) for a in (lo, hi)]
    vectors = [v / np.linalg.norm(v) * (1.0 if v.sum() >= 0 else -1.0) for v in vectors]
    if _angle_deg(*vectors) < _MIN_ANGLE_DEG:
        return None
    he = np.array(sorted(vectors, key=lambda v: -v[0]))  # haematoxylin absorbs more red
    conc = x @ np.linalg.pinv(he)
    max_c = np.percentile(conc, _MAX_C_PERCENT, axis=0)
    if not (np.isfinite(he).all() and np.isfinite(max_c).all()) or (max_c <= 1e-3).any():
        return None
    return StainReference(_rows(he), (float(max_c[0]), float(max_c[1])), "macenko", int(len(od)))


def fit_reference(tiles: Iterable[npt.NDArray[np.uint8]], *, max_pixels_per_tile: int = 1 << 14,
                  what: str = "the training slides") -> StainReference:
    """The reference stains of ``tiles`` (RGB ``uint8 (h, w, 3)`` each; their stained pixels pooled,
    at most ``max_pixels_per_tile`` from each). Raises :class:`StainNormalizationError` naming
    ``what`` when there is too little stained tissue or only one stain."""
    pooled = [_stained_od(t, max_pixels_per_tile) for t in tiles]
    od = np.concatenate(pooled) if pooled else np.zeros((0, 3), np.float32)
    ref = _estimate(od)
    if ref is None:
        raise StainNormalizationError(
            f"cannot fit a stain reference on {what}: {len(od)} stained pixels in {len(pooled)} tiles "
            f"(need ≥ {MIN_STAINED_PX}, with both haematoxylin and eosin); check that the slides are H&E "
            "with tissue, or train with --stain-norm none")
    return ref


#: Tissue tiles read (at the model's µm/px) to estimate one slide's stains, at training and predict time.
SAMPLE_TILES = 24
#: Tissue share a tile needs to be among them (training's negative tiles need the same).
SAMPLE_MIN_TISSUE = 0.25


def pick_boxes(boxes: Sequence[Any], *, max_tiles: int = SAMPLE_TILES) -> list[Any]:
    """At most ``max_tiles`` of ``boxes``, evenly spread over the list (deterministic)."""
    items = list(boxes)
    if len(items) <= max_tiles:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, max_tiles).round().astype(int)]


class StainTransform:
    """Maps RGB tiles of one slide onto a reference's stains: ``od' = od · matrix`` (``(3, 3)``).

    Picklable and stateless (safe in threads and processes); the same tile gives the same bytes.
    :meth:`identity` leaves tiles untouched (the fallback where a slide's stains cannot be found).
    """

    def __init__(self, matrix: npt.ArrayLike | None = None) -> None:
        self.matrix: npt.NDArray[np.float32] | None = None if matrix is None else np.asarray(matrix, np.float32)
        if self.matrix is not None and (self.matrix.shape != (3, 3) or not np.isfinite(self.matrix).all()):
            raise ValueError(f"a stain transform is a finite (3, 3) OD matrix, not {self.matrix!r}")
        self._neg = None if self.matrix is None else -self.matrix

    @classmethod
    def identity(cls) -> StainTransform:
        """The transform that returns tiles unchanged."""
        return cls(None)

    @classmethod
    def between(cls, source: StainReference, target: StainReference) -> StainTransform:
        """Unmix with ``source``'s stains, scale the concentrations by ``target / source`` maximum
        (each factor clipped to ``[1 / MAX_SCALE, MAX_SCALE]``), remix with ``target``'s stains."""
        scale = np.clip(np.array(target.max_concentrations) / np.array(source.max_concentrations),
                        1.0 / MAX_SCALE, MAX_SCALE)
        return cls(np.linalg.pinv(source.matrix) @ np.diag(scale) @ target.matrix)

    @property
    def is_identity(self) -> bool:
        """Whether tiles pass unchanged."""
        return self.matrix is None

    def __call__(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The normalised tile: ``uint8 (h, w, 3)`` in, a new ``uint8 (h, w, 3)`` out."""
        if self._neg is None:
            return rgb
        rgb = np.asarray(rgb, np.uint8)
        flat = rgb.reshape(-1, 3)
        out = np.empty_like(flat)
        m = self._neg
        for i in range(0, len(flat), _BLOCK_PX):  # blocks that stay in the CPU cache
            od = rgb_to_od(flat[i:i + _BLOCK_PX])
            x = np.empty_like(od)
            for c in range(3):  # element-wise, not a BLAS product: BLAS threads would fight the reader threads
                x[:, c] = od[:, 0] * m[0, c]
                x[:, c] += od[:, 1] * m[1, c]
                x[:, c] += od[:, 2] * m[2, c]
            out[i:i + _BLOCK_PX] = _neg_od_to_rgb(x)
        return out.reshape(rgb.shape)

    def to_json(self) -> list[list[float]] | None:
        """The matrix as nested lists (``None``: identity), for reports and cache keys."""
        return None if self.matrix is None else [[round(float(v), 6) for v in row] for row in self.matrix]

    def __repr__(self) -> str:
        return "StainTransform(identity)" if self.matrix is None else f"StainTransform({self.to_json()})"
