"""Ground truth of a synthetic Camelyon-style slide: the tissue section and the metastases
(with islands of normal tissue as holes), drawn as level-0 px geometry from ``seed`` alone.

A slide is a lymph-node-like section on white glass: irregular tissue outline, an optional small
detached fragment, and (unless ``tumor=False``) metastases of varied size (one
macro-metastasis, micro-metastases and isolated-tumour-cell clusters < 200 µm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box
from shapely.ops import unary_union

__all__ = ["SyntheticTruth", "make_truth"]


@dataclass(frozen=True)
class SyntheticTruth:
    """Ground truth of a synthetic slide. Geometries in level-0 pixels (x right, y down).

    ``tumor``: metastases (empty MultiPolygon for tumour-free slides), holes are normal-tissue
    islands; ``tissue``: the tissue section(s); ``width``/``height`` in px; ``mpp`` in µm/px.
    """

    tumor: MultiPolygon
    tissue: MultiPolygon
    width: int
    height: int
    mpp: float
    seed: int


def _as_multi(geom: object) -> MultiPolygon:
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    return MultiPolygon(polys)


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, *, rough: float) -> Polygon:
    """An irregular closed outline: an ellipse whose radius carries random low harmonics."""
    theta = np.linspace(0.0, 2.0 * np.pi, 192, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 9):
        r += rng.uniform(0.0, rough) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.55, None)
    rot = rng.uniform(0, np.pi)
    x, y = rx * r * np.cos(theta), ry * r * np.sin(theta)
    xs = cx + x * np.cos(rot) - y * np.sin(rot)
    ys = cy + x * np.sin(rot) + y * np.cos(rot)
    return shapely.make_valid(Polygon(np.column_stack([xs, ys]))).buffer(0)


def _place(rng: np.random.Generator, region: object, radius: float, taken: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """A random centre inside ``region`` shrunk by ``radius`` that keeps clear of ``taken``."""
    inner = region.buffer(-radius)  # type: ignore[attr-defined]
    if inner.is_empty:
        return None
    x0, y0, x1, y1 = inner.bounds
    prepared = shapely.prepared.prep(inner)
    for _ in range(300):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if prepared.contains(Point(x, y)) and all(math.hypot(x - a, y - b) > radius + r + 0.5 * min(radius, r) for a, b, r in taken):
            return x, y
    return None


def make_truth(width: int, height: int, *, seed: int, mpp: float = 0.25, tumor: bool = True) -> SyntheticTruth:
    """Draw the tissue and tumour geometry of a synthetic slide (level-0 px), deterministic by ``seed``.

    Tumours: one macro-metastasis (≈ 25–40 % of the node's diameter), one or two
    micro-metastases, and two isolated-tumour-cell clusters of 60–160 µm; the larger ones carry
    one or two islands of normal tissue (holes). ``tumor=False`` gives a tumour-free slide.
    """
    if width < 256 or height < 256:
        raise ValueError(f"synthetic slides need width and height >= 256 px (got {width}x{height})")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive (got {mpp})")
    rng = np.random.default_rng([int(seed), 0x51DE])
    frame = box(0.02 * width, 0.02 * height, 0.98 * width, 0.98 * height)
    main = _blob(rng, width * rng.uniform(0.47, 0.53), height * rng.uniform(0.47, 0.53),
                 0.40 * width * rng.uniform(0.85, 1.0), 0.40 * height * rng.uniform(0.85, 1.0), rough=0.16)
    parts = [main]
    if rng.uniform() < 0.7:  # a small detached fragment in a corner
        fx, fy = rng.choice([0.12, 0.88]), rng.choice([0.12, 0.88])
        rad = 0.09 * min(width, height)
        parts.append(_blob(rng, fx * width, fy * height, rad * rng.uniform(0.8, 1.2), rad, rough=0.25))
    tissue = unary_union(parts).intersection(frame)
    tumors: list[Polygon] = []
    if tumor:
        node_um = 0.8 * min(width, height) * mpp
        min_um, itc_um = 40.0, (60.0, 160.0)
        diam_um = [max(min_um, node_um * rng.uniform(0.25, 0.40))]
        diam_um += [max(min_um, node_um * rng.uniform(0.07, 0.15)) for _ in range(int(rng.integers(1, 3)))]
        diam_um += [rng.uniform(*itc_um) for _ in range(2)]
        taken: list[tuple[float, float, float]] = []
        for k, d_um in enumerate(diam_um):
            r = 0.5 * d_um / mpp
            centre = _place(rng, main.intersection(frame), r, taken)
            if centre is None:
                continue
            taken.append((centre[0], centre[1], r))
            shape = _blob(rng, centre[0], centre[1], r, r * rng.uniform(0.7, 1.0), rough=0.22 if k < 2 else 0.12)
            if d_um > 150.0:  # exclusion islands of normal tissue inside the tumour
                for _ in range(1 if k else 2):
                    a, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.4) * r
                    hole = _blob(rng, centre[0] + dist * np.cos(a), centre[1] + dist * np.sin(a),
                                 0.15 * r, 0.12 * r, rough=0.1)
                    shape = shape.difference(hole)
            tumors.append(shape)
    tumour_geom = unary_union(tumors).intersection(tissue) if tumors else MultiPolygon()
    return SyntheticTruth(_as_multi(tumour_geom), _as_multi(tissue), int(width), int(height), float(mpp), int(seed))
