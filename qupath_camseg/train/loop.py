"""The training loop: AdamW + cosine, CE + Dice, per-epoch validation, checkpoints and resume.

``train(project, out_dir, config)`` learns from a QuPath project's annotations and writes
``out_dir`` (a model folder, see :mod:`qupath_camseg.model.bundle`)::

    model.safetensors, model.json   the best model so far (by validation Dice) - usable at once
    metrics.json                    per-epoch history (loss, Dice, IoU, tiles/s) and the split
    training_curve.png              loss and validation Dice per epoch
    train_config.json               the run's settings and versions (provenance)
    checkpoints/last.pt, last.json  resume state (weights, optimizer, scheduler, RNG, sampler)

Every file is written atomically (temp + rename), so a ``kill -9`` leaves each one whole, and
``resume=True`` continues from ``checkpoints/last.pt`` exactly where it stopped (the sampler's
state is just ``(epoch, batch)``; see :mod:`qupath_camseg.train.data`). The checkpoint holds tensors
and plain values only and is read with ``torch.load(weights_only=True)`` (no unpickling of code).

Distributed (``torchrun --nproc_per_node=N -m qupath_camseg train ...``): each rank draws its
own shard of the tile keys, gradients are averaged by DistributedDataParallel, metrics are
summed over ranks, and only rank 0 writes. The effective batch is ``batch_size × N``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from qupath_camseg._dist import Dist as _Dist
from qupath_camseg._runtime import (
    default_loader_workers,
    resolve_device,
    shm_free_bytes,
    workers_fitting_shm,
)
from qupath_camseg.errors import TrainingDivergedError
from qupath_camseg.model import ModelConfig, build_model, normalize_arch, save_bundle
from qupath_camseg.train.augment import photometric
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.data import (
    IGNORE_INDEX,
    TileSampler,
    TrainTileDataset,
    ValTileDataset,
    collect_images,
    val_tiles,
)
from qupath_camseg.train.run_folder import (
    CHECKPOINT_NAME,
    default_out_dir,
    load_checkpoint,
    merge_resume_config,
    read_checkpoint,
    resolve_out_dir,
    save_checkpoint,
    training_summary,
    write_metrics,
    write_run_info,
)

__all__ = ["TrainConfig", "train", "dice_ce_loss", "default_out_dir", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)
def dice_ce_loss(
    logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy + soft Dice (foreground classes, batch-wise), ignoring label 255.

    ``logits`` ``(N, C, H, W)``; ``target`` long ``(N, H, W)``. Returns ``(loss, ce, dice_loss)``.
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    probs = torch.softmax(logits, dim=1)[:, 1:] * valid
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)[:, 1:] * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice_loss = 1.0 - ((2 * inter + eps) / (denom + eps)).mean()
    if not valid.any():  # every pixel ignored: nothing to learn, keep the graph
        ce = logits.sum() * 0.0
    return ce + dice_loss, ce, dice_loss


def _lr_lambda(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, min(100, total_steps // 20))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


_PREFETCH_BATCHES = 4  # per training worker


def _fit_shared_memory(workers: int, *, batch_bytes: int, given: bool) -> int:
    """Workers whose batches in flight (``_PREFETCH_BATCHES`` of ``batch_bytes`` each) fit in half
    of ``/dev/shm``: containers often give it 64 MB, and workers that run out of it die with a
    bus error. A number the user gave is kept, with a warning."""
    fit = workers_fitting_shm(_PREFETCH_BATCHES * batch_bytes)
    if not workers or fit is None or workers <= fit:
        return workers
    free_mb = (shm_free_bytes() or 0) >> 20
    if given:
        log.warning("/dev/shm has %d MB free, too little for %d loader workers (about %d fit); if they die, "
                    "lower --workers or enlarge /dev/shm (docker: --shm-size 8g)", free_mb, workers, fit)
        return workers
    log.warning("/dev/shm has %d MB free: using %d loader workers instead of %d (docker: --shm-size 8g)",
                free_mb, fit, workers)
    return fit


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def train(
    project_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train on ``project_path``'s annotations; write the model folder ``out_dir``.

    ``out_dir`` defaults to ``<project>/camseg/models/<timestamp>`` (with ``resume``: the newest
    run there). ``progress`` shows a tqdm bar on stderr. Returns a summary dict (``out_dir``,
    ``best`` metrics, ``history``, ``steps``...). Raises :class:`TrainingDivergedError` when the
    loss stays non-finite, keeping the last good checkpoint.
    """
    config = config or TrainConfig()
    dist = _Dist.from_env(config.device)
    try:
        return _train(project_path, out_dir, config, dist, resume=resume, progress=progress)
    finally:
        dist.close()


