"""Stain normalisation at training time (``qcamseg train --stain-norm macenko``).

:func:`fit_training_stains` reads a sample of tissue tiles of every image (at most
:data:`~qupath_camseg.wsi.stain.SAMPLE_TILES`, evenly spread over its tissue tiles, at the
model's µm/px), fits the reference stains on the pooled tiles of the *training* images, and gives
each image (training and validation) the transform from its own stains to that reference. The
reference goes into the model's ``model.json``; predict estimates each new slide's stains the same
way and applies the same kind of transform (:mod:`qupath_camseg.predict.stain`). Reading and
fitting use no random numbers: a resumed run fits the same reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.model import read_model_config
from qupath_camseg.train.collect import TrainingData
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.images import LabelledImage
from qupath_camseg.wsi import (
    METHODS,
    SAMPLE_TILES,
    StainReference,
    StainTransform,
    estimate_stains,
    fit_reference,
    open_slide,
    pick_boxes,
)

__all__ = ["TrainingStains", "fit_training_stains", "sample_tiles"]


@dataclass
class TrainingStains:
    """The reference fitted on the training images and one transform per image, in the order of
    ``TrainingData.train_images`` and ``val_images`` (identity for an image whose own stains
    cannot be estimated)."""

    reference: StainReference
    train: list[StainTransform]
    val: list[StainTransform]


def sample_tiles(img: LabelledImage, mpp: float, tile_px: int, *, max_tiles: int = SAMPLE_TILES) -> npt.NDArray[np.uint8]:
    """Up to ``max_tiles`` tissue tiles of ``img`` read at ``mpp``: ``uint8 (n, tile_px, tile_px, 3)``
    (from its tiles with enough tissue, else from those touching tissue)."""
    size = int(round(img.tile_px_level0))
    origins = img.tissue_xy if len(img.tissue_xy) else img.grid_xy
    boxes = pick_boxes([(int(x), int(y), size, size) for x, y in origins], max_tiles=max_tiles)
    with open_slide(img.path, mpp=img.mpp_override) as slide:
        tiles = [slide.read_region_mpp(b, mpp, out_size=(tile_px, tile_px)) for b in boxes]
    return np.stack(tiles) if tiles else np.zeros((0, tile_px, tile_px, 3), np.uint8)


def fit_training_stains(data: TrainingData, config: TrainConfig) -> TrainingStains | None:
    """The reference and per-image transforms for ``config.stain_norm`` (``None`` when it is ``"none"``).

    Raises :class:`~qupath_camseg.errors.StainNormalizationError` when the training images hold too
    little stained tissue to fit a reference.
    """
    if config.stain_norm not in METHODS:
        raise InvalidSettingsError(f"--stain-norm must be {' or '.join(METHODS)}, not {config.stain_norm!r}")
    if config.stain_norm == "none":
        return None
    images: Sequence[LabelledImage] = [*data.train_images, *data.val_images]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1, len(images)))) as pool:
        samples = list(pool.map(lambda img: sample_tiles(img, config.mpp, config.tile_px), images))
    n_train = len(data.train_images)
    names = ", ".join(img.name for img in data.train_images[:3]) + (" ..." if n_train > 3 else "")
    reference = _parent_reference(config) or fit_reference([t for s in samples[:n_train] for t in s],
                                                           what=f"the training images ({names})")
    transforms = [_transform(s, reference) for s in samples]
    return TrainingStains(reference, transforms[:n_train], transforms[n_train:])


def _parent_reference(config: TrainConfig) -> StainReference | None:
    """The ``--init`` model's stain reference: a fine-tuned model keeps the stains its parent learnt."""
    if config.init is None:
        return None
    return read_model_config(config.init).stain_reference


def _transform(tiles: npt.NDArray[np.uint8], reference: StainReference) -> StainTransform:
    found = estimate_stains(tiles) if len(tiles) else None
    return StainTransform.identity() if found is None else StainTransform.between(found, reference)
