"""Stain profiles of synthetic slides: how another lab's or scanner's H&E differs from the default.

The renderer (:mod:`qupath_camseg.synthetic.render`) turns haematoxylin and eosin amounts into RGB
with the Beer–Lambert law, ``rgb = light · exp(-(c_H · h + c_E · e + 0.03))``. A
:class:`StainShift` changes that law: ``h_scale``/``e_scale`` multiply the stain amounts (a
stronger or paler staining), ``h_od``/``e_od`` replace the stain colour vectors (another
haematoxylin or eosin, another scanner's colour response) and ``light`` tints the transmitted
light, glass included (a scanner's white balance). ``None`` (the default) renders the default
profile, bit for bit as before.

Named profiles (``qcamseg synth --stain-shift NAME``): ``strong-h`` (haematoxylin × 1.5),
``pale-e`` (eosin × 0.5), ``scanner`` (a purpler haematoxylin, a more orange eosin, a cooler light)
and ``random`` (each slide its own shift, drawn from the slide's seed: see :meth:`StainShift.random`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_E_OD", "DEFAULT_H_OD", "STAIN_SHIFTS", "StainShift", "stain_shift"]

# Ruifrok & Johnston optical-density vectors (unit length) for haematoxylin and eosin: the default profile.
DEFAULT_H_OD = np.array([0.650, 0.704, 0.286], np.float32) / np.float32(np.linalg.norm([0.650, 0.704, 0.286]))
DEFAULT_E_OD = np.array([0.072, 0.990, 0.105], np.float32) / np.float32(np.linalg.norm([0.072, 0.990, 0.105]))

#: The names ``qcamseg synth --stain-shift`` accepts (``none``: the default profile).
STAIN_SHIFTS = ("none", "strong-h", "pale-e", "scanner", "random")


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(x * x for x in v))
    a, b, c = (x / n for x in v)
    return a, b, c


@dataclass(frozen=True)
class StainShift:
    """A synthetic slide's stain profile relative to the default (see the module docstring).

    ``h_od``/``e_od``: OD vectors (normalised to unit length; ``None``: the default
    Ruifrok–Johnston vectors); ``light``: per-channel factor (0–1] on the transmitted light.
    """

    h_scale: float = 1.0
    e_scale: float = 1.0
    h_od: tuple[float, float, float] | None = None
    e_od: tuple[float, float, float] | None = None
    light: tuple[float, float, float] = (1.0, 1.0, 1.0)
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (self.h_scale > 0 and self.e_scale > 0) or not all(0 < v <= 1 for v in self.light):
            raise ValueError(f"stain shift needs positive scales and light factors in (0, 1], not {self}")
        for attr in ("h_od", "e_od"):
            v = getattr(self, attr)
            if v is not None:
                if len(v) != 3 or min(v) < 0 or max(v) <= 0:
                    raise ValueError(f"{attr} must be 3 non-negative OD values, not {v!r}")
                object.__setattr__(self, attr, _unit(tuple(float(x) for x in v)))  # type: ignore[arg-type]

    @classmethod
    def random(cls, seed: int) -> StainShift:
        """A shift drawn from ``seed``: stain amounts × U(0.7, 1.5) (H) and U(0.5, 1.3) (E), each
        stain vector turned by up to 10° away from its default, light factors U(0.92, 1)."""
        rng = np.random.default_rng([seed, 0x57A1])
        h_scale, e_scale = float(rng.uniform(0.7, 1.5)), float(rng.uniform(0.5, 1.3))
        turned = []
        for v in (DEFAULT_H_OD.astype(np.float64), DEFAULT_E_OD.astype(np.float64)):
            w = np.abs(v + np.tan(math.radians(float(rng.uniform(0, 10)))) * _orthogonal(v, rng))
            turned.append(tuple(float(x) for x in w / np.linalg.norm(w)))
        light = tuple(float(x) for x in rng.uniform(0.92, 1.0, 3))
        return cls(h_scale, e_scale, turned[0], turned[1], light, name=f"random:{seed}")  # type: ignore[arg-type]


def _orthogonal(v: npt.NDArray[np.float64], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A random unit vector orthogonal to unit ``v``."""
    r = rng.standard_normal(3)
    r -= r.dot(v) * v
    return r / np.linalg.norm(r)


_PRESETS = {
    "strong-h": StainShift(h_scale=1.5, name="strong-h"),
    "pale-e": StainShift(e_scale=0.5, name="pale-e"),
    "scanner": StainShift(h_od=(0.54, 0.72, 0.44), e_od=(0.10, 0.88, 0.46), light=(0.95, 0.97, 1.0), name="scanner"),
}


def stain_shift(name: str, seed: int = 0) -> StainShift | None:
    """The profile called ``name`` (one of :data:`STAIN_SHIFTS`; ``random`` draws from ``seed``);
    ``None`` for ``"none"``."""
    if name == "none":
        return None
    if name == "random":
        return StainShift.random(seed)
    if name not in _PRESETS:
        raise ValueError(f"stain shift must be one of {', '.join(STAIN_SHIFTS)}, not {name!r}")
    return _PRESETS[name]