def _train(
    project_path: Any, out_dir: Any, config: TrainConfig, dist: _Dist, *, resume: bool, progress: bool
) -> dict[str, Any]:
    out, ckpt_path = resolve_out_dir(project_path, out_dir, resume=resume, dist=dist)
    ckpt = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    if ckpt is not None:
        config = merge_resume_config(out, json.loads(ckpt["config"]), config)
    config.validate()
    device = torch.device(resolve_device(config.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    run = collect_images(
        project_path,
        classes=config.classes,
        mpp=config.mpp,
        tile_px=config.tile_px,
        images=config.images,
        val_images=config.val_images,
        val_fraction=config.val_fraction,
        unannotated=config.unannotated,
        include_unannotated=config.include_unannotated,
        min_tissue=config.sampling.min_tissue,
        slide_mpp=config.slide_mpp,
        seed=config.seed,
    )
    if ckpt is None and dist.is_main:
        write_run_info(out, config, run, device, dist)
    dist.barrier()

    n_classes = len(config.classes)
    arch = normalize_arch({**config.arch, "n_classes": n_classes})
    torch.manual_seed(config.seed)
    model = build_model(arch).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    world_batch = config.batch_size * dist.world_size
    steps_per_epoch = max(1, math.ceil(config.tiles_per_epoch / world_batch))
    total_steps = config.steps or (config.epochs or 10) * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps))
    amp_dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": -math.inf, "bad_steps_total": 0}
    history: list[dict[str, Any]] = []
    resumed_from = None
    if ckpt is not None:
        state, history = load_checkpoint(ckpt, model, opt, sched, scaler)
        resumed_from = state["global_step"]
    ddp_model = dist.wrap(model, device)

    sampler = TileSampler(steps_per_epoch, config.batch_size, rank=dist.rank, world_size=dist.world_size)
    train_ds = TrainTileDataset(
        run.train_images,
        mpp=config.mpp,
        tile_px=config.tile_px,
        seed=config.seed,
        sampling=config.sampling,
        augment=config.augment,
    )
    workers = config.workers if config.workers is not None else default_loader_workers(str(device), dist.world_size)
    workers = _fit_shared_memory(workers, batch_bytes=config.batch_size * config.tile_px**2 * 4,
                                 given=config.workers is not None)
    loader_kw: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": _worker_init if workers else None,
    }
    if workers:
        loader_kw.update(persistent_workers=True, prefetch_factor=_PREFETCH_BATCHES)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, **loader_kw)
    val_loader = None
    if run.val_images:
        tiles = val_tiles(run.val_images, max_tiles=config.max_val_tiles, seed=config.seed)
        val_ds = ValTileDataset(
            run.val_images, tiles[dist.rank :: dist.world_size], mpp=config.mpp, tile_px=config.tile_px
        )
        val_loader = torch.utils.data.DataLoader(
            val_ds,
            batch_size=config.batch_size,
            shuffle=False,
            **{**loader_kw, "persistent_workers": False, "prefetch_factor": 2 if workers else None},
        )

    model_config = ModelConfig(arch=arch, mpp=config.mpp, tile_px=config.tile_px, classes=run.classes)
    bar = None
    if progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(
            total=total_steps,
            initial=state["global_step"],
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            desc="train",
        )
    last_ckpt_time = time.monotonic()
    bad_in_a_row = 0
    try:
        while state["global_step"] < total_steps:
            sampler.set_epoch(state["epoch"], skip_batches=state["step_in_epoch"])
            n_steps = min(steps_per_epoch - state["step_in_epoch"], total_steps - state["global_step"])
            ddp_model.train()
            # loss sum and good batches of this epoch so far (kept in checkpoints for an exact resume)
            sums = torch.tensor(
                [state.get("epoch_loss_sum", 0.0), state.get("epoch_batches", 0.0)], dtype=torch.float64
            )
            bad_this_epoch = int(state.get("epoch_bad_steps", 0))
            t_epoch, tiles, data_wait, t_steady = time.perf_counter(), 0, 0.0, None
            batches = iter(loader)
            for _ in range(n_steps):
                t_wait = time.perf_counter()
                images, labels, params = next(batches)
                data_wait += time.perf_counter() - t_wait
                x = images.to(device, non_blocking=True).float()
                if config.augment is not None:
                    x = photometric(x, params.to(device, non_blocking=True))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = labels.to(device, non_blocking=True).long()
                loss_value, ok = _step(ddp_model, model, opt, scaler, x, y, amp_dtype, config.grad_clip, dist)
                sched.step()
                state["global_step"] += 1
                state["step_in_epoch"] += 1
                tiles += x.shape[0] * dist.world_size
                if t_steady is None:  # after the first step: worker start-up and warm-up are over
                    t_steady, tiles_steady = time.perf_counter(), tiles
                if ok:
                    bad_in_a_row = 0
                    sums += torch.tensor([loss_value, 1.0], dtype=torch.float64)
                else:
                    bad_in_a_row += 1
                    state["bad_steps_total"] += 1
                    bad_this_epoch += 1
                    if bad_in_a_row >= config.max_bad_steps:
                        raise TrainingDivergedError(
                            f"loss was NaN/inf in {bad_in_a_row} steps in a row (step {state['global_step']}); "
                            f"the last good checkpoint is kept in {out / CHECKPOINT_NAME}; "
                            f"lower --lr (now {config.lr:g}) "
                            "and start a new --out, or check the annotations"
                        )
                state.update(
                    epoch_loss_sum=float(sums[0]), epoch_batches=float(sums[1]), epoch_bad_steps=bad_this_epoch
                )
                rate = tiles / max(1e-9, time.perf_counter() - t_epoch)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        epoch=state["epoch"] + 1,
                        loss=f"{loss_value:.3f}" if ok else "nan",
                        tiles_s=f"{rate:.1f}",
                        refresh=False,
                    )
                due_steps = config.checkpoint_every_steps and state["global_step"] % config.checkpoint_every_steps == 0
                if state["step_in_epoch"] < steps_per_epoch and (
                    due_steps or time.monotonic() - last_ckpt_time > config.checkpoint_every_s
                ):
                    save_checkpoint(out, model, opt, sched, scaler, state, history, config, run, dist)
                    last_ckpt_time = time.monotonic()
            del batches
            train_time = time.perf_counter() - t_epoch
            sums = dist.all_reduce(sums)
            record: dict[str, Any] = {
                "epoch": state["epoch"] + 1,
                "step": state["global_step"],
                "train_loss": float(sums[0] / sums[1]) if sums[1] else None,
                "bad_steps": bad_this_epoch,
                "lr": float(sched.get_last_lr()[0]),
                "tiles_per_s": tiles / max(1e-9, train_time),
                "tiles_per_s_steady": (tiles - tiles_steady) / max(1e-9, t_epoch + train_time - t_steady)
                if n_steps > 1
                else None,
                "data_wait_s": data_wait,
                "train_time_s": train_time,
            }
            if val_loader is not None:
                record.update(
                    _validate(ddp_model, val_loader, device, amp_dtype, n_classes, channels_last, dist, run.classes)
                )
            score = record.get("val_dice")
            score = -record["val_loss"] if score is None and record.get("val_loss") is not None else score
            score = state["global_step"] if score is None else score  # no validation: the latest is best
            improved = score > state["best_score"]
            record["best"] = improved
            history.append(record)
            state.update(
                epoch=state["epoch"] + 1, step_in_epoch=0, epoch_loss_sum=0.0, epoch_batches=0.0, epoch_bad_steps=0
            )
            if improved:
                state["best_score"] = score
                if dist.is_main:
                    model_config.training = training_summary(config, run, record, state)
                    save_bundle(out, model, model_config)
            save_checkpoint(out, model, opt, sched, scaler, state, history, config, run, dist)
            last_ckpt_time = time.monotonic()
            if dist.is_main:
                write_metrics(out, history, config, run, state)
            log.info("epoch %d: %s", record["epoch"], {k: v for k, v in record.items() if k != "per_class"})
    finally:
        if bar is not None:
            bar.close()
        for ds in (train_ds, val_loader.dataset if val_loader is not None else None):
            if ds is not None:
                ds.reader.close()
    best = max((r for r in history if r.get("best")), key=lambda r: r["step"], default=None)
    return {
        "out_dir": str(out),
        "steps": state["global_step"],
        "epochs": state["epoch"],
        "best": best,
        "history": history,
        "resumed_from_step": resumed_from,
        "train_images": [i.name for i in run.train_images],
        "val_images": [i.name for i in run.val_images],
    }


