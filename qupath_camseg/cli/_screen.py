"""``qcamseg train``'s screen step: train the screening network, choose its threshold on the
validation slides, add both to the model folder (the glue between ``train/`` and ``predict/``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

__all__ = ["add_screen", "main_run_config"]


def main_run_config(model_dir: Path, given: Any) -> tuple[Any, tuple[str, ...]]:
    """The settings and validation slides of the run that wrote ``model_dir`` (``train_config.json``,
    ``metrics.json``), or ``given`` and its own ``val_images`` for a folder without them."""
    from qupath_camseg.errors import ModelBundleError
    from qupath_camseg.train import TrainConfig

    if not (model_dir / "model.json").is_file():
        raise ModelBundleError(f"--screen adds a screen to a trained model folder, but {model_dir} has no model.json; "
                               "train the model first (without --screen)")
    info, metrics = model_dir / "train_config.json", model_dir / "metrics.json"
    if not info.is_file():
        return given, tuple(given.val_images)
    config = TrainConfig.from_json(json.loads(info.read_text(encoding="utf-8"))["config"])
    config = dataclasses.replace(config, device=given.device, workers=given.workers, amp=given.amp)
    val: tuple[str, ...] = tuple(config.val_images)
    if metrics.is_file():
        val = tuple(json.loads(metrics.read_text(encoding="utf-8")).get("split", {}).get("val") or val)
    return config, val


def add_screen(project: Path, model_dir: Path, main_config: Any, val_images: tuple[str, ...], *,
               progress: bool, steps: int | None = None) -> dict[str, Any]:
    """Train the screen of ``model_dir`` (resuming its run when there is one; ``steps`` overrides
    its length), calibrate it on the validation slides and save it into the bundle; returns the
    screen's ``model.json`` section."""
    from qupath_camseg.model import (
        ScreenModel,
        load_model,
        read_model_config,
        save_screen,
    )
    from qupath_camseg.predict import CalibrationSlide, PredictOptions, calibrate_screen, context_px
    from qupath_camseg.train.screen import (
        SCREEN_DIR,
        ScreenSettings,
        calibration_truth,
        screen_config,
        train_screen,
    )

    config = screen_config(main_config, ScreenSettings(steps=steps), val_images=val_images)
    click.echo(f"training the screen ({config.mpp:g} µm/px, {config.tile_px} px tiles) in {model_dir / SCREEN_DIR}",
               err=True)
    done = train_screen(project, model_dir, config, progress=progress, keep_length=steps is None)
    click.echo(f"screen: {done['steps']} steps{' (resumed)' if done['resumed_from_step'] is not None else ''}",
               err=True)
    run = load_model(model_dir / SCREEN_DIR, device=config.device)
    truth = [CalibrationSlide(*t) for t in calibration_truth(project, config)]
    screen = ScreenModel(run, {})
    main = load_model(model_dir, device=config.device)
    calib = calibrate_screen(screen, truth, options=PredictOptions(device=config.device, overwrite=True),
                             context_um=context_px(main) * main.config.mpp,
                             note=lambda m: click.echo(m, err=True))
    save_screen(model_dir, run.model, read_model_config(model_dir / SCREEN_DIR), calib)
    section = read_model_config(model_dir).screen or {}
    if section.get("recall") is None:
        click.echo("screen: no tumour in the validation slides, so no threshold was chosen; predict runs one full "
                   "pass (add annotated validation slides and rerun with --screen)", err=True)
    else:
        click.echo(f"screen: threshold {section['threshold']:.3f} keeps {section['recall']:.1%} of the tumour pixels "
                   f"and {section['kept_tissue_fraction']:.1%} of the tissue of {', '.join(section['calibrated_on'])}",
                   err=True)
    return section
