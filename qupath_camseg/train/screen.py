"""The screening network of a model folder: a small U-Net at a coarse pixel size, trained on the same
annotations and the same split as the main model (``predict --cascade``).

:func:`train_screen` trains it into ``MODEL_DIR/screen/`` (an ordinary run folder: metrics,
checkpoints; rerunning resumes, a finished run returns at once) with :func:`screen_config`'s
settings: ``mpp`` 4 µm/px (twice the model's when that is coarser), 64 px tiles, width 8,
depth 3, batch 16, four times the model's steps (100 to 5,000: a screen step costs a few hundredth
of a model step). :func:`calibration_truth` gives the validation slides and
their annotations, on which :func:`~qupath_camseg.predict.screen_calibrate.calibrate_screen`
chooses the threshold; the command line then adds both to the bundle
(:func:`~qupath_camseg.model.bundle.save_screen`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from qupath_camseg.train.collect import collect_images
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.loop import train
from qupath_camseg.train.run_folder import CHECKPOINT_NAME

__all__ = ["SCREEN_DIR", "ScreenSettings", "calibration_truth", "screen_config", "train_screen"]

#: The screen's run folder inside the model folder.
SCREEN_DIR = "screen"


@dataclass(frozen=True)
class ScreenSettings:
    """The screen's size: ``mpp`` (µm/px; ``None``: 4, or twice the model's if coarser),
    ``tile_px``, U-Net ``width``/``depth``, ``steps`` (``None``: four times the model's, 100 to
    5,000) and ``batch_size``."""

    mpp: float | None = None
    tile_px: int = 64
    width: int = 8
    depth: int = 3
    steps: int | None = None
    batch_size: int = 16


def screen_config(main: TrainConfig, settings: ScreenSettings | None = None, *,
                  val_images: tuple[str, ...] = ()) -> TrainConfig:
    """The screen's training settings: ``main``'s data, classes, split (``val_images``: the main
    run's validation slides), seed and device, at the screen's size. The screen always starts from
    scratch (a fine-tuned model's ``init`` is the parent's main network, not a screen) and reads raw
    tiles (no stain normalisation): it is trained, calibrated and run on the same raw pixels."""
    st = settings or ScreenSettings()
    main_steps = main.steps or (main.epochs or 10) * math.ceil(main.tiles_per_epoch / main.batch_size)
    steps = st.steps or min(5000, max(100, 4 * main_steps))
    return dataclasses.replace(
        main, mpp=st.mpp or max(4.0, 2 * main.mpp), tile_px=st.tile_px, batch_size=st.batch_size, steps=steps,
        epochs=None, tiles_per_epoch=st.batch_size * math.ceil(steps / 3),
        arch={"name": "unet", "width": st.width, "depth": st.depth, "norm": "batch"},
        val_images=val_images or main.val_images, checkpoint_every_steps=None, init=None, stain_norm="none")


def train_screen(project: str | os.PathLike[str], model_dir: str | os.PathLike[str], config: TrainConfig, *,
                 progress: bool = False, keep_length: bool = True) -> dict[str, Any]:
    """Train (or resume, or find finished) the screen of ``model_dir`` in ``model_dir/screen/``
    with ``config`` (from :func:`screen_config`); a run already there keeps its own settings but
    the runtime ones (and its length unless ``keep_length`` is false). Returns
    :func:`~qupath_camseg.train.loop.train`'s summary."""
    out = Path(model_dir) / SCREEN_DIR
    resume = (out / CHECKPOINT_NAME).is_file()
    if resume and (out / "train_config.json").is_file():
        saved = TrainConfig.from_json(json.loads((out / "train_config.json").read_text(encoding="utf-8"))["config"])
        config = dataclasses.replace(saved, device=config.device, workers=config.workers, amp=config.amp,
                                     steps=saved.steps if keep_length else config.steps)
    return train(project, out, config, resume=resume, progress=progress)


def calibration_truth(project: str | os.PathLike[str], config: TrainConfig
                      ) -> list[tuple[str, Path, float | None, list[tuple[BaseGeometry, int]], int]]:
    """The slides to choose the screen's threshold on: the validation slides of ``config``'s split
    (the training slides when there are none), each as ``(name, path, slide_mpp override,
    shapes, fill)``: level-0 shapes labelled 1… (classes) or 255 (``Ignore*``), and the label of
    unannotated pixels."""
    data = collect_images(project, config)
    images = data.val_images or data.train_images
    return [(i.name, Path(i.path), i.mpp_override, list(i.shapes), i.fill) for i in images]