def _step(
    ddp_model: torch.nn.Module,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    y: torch.Tensor,
    amp_dtype: torch.dtype | None,
    grad_clip: float,
    dist: _Dist,
) -> tuple[float, bool]:
    """One optimizer step; returns ``(loss, ok)``. A non-finite loss or gradient skips the step
    (and restores BatchNorm statistics the bad batch touched); the decision is the same on every rank."""
    buffers = [b.detach().clone() for b in model.buffers()]
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
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


@torch.no_grad()
def _validate(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    n_classes: int,
    channels_last: bool,
    dist: _Dist,
    classes: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Pixel Dice/IoU per class and mean over classes (labels 255 excluded), and the loss."""
    model.eval()
    counts = torch.zeros(n_classes, 3, dtype=torch.float64)  # tp, fp, fn
    loss_sum = torch.zeros(2, dtype=torch.float64)  # loss · tiles, tiles
    for images, labels in loader:
        x = images.to(device, non_blocking=True).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels.to(device, non_blocking=True).long()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        loss, _, _ = dice_ce_loss(logits, y)
        loss_sum += torch.tensor([float(loss) * x.shape[0], x.shape[0]], dtype=torch.float64)
        pred = logits.argmax(1)
        valid = y != IGNORE_INDEX
        for c in range(1, n_classes + 1):
            p, t = (pred == c) & valid, (y == c) & valid
            counts[c - 1] += torch.stack([(p & t).sum(), (p & ~t).sum(), (~p & t).sum()]).double().cpu()
    counts = dist.all_reduce(counts)
    loss_sum = dist.all_reduce(loss_sum)
    per_class: dict[str, dict[str, float | None]] = {}
    for i, cls in enumerate(classes):
        tp, fp, fn = (float(v) for v in counts[i])
        has = tp + fp + fn > 0
        per_class[cls["name"]] = {
            "dice": 2 * tp / (2 * tp + fp + fn) if has else None,
            "iou": tp / (tp + fp + fn) if has else None,
            "tp_px": tp,
            "fp_px": fp,
            "fn_px": fn,
        }
    dices = [v["dice"] for v in per_class.values() if v["dice"] is not None]
    ious = [v["iou"] for v in per_class.values() if v["iou"] is not None]
    return {
        "val_loss": float(loss_sum[0] / loss_sum[1]) if loss_sum[1] else None,
        "val_dice": sum(dices) / len(dices) if dices else None,
        "val_iou": sum(ious) / len(ious) if ious else None,
        "val_tiles": int(loss_sum[1]),
        "per_class": per_class,
    }
