"""Colours as QuPath stores them (packed signed 32-bit ARGB ints) and QuPath's default classes."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rgb_to_argb", "argb_to_rgb", "QUPATH_DEFAULT_CLASSES"]

#: QuPath's default classes (name, (r, g, b)), as in a ``classes.json`` written by QuPath 0.6.
QUPATH_DEFAULT_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Tumor", (200, 0, 0)),
    ("Stroma", (150, 200, 150)),
    ("Immune cells", (160, 90, 160)),
    ("Necrosis", (50, 50, 50)),
    ("Other", (255, 200, 0)),
    ("Region*", (0, 0, 180)),
    ("Ignore*", (180, 180, 180)),
    ("Positive", (250, 62, 62)),
    ("Negative", (112, 112, 225)),
)


def rgb_to_argb(rgb: Sequence[int]) -> int:
    """``(r, g, b)`` 0–255 → QuPath's packed colour: opaque ARGB as a *signed* 32-bit int."""
    r, g, b = (int(c) & 0xFF for c in rgb[:3])
    value = (0xFF << 24) | (r << 16) | (g << 8) | b
    return value - (1 << 32) if value >= 1 << 31 else value


def argb_to_rgb(value: int) -> tuple[int, int, int]:
    """QuPath's packed (signed or unsigned) ARGB int → ``(r, g, b)``."""
    value &= 0xFFFFFFFF
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF
