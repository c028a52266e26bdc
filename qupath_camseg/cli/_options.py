"""Options shared by several commands, defined once (click decorators)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["device_option", "seed_option", "mpp_override_option", "overwrite_option", "images_option",
           "FiniteFloat", "MPP_RANGE", "door_option"]

#: Pixel sizes a slide or a model may have, µm/px: from 0.01 (beyond any light microscope) to
#: 1000 (a thumbnail of a whole slide). Outside it a number is a typo (``1e-300``, ``0.0001``).
MPP_RANGE = (0.01, 1000.0)


class FiniteFloat(click.FloatRange):
    """A float option within a range that also refuses ``nan`` and ``inf`` (click's FloatRange
    accepts ``nan``: every comparison with it is false)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = float(value) if isinstance(value, (int, float)) else None
        if number is None:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a value in {self._describe_range()}", param, ctx)
        return super().convert(number, param, ctx)


def mpp_type() -> FiniteFloat:
    """A pixel size in µm/px within :data:`MPP_RANGE`."""
    return FiniteFloat(*MPP_RANGE)


def device_option(func: F) -> F:
    """``--device auto|cpu|cuda|cuda:N|mps`` (auto: CUDA when available)."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda, cuda:N or mps (Apple GPU). auto uses a CUDA GPU when one is available.",
    )(func)


def seed_option(func: F) -> F:
    """``--seed`` for everything random."""
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(func)


def mpp_override_option(func: F) -> F:
    """``--slide-mpp`` for slides whose files carry no pixel size."""
    return click.option(
        "--slide-mpp",
        type=mpp_type(),
        default=None,
        help="Level-0 pixel size in µm/px, for slides whose metadata lacks it.",
    )(func)


def overwrite_option(func: F) -> F:
    """``--overwrite``: recompute outputs that already exist instead of skipping/resuming."""
    return click.option(
        "--overwrite", is_flag=True, help="Start fresh instead of resuming from finished outputs."
    )(func)


def images_option(func: F) -> F:
    """``--images NAME`` (repeatable): restrict to these project entries (image name or entry ID)."""
    return click.option(
        "--images",
        "images",
        multiple=True,
        help="Only these images (name or entry ID; repeat the option for several).",
    )(func)


def door_option(func: F) -> F:
    """``--door auto|files|paquo``: how the project's annotations are read (and objects written)."""
    return click.option(
        "--door", type=click.Choice(["auto", "files", "paquo"]), default="auto", show_default=True,
        help="auto: QuPath's own data files via paquo when QuPath is installed, else camseg/annotations/ "
             "(files). The camseg Groovy scripts pass files: they export the annotations first.",
    )(func)
