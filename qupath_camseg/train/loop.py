"""The training loop: AdamW + cosine, CE + Dice, per-epoch validation, checkpoints and resume.

``train(project, out_dir, config)`` learns from a QuPath project's annotations and writes
``out_dir`` (a model folder, see :mod:`qupath_camseg.model.bundle`)::

    model.safetensors, model.json   the best model so far (by validation Dice) - usable at once;
                                    after the last epoch model.json gets its calibration
    metrics.json                    per-epoch history (loss, Dice, IoU, tiles/s), the split and
                                    the calibration (priors, temperature, ECE before/after)
    training_curve.png              loss and validation Dice per epoch
    reliability.png                 reliability diagram on the validation tiles (calibration)
    train_config.json               the run's settings and versions (provenance)
    checkpoints/last.pt, last.json  resume state (weights, optimizer, scheduler, RNG, sampler)

Every file is written atomically (temp + rename), so a ``kill -9`` leaves each one whole, and
``resume=True`` continues from ``checkpoints/last.pt`` exactly where it stopped (the sampler's
state is just ``(epoch, batch)``; see :mod:`qupath_camseg.train.datasets`). The checkpoint holds
tensors and plain values only and is read with ``torch.load(weights_only=True)`` (no unpickling
of code).

The steps: :func:`~qupath_camseg.train.session.open_session` (settings, resume, data, model,
optimizer, loaders), then per epoch :func:`~qupath_camseg.train.epoch.train_epoch` and
:func:`_end_epoch` (validate, keep the best model, checkpoint, metrics), then the calibration of
the best model (:mod:`qupath_camseg.train.calibrate`; also when a finished run is resumed) and
the summary.

Distributed (``torchrun --nproc_per_node=N -m qupath_camseg train ...``): each rank draws its
own shard of the tile keys, gradients are averaged by DistributedDataParallel, metrics are
summed over ranks, and only rank 0 writes. The effective batch is ``batch_size × N``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from qupath_camseg._dist import Dist
from qupath_camseg.model import save_bundle
from qupath_camseg.train.collect import TrainingData
from qupath_camseg.train.calibrate import run_calibration
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.epoch import train_epoch
from qupath_camseg.train.run_folder import training_summary, write_metrics
from qupath_camseg.train.session import TrainSession, open_session
from qupath_camseg.train.validate import validate

__all__ = ["train"]

log = logging.getLogger(__name__)


def train(
    project_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    on_data: Callable[[TrainingData], None] | None = None,
) -> dict[str, Any]:
    """Train on ``project_path``'s annotations; write the model folder ``out_dir``.

    ``out_dir`` defaults to ``<project>/camseg/models/<timestamp>`` (with ``resume``: the newest
    run there). ``progress`` shows a tqdm bar on stderr. Returns a summary dict (``out_dir``,
    ``best`` metrics, ``history``, ``steps``, ``calibration``...). Raises :class:`TrainingDivergedError`
    when the loss stays non-finite, keeping the last good checkpoint. ``on_data`` is called (rank 0)
    with the images found, before the first step (the CLI prints the door and annotations per image).
    """
    config = config or TrainConfig()
    dist = Dist.from_env(config.device)
    result = _train(project_path, out_dir, config, dist, resume=resume, progress=progress, on_data=on_data)
    dist.finish()  # together: rank 0 calibrated alone after the last step
    return result


def _train(
    project_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    config: TrainConfig,
    dist: Dist,
    *,
    resume: bool,
    progress: bool,
    on_data: Callable[[TrainingData], None] | None = None,
) -> dict[str, Any]:
    session = open_session(project_path, out_dir, config, dist, resume=resume)
    if on_data is not None and dist.is_main:
        on_data(session.data)
    bar = None
    if progress and dist.is_main:
        bar = tqdm(
            total=session.total_steps,
            initial=session.state["global_step"],
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            desc="train",
        )
    calibration = None
    try:
        while session.state["global_step"] < session.total_steps:
            _end_epoch(session, train_epoch(session, bar))
        if dist.is_main:
            calibration = run_calibration(session)
            write_metrics(session.out, session.history, session.data, calibration=calibration)
    finally:
        if bar is not None:
            bar.close()
        session.close()
    return {**_result(session), "calibration": calibration}


def _end_epoch(s: TrainSession, record: dict[str, Any]) -> None:
    """Validate, add ``record`` to the history, keep the model if it is the best so far, checkpoint
    and write the metrics. The score: validation Dice, else minus the validation loss, else (no
    validation) the step, so that the latest model is kept."""
    state, dist = s.state, s.dist
    if s.loaders.val is not None:
        record.update(validate(s.ddp_model, s.loaders.val, s.data.classes, placement=s.placement, dist=dist))
    score = record.get("val_dice")
    score = -record["val_loss"] if score is None and record.get("val_loss") is not None else score
    score = state["global_step"] if score is None else score  # no validation: the latest is best
    improved = score > state["best_score"]
    record["best"] = improved
    s.history.append(record)
    state.update(epoch=state["epoch"] + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_batches=0.0, epoch_bad_steps=0)
    if improved:
        state["best_score"] = score
        if dist.is_main:
            s.model_config.training = training_summary(s.config, s.data, record)
            save_bundle(s.out, s.model, s.model_config)
    s.save_checkpoint()
    if dist.is_main:
        write_metrics(s.out, s.history, s.data)
    log.info("epoch %d: %s", record["epoch"], {k: v for k, v in record.items() if k != "per_class"})


def _result(s: TrainSession) -> dict[str, Any]:
    """The summary :func:`train` returns."""
    best = max((r for r in s.history if r.get("best")), key=lambda r: r["step"], default=None)
    return {
        "out_dir": str(s.out),
        "steps": s.state["global_step"],
        "epochs": s.state["epoch"],
        "best": best,
        "history": s.history,
        "resumed_from_step": s.resumed_from,
        "train_images": [i.name for i in s.data.train_images],
        "val_images": [i.name for i in s.data.val_images],
    }
