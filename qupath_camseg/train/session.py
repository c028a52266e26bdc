"""The setup of a training run: its settings and folder, data, model, optimizer and loaders.

:func:`open_session` builds a :class:`TrainSession`, the run's live objects, in this order
(the order fixes the random streams, so a seed reproduces a run): the run folder and, with
``resume``, the checkpoint whose settings win (:func:`_settings`); the device; the training data;
the model (seeded), AdamW and the warm-up + cosine schedule, restored from the checkpoint when
resuming; the loaders.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qupath_camseg._dist import Dist
from qupath_camseg._runtime import require_memory, resolve_device
from qupath_camseg.model import ModelConfig, build_model, forward_bytes, normalize_arch
from qupath_camseg.train.collect import TrainingData, collect_images
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.lineage import init_settings, load_init_weights, record_lineage
from qupath_camseg.train.loaders import Loaders, build_loaders
from qupath_camseg.train.placement import Placement
from qupath_camseg.train.stain_fit import fit_training_stains
from qupath_camseg.train.run_folder import (
    load_checkpoint,
    merge_resume_config,
    read_checkpoint,
    resolve_out_dir,
    save_checkpoint,
    write_run_info,
)

__all__ = ["TrainSession", "open_session"]


@dataclass
class TrainSession:
    """The live objects of a training run in this process.

    ``model`` is the network (saved, checkpointed); ``ddp_model`` the same, wrapped by
    DistributedDataParallel under ``torchrun`` (forward/backward go through it). ``state`` is
    what a checkpoint keeps of the progress (``epoch``, ``step_in_epoch``, ``global_step``,
    ``best_score``, ``bad_steps_total`` and the running sums of the epoch); ``history`` one record
    per finished epoch. ``total_steps`` optimizer steps in all, ``steps_per_epoch`` per epoch.
    """

    config: TrainConfig
    dist: Dist
    out: Path
    data: TrainingData
    placement: Placement
    model: nn.Module
    ddp_model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loaders: Loaders
    model_config: ModelConfig
    steps_per_epoch: int
    total_steps: int
    state: dict[str, Any]
    history: list[dict[str, Any]]
    resumed_from: int | None
    last_checkpoint: float = field(default_factory=time.monotonic)  # time.monotonic() of the last one
    bad_in_a_row: int = 0  # steps with a non-finite loss, in a row
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # the run folder's lock

    def close(self) -> None:
        """Close the loaders' slides and release the run folder's lock."""
        try:
            self.loaders.close()
        finally:
            self.held.close()

    def save_checkpoint(self) -> None:
        """Save ``checkpoints/last.pt`` (rank 0) and restart the checkpoint clock."""
        save_checkpoint(
            self.out, model=self.model, opt=self.opt, sched=self.sched, scaler=self.scaler, state=self.state,
            history=self.history, config=self.config, dist=self.dist,
        )
        self.last_checkpoint = time.monotonic()


def open_session(
    project_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    config: TrainConfig,
    dist: Dist,
    *,
    resume: bool,
) -> TrainSession:
    """Set up a run (see the module docstring); raises the settings, folder and data errors.
    Rank 0 holds the run folder's lock (:data:`~qupath_camseg.train.run_folder.LOCK_NAME`) until
    :meth:`TrainSession.close`: a second run in the same folder stops at once."""
    held = contextlib.ExitStack()
    try:
        session = _open(project_path, out_dir, config, dist, held, resume=resume)
    except BaseException:
        held.close()
        raise
    session.held = held
    return session


def _open(project_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None, config: TrainConfig,
          dist: Dist, held: contextlib.ExitStack, *, resume: bool) -> TrainSession:
    """:func:`open_session`; the run folder's lock goes onto ``held``."""
    out, ckpt, config = _settings(project_path, out_dir, config, dist, held, resume=resume)
    device = torch.device(resolve_device(config.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    arch = normalize_arch({**config.arch, "n_classes": len(config.classes)})
    sizing = ModelConfig(arch=arch, mpp=config.mpp, tile_px=config.tile_px,
                         classes=[{"name": c, "color": [0, 0, 0]} for c in config.classes])
    require_memory(3 * forward_bytes(sizing, config.tile_px, config.batch_size), device=str(device),
                   what=f"training on tiles of {config.tile_px} px, {config.batch_size} per step (activations, "
                        "gradients)", fix="lower --tile or --batch-size")
    data = collect_images(project_path, config)
    stains = fit_training_stains(data, config)  # None without --stain-norm
    model_config = ModelConfig(arch=arch, mpp=config.mpp, tile_px=config.tile_px, classes=data.classes,
                               stain=stains.reference.to_json() if stains is not None else None)
    record_lineage(data, config.init, resumed=ckpt is not None)
    if ckpt is None and dist.is_main:
        write_run_info(out, config, data, device, dist)
    dist.barrier()

    placement = Placement.for_device(device, config.amp)
    torch.manual_seed(config.seed)
    net = build_model(arch, pretrained=config.init is None)
    if config.init is not None and ckpt is None:
        load_init_weights(net, config.init)  # fine-tuning: start from the parent's weights
    model = placement.model(net)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(config.tiles_per_epoch / (config.batch_size * dist.world_size)))
    total_steps = config.steps or (config.epochs or 10) * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=placement.amp_dtype == torch.float16)
    state: dict[str, Any] = {
        "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": -math.inf, "bad_steps_total": 0
    }
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        state, history = load_checkpoint(ckpt, model, opt, sched, scaler)
    return TrainSession(
        config=config,
        dist=dist,
        out=out,
        data=data,
        placement=placement,
        model=model,
        ddp_model=dist.wrap(model, device),
        opt=opt,
        sched=sched,
        scaler=scaler,
        loaders=build_loaders(data, config, device=device, dist=dist, steps_per_epoch=steps_per_epoch, stains=stains),
        model_config=model_config,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        state=state,
        history=history,
        resumed_from=state["global_step"] if ckpt is not None else None,
    )


def _settings(
    project_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    config: TrainConfig,
    dist: Dist,
    held: contextlib.ExitStack,
    *,
    resume: bool,
) -> tuple[Path, dict[str, Any] | None, TrainConfig]:
    """The run folder (locked by rank 0 before anything is read or written there), its checkpoint
    when resuming, and the checked settings (a resumed run's own, with the length and runtime
    settings of ``config``)."""
    out, ckpt_path = resolve_out_dir(project_path, out_dir, resume=resume, dist=dist, held=held)
    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        config = merge_resume_config(out, json.loads(ckpt["config"]), config)
    elif config.init is not None:
        config = init_settings(config)
    config.validate()
    return out, ckpt, config


def _lr_lambda(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up (≤ 100 steps, 5 %), then cosine down to 2 %."""
    warmup = max(1, min(100, total_steps // 20))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
