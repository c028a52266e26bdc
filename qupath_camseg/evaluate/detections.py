"""Lesion detections ``(prob, x, y)`` from a probability map, and the Camelyon16 detection CSV.

A detection is a point in level-0 pixels with a confidence, what the Camelyon16 lesion-level
evaluation scores (:mod:`qupath_camseg.evaluate.lesion_froc`). Two ways to get them from a probability map,
both used by Camelyon16 entries:

* ``method="nms"`` (default; as NCRF and others did): local maxima of the map above
  ``threshold``, then greedy non-maximum suppression — keep the most probable, drop every other
  maximum closer than ``nms_radius_um``, repeat;
* ``method="components"``: one detection per 8-connected region of ``prob >= threshold``, at the
  region's most probable pixel, with that probability.

The challenge CSV has one detection per line, ``confidence,x,y`` (x, y integer level-0 pixels);
the 2016 reader parses every line (no header), the later test-set reader wants a ``p,x,y``
header. :func:`write_detections_csv` writes no header by default; :func:`read_detections_csv`
reads either.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import cKDTree

from qupath_camseg._io import atomic_write_text
from qupath_camseg.errors import InvalidAnnotationError

__all__ = [
    "Detection",
    "detect_lesions",
    "read_detections_csv",
    "slide_score",
    "write_detections_csv",
]


class Detection(NamedTuple):
    """One lesion detection: ``prob`` in [0, 1] and a level-0 point ``(x_px, y_px)``.

    A plain tuple ``(prob, x_px, y_px)``, the order of the challenge CSV, so it can be passed
    straight to :func:`qupath_camseg.evaluate.lesion_froc.match_detections`.
    """

    prob: float
    x_px: float
    y_px: float


def _as_probability(prob: npt.ArrayLike) -> npt.NDArray[np.float32]:
    a = np.asarray(prob)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"a probability map must be (H, W), not shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32, copy=False)
    return np.nan_to_num(a, nan=0.0)


def detect_lesions(
    prob: npt.ArrayLike,
    *,
    downsample: float,
    mpp: float,
    origin_px: tuple[float, float] = (0.0, 0.0),
    threshold: float = 0.5,
    nms_radius_um: float = 200.0,
    method: str = "nms",
) -> list[Detection]:
    """Detections from a tumour probability map, most probable first.

    ``prob``: ``(H, W)`` float in [0, 1], or uint8 0–255 (divided by 255); ``downsample``:
    level-0 px per map pixel; ``origin_px``: level-0 position of the map's top-left corner;
    ``mpp``: level-0 µm/px (to turn ``nms_radius_um`` into pixels). A map pixel ``(r, c)`` maps
    to its centre, ``x = origin_x + (c + 0.5)·downsample``. ``nms_radius_um`` (default 200 µm,
    about NCRF's 12 px at level 6) only matters for ``method="nms"``.
    """
    if method not in ("nms", "components"):
        raise ValueError(f"method must be 'nms' or 'components', not {method!r}")
    if not (downsample > 0 and mpp > 0):
        raise ValueError("downsample and mpp must be positive")
    p = _as_probability(prob)
    above = p >= threshold
    if not above.any():
        return []
    if method == "components":
        labels, _ = ndimage.label(above, structure=np.ones((3, 3), bool))
        peaks = _first_max_per_label(p, labels)
        values = p[peaks[:, 0], peaks[:, 1]]
    else:
        radius_map = nms_radius_um / (mpp * downsample)
        size = 2 * max(1, math.floor(radius_map)) + 1
        local_max = (p == ndimage.maximum_filter(p, size=size, mode="constant", cval=-1.0)) & above
        # a flat top (several equal maxima side by side) counts once: one pixel per plateau
        labels, _ = ndimage.label(local_max, structure=np.ones((3, 3), bool))
        peaks = _first_max_per_label(p, labels)
        values = p[peaks[:, 0], peaks[:, 1]]
        order = np.lexsort((peaks[:, 1], peaks[:, 0], -values))
        peaks, values = peaks[order], values[order]
        keep = _greedy_nms(peaks.astype(np.float64), radius_map)
        peaks, values = peaks[keep], values[keep]
    order = np.lexsort((peaks[:, 1], peaks[:, 0], -values))
    ox, oy = (float(v) for v in origin_px)
    return [
        Detection(float(values[i]), ox + (peaks[i, 1] + 0.5) * downsample, oy + (peaks[i, 0] + 0.5) * downsample)
        for i in order
    ]


def _first_max_per_label(p: npt.NDArray[np.float32], labels: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """``(n, 2)`` row/col of each label's most probable pixel (ties: first in row-major order)."""
    flat = np.flatnonzero(labels)
    if flat.size == 0:
        return np.zeros((0, 2), np.int64)
    lab = labels.ravel()[flat]
    order = np.lexsort((flat, -p.ravel()[flat], lab))
    first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
    return np.stack(np.unravel_index(flat[first], p.shape), axis=1).astype(np.int64)


def _greedy_nms(points_rc: npt.NDArray[np.float64], radius: float) -> list[int]:
    """Indices of points kept by greedy NMS; ``points_rc`` sorted best first."""
    if len(points_rc) == 0:
        return []
    tree = cKDTree(points_rc)
    suppressed = np.zeros(len(points_rc), bool)
    keep: list[int] = []
    for i in range(len(points_rc)):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in tree.query_ball_point(points_rc[i], r=radius):
            if j != i:
                suppressed[j] = True
    return keep


def slide_score(prob: npt.ArrayLike) -> float:
    """A slide-level tumour score: the maximum probability of the map (0.0 for an empty map)."""
    p = _as_probability(prob)
    return float(p.max()) if p.size else 0.0


def write_detections_csv(
    path: str | os.PathLike[str], detections: Iterable[Sequence[float]], *, header: bool = False
) -> None:
    """Write the challenge CSV: ``prob,x,y`` per line, x/y rounded to integer level-0 px.

    ``header=True`` adds a ``p,x,y`` first line (what the later test-set script reads with
    pandas; the 2016 script cannot read a header). Atomic write.
    """
    buf = io.StringIO()
    if header:
        buf.write("p,x,y\n")
    for d in detections:
        prob, x, y = float(d[0]), float(d[1]), float(d[2])
        buf.write(f"{prob:.6g},{int(math.floor(x + 0.5))},{int(math.floor(y + 0.5))}\n")
    atomic_write_text(path, buf.getvalue())


def read_detections_csv(path: str | os.PathLike[str]) -> list[Detection]:
    """Read a challenge CSV (``prob,x,y`` per line; an optional header line is skipped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise InvalidAnnotationError(f"cannot read detections {p}: {err.strerror}; check the path") from err
    out: list[Detection] = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not f.strip() for f in row):
            continue
        try:
            if len(row) < 3:
                raise ValueError
            out.append(Detection(float(row[0]), float(row[1]), float(row[2])))
        except ValueError as err:
            if lineno == 1 and not out:
                continue  # a header such as "p,x,y" or "Confidence,X coordinate,Y coordinate"
            raise InvalidAnnotationError(
                f"{p} line {lineno}: expected 'confidence,x,y' numbers, got {','.join(row)!r}; fix that line"
            ) from err
    return out
