"""JSON-ready numbers for the evaluation reports."""

from __future__ import annotations

import math

__all__ = ["json_float"]


def json_float(v: float | None) -> float | None:
    """``v`` as a float, or ``None`` (JSON ``null``) when it is missing, NaN or infinite."""
    return None if v is None or not math.isfinite(v) else float(v)
