"""One epoch of training steps (or what a resumed run has left of it), and one optimizer step.

Per step: a batch from the loader, photometric augmentation on the device, the forward/backward
pass, a step of AdamW and of the schedule. A step whose loss or gradient is not finite is skipped
(on every rank alike); ``max_bad_steps`` of them in a row stop the run. Mid-epoch checkpoints
are written every ``checkpoint_every_s`` seconds and every ``checkpoint_every_steps`` steps; the
running sums of the epoch travel in them, so a resumed epoch reports what an uninterrupted one
would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from qupath_camseg._dist import Dist
from qupath_camseg._runtime import cpu_threads_tick
from qupath_camseg.errors import TrainingDivergedError
from qupath_camseg.train.loss import dice_ce_loss
from qupath_camseg.train.placement import autocast
from qupath_camseg.train.run_folder import CHECKPOINT_NAME
from qupath_camseg.train.session import TrainSession

__all__ = ["optimizer_step", "train_epoch"]


@dataclass
class _EpochMeter:
    """What this process measured of the epoch so far. ``sums``: float64 ``[loss sum, good
    batches]`` (from the checkpoint when resuming mid-epoch); times from ``time.perf_counter()``."""

    n_steps: int
    sums: torch.Tensor
    bad_steps: int
    t_start: float = field(default_factory=time.perf_counter)
    tiles: int = 0
    data_wait: float = 0.0
    t_steady: float | None = None  # after the first step: worker start-up and warm-up are over
    tiles_steady: int = 0


def train_epoch(s: TrainSession, bar: tqdm | None) -> dict[str, Any]:
    """Train the rest of epoch ``s.state["epoch"]`` (up to ``s.total_steps``); return its record:
    mean training loss over ranks, bad steps, learning rate, tiles/s and data-wait seconds."""
    state = s.state
    s.loaders.sampler.set_epoch(state["epoch"], skip_batches=state["step_in_epoch"])
    n_steps = min(s.steps_per_epoch - state["step_in_epoch"], s.total_steps - state["global_step"])
    s.ddp_model.train()
    sums = torch.tensor([state.get("epoch_loss_sum", 0.0), state.get("epoch_batches", 0.0)], dtype=torch.float64)
    meter = _EpochMeter(n_steps, sums, int(state.get("epoch_bad_steps", 0)))
    batches = iter(s.loaders.train)
    for _ in range(n_steps):
        cpu_threads_tick()  # the model's threads follow the cores other processes leave free
        t_wait = time.perf_counter()
        images, labels, params = next(batches)
        meter.data_wait += time.perf_counter() - t_wait
        loss_value, ok = _train_step(s, meter, images, labels, params)
        _count_step(s, meter, loss_value, ok)
        if bar is not None:
            rate = meter.tiles / max(1e-9, time.perf_counter() - meter.t_start)
            bar.update(1)
            loss = f"{loss_value:.3f}" if ok else "nan"
            bar.set_postfix(epoch=state["epoch"] + 1, loss=loss, tiles_s=f"{rate:.1f}", refresh=False)
        _checkpoint_if_due(s)
    del batches
    return _record(s, meter)


def _train_step(
    s: TrainSession, meter: _EpochMeter, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor
) -> tuple[float, bool]:
    """One step on a loader batch (uint8 tiles, labels, photometric params); advances the counters."""
    x = s.placement.inputs(images, params if s.config.augment is not None else None)
    y = s.placement.targets(labels)
    loss_value, ok = optimizer_step(
        s.ddp_model, s.model, s.opt, s.scaler, x, y,
        amp_dtype=s.placement.amp_dtype, grad_clip=s.config.grad_clip, dist=s.dist,
    )
    s.sched.step()
    s.state["global_step"] += 1
    s.state["step_in_epoch"] += 1
    meter.tiles += x.shape[0] * s.dist.world_size
    if meter.t_steady is None:
        meter.t_steady, meter.tiles_steady = time.perf_counter(), meter.tiles
    return loss_value, ok


def _count_step(s: TrainSession, meter: _EpochMeter, loss_value: float, ok: bool) -> None:
    """Add a step to the epoch's sums, or count it as bad; raise :class:`TrainingDivergedError`
    after ``max_bad_steps`` bad steps in a row."""
    state = s.state
    if ok:
        s.bad_in_a_row = 0
        meter.sums += torch.tensor([loss_value, 1.0], dtype=torch.float64)
    else:
        s.bad_in_a_row += 1
        state["bad_steps_total"] += 1
        meter.bad_steps += 1
        if s.bad_in_a_row >= s.config.max_bad_steps:
            raise TrainingDivergedError(
                f"loss was NaN/inf in {s.bad_in_a_row} steps in a row (step {state['global_step']}); "
                f"the last good checkpoint is kept in {s.out / CHECKPOINT_NAME}; "
                f"lower --lr (now {s.config.lr:g}) "
                "and start a new --out, or check the annotations"
            )
    state.update(
        epoch_loss_sum=float(meter.sums[0]), epoch_batches=float(meter.sums[1]), epoch_bad_steps=meter.bad_steps
    )


def _checkpoint_if_due(s: TrainSession) -> None:
    """A mid-epoch checkpoint every ``checkpoint_every_steps`` steps or ``checkpoint_every_s`` seconds
    (the end of an epoch saves its own)."""
    config, state = s.config, s.state
    due_steps = config.checkpoint_every_steps and state["global_step"] % config.checkpoint_every_steps == 0
    if state["step_in_epoch"] < s.steps_per_epoch and (
        due_steps or time.monotonic() - s.last_checkpoint > config.checkpoint_every_s
    ):
        s.save_checkpoint()


def _record(s: TrainSession, meter: _EpochMeter) -> dict[str, Any]:
    """The epoch's training record (loss summed over ranks)."""
    train_time = time.perf_counter() - meter.t_start
    sums = s.dist.all_reduce(meter.sums)
    steady = None
    if meter.n_steps > 1 and meter.t_steady is not None:
        steady = (meter.tiles - meter.tiles_steady) / max(1e-9, meter.t_start + train_time - meter.t_steady)
    return {
        "epoch": s.state["epoch"] + 1,
        "step": s.state["global_step"],
        "train_loss": float(sums[0] / sums[1]) if sums[1] else None,
        "bad_steps": meter.bad_steps,
        "lr": float(s.sched.get_last_lr()[0]),
        "tiles_per_s": meter.tiles / max(1e-9, train_time),
        "tiles_per_s_steady": steady,
        "data_wait_s": meter.data_wait,
        "train_time_s": train_time,
    }


def optimizer_step(
    ddp_model: torch.nn.Module,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None,
    grad_clip: float,
    dist: Dist,
) -> tuple[float, bool]:
    """One optimizer step on float ``x`` ``(N, 3, H, W)`` and long ``y`` ``(N, H, W)``; returns
    ``(loss, ok)``. A non-finite loss or gradient skips the step (and restores BatchNorm
    statistics the bad batch touched); the decision is the same on every rank."""
    buffers = [b.detach().clone() for b in model.buffers()]
    opt.zero_grad(set_to_none=True)
    with autocast(x.device, amp_dtype):
        logits = ddp_model(x)
    loss, _, _ = dice_ce_loss(logits, y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    flag = torch.tensor([0.0 if torch.isfinite(loss) and (scaler.is_enabled() or torch.isfinite(norm)) else 1.0])
    ok = float(dist.all_reduce(flag)[0]) == 0.0
    if ok:
        scaler.step(opt)
        scaler.update()
    else:
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        if scaler.is_enabled():
            scaler.update()
    return float(loss.detach()), ok

