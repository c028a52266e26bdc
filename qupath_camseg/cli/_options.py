"""Options shared by several commands, defined once (click decorators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["device_option", "seed_option", "mpp_override_option", "overwrite_option", "images_option"]


def device_option(func: F) -> F:
    """``--device auto|cpu|cuda|cuda:N`` (auto: CUDA when available)."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda or cuda:N. auto uses a GPU when one is available.",
    )(func)


def seed_option(func: F) -> F:
    """``--seed`` for everything random."""
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(func)


def mpp_override_option(func: F) -> F:
    """``--slide-mpp`` for slides whose files carry no pixel size."""
    return click.option(
        "--slide-mpp",
        type=click.FloatRange(min=0, min_open=True),
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
