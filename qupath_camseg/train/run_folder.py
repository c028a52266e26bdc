"""The folder of a training run: where it goes, resuming, checkpoints, metrics and provenance.

``checkpoints/last.pt`` holds tensors and plain values only (weights, optimizer, scheduler, AMP
scaler, RNG states, the sampler's ``(epoch, batch)`` state, the history and the settings) and is
read with ``torch.load(weights_only=True)``; every file is written atomically, and only by rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from qupath_camseg import __version__
from qupath_camseg._dist import Dist as _Dist
from qupath_camseg._io import atomic_write_bytes, atomic_write_json, backup_file, file_lock
from qupath_camseg._runtime import versions
from qupath_camseg.errors import ModelBundleError, OutputNotWritableError
from qupath_camseg.evaluate import save_figure, training_curve_figure
from qupath_camseg.train.collect import TrainingData
from qupath_camseg.train.config import FIXED_ON_RESUME, TrainConfig

__all__ = [
    "CHECKPOINT_NAME",
    "LOCK_NAME",
    "default_out_dir",
    "resolve_out_dir",
    "merge_resume_config",
    "write_run_info",
    "read_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "training_summary",
    "write_metrics",
]

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoints/last.pt"
#: The run folder's lock: one training run per folder (rank 0 holds it; see :func:`resolve_out_dir`).
LOCK_NAME = "camseg.lock"
_CKPT_FORMAT = "qupath-camseg-checkpoint"


# ------------------------------------------------------------------------------ run folder
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_out_dir(project_path: str | os.PathLike[str]) -> Path:
    """``<project folder>/camseg/models/<local date-time>`` for a project folder or ``.qpproj``."""
    folder = Path(project_path)
    folder = folder.parent if folder.suffix == ".qpproj" else folder
    return folder / "camseg" / "models" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_out_dir(
    project_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None, *, resume: bool, dist: _Dist,
    held: contextlib.ExitStack | None = None,
) -> tuple[Path, Path | None]:
    """The model folder and, when resuming, its checkpoint. Fresh runs refuse a used folder.

    ``out_dir=None``: :func:`default_out_dir`, or with ``resume`` the newest run there (rank 0
    chooses). With ``held``, rank 0 takes the folder's lock (:data:`LOCK_NAME`) onto it before
    reading or writing anything there, so a second run in the same folder stops at once. A folder
    whose run stopped before its first checkpoint (``train_config.json``, no checkpoint) starts
    over without ``--resume`` (its files are backed up to ``backups/``). Raises
    :class:`ModelBundleError` when there is nothing to resume or the folder is used,
    :class:`OutputNotWritableError` when it cannot be written.
    """
    out = _chosen_out_dir(project_path, out_dir, resume=resume, dist=dist)
    ckpt = out / CHECKPOINT_NAME
    if resume and not out.is_dir():
        raise ModelBundleError(f"nothing to resume in {out}: the folder does not exist; run without --resume to start "
                               "training there")
    if dist.is_main:
        if not resume:
            _create(out)
        if held is not None:
            held.enter_context(file_lock(out / LOCK_NAME, what=f"training folder {out}"))
    if resume:
        if not ckpt.is_file():
            stopped = (out / "train_config.json").is_file()
            raise ModelBundleError(
                f"nothing to resume in {out}: no {CHECKPOINT_NAME}"
                + (" (the run stopped before its first checkpoint was saved)" if stopped else "")
                + f"; start it again without --resume: qcamseg train PROJECT --out {out}")
        return out, ckpt
    if ckpt.is_file():
        raise ModelBundleError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
    if (out / "model.json").is_file() and not (out / "train_config.json").is_file():
        raise ModelBundleError(f"{out} already holds a model (model.json) but no training run to resume; "
                               "choose another --out")
    if dist.is_main and (out / "train_config.json").is_file():
        _set_aside_stopped_run(out)
    return out, None


def _chosen_out_dir(project_path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None, *,
                    resume: bool, dist: _Dist) -> Path:
    """``out_dir``, or the default: a new run folder, or with ``resume`` the newest run with a checkpoint."""
    if out_dir is not None:
        return Path(out_dir)
    out = default_out_dir(project_path)
    if resume:
        models = out.parent
        runs = sorted((p.parent.parent for p in models.glob(f"*/{CHECKPOINT_NAME}")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise ModelBundleError(f"nothing to resume in {models}: no run has a {CHECKPOINT_NAME}; run without --resume")
        out = runs[-1]
    return Path(dist.broadcast_str(str(out)))


def _create(out: Path) -> None:
    """Create the model folder (rank 0), or :class:`OutputNotWritableError` naming the fix."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritableError(
            f"cannot create model folder {out}: {err.strerror}; choose a folder you can write to (--out)") from err
    if not os.access(out, os.W_OK):
        raise OutputNotWritableError(
            f"cannot write to model folder {out}; choose a folder you can write to (--out) or fix its permissions")


#: What a run that stopped before its first checkpoint may have left; set aside when it starts over.
_RUN_FILES = ("train_config.json", "model.json", "model.safetensors", "metrics.json", "training_curve.png",
              "checkpoints/last.json")


def _set_aside_stopped_run(out: Path) -> None:
    """A run in ``out`` stopped before its first checkpoint: back its files up to ``out/backups``
    and remove them, so the new run starts clean (and a half-run's model is never mistaken for it)."""
    for name in _RUN_FILES:
        f = out / name
        if f.is_file():
            backup_file(f, backup_dir=out / "backups")
            f.unlink()
    log.warning("%s: the previous run stopped before its first checkpoint; starting over (its files are in %s)",
                out, out / "backups")


def merge_resume_config(out: Path, saved_json: dict[str, Any], given: TrainConfig) -> TrainConfig:
    """The saved run's settings; ``given`` may change only the length and runtime settings."""
    saved = TrainConfig.from_json(saved_json)
    defaults = TrainConfig()
    for name in FIXED_ON_RESUME:
        value = getattr(given, name)
        if value != getattr(defaults, name) and value != getattr(saved, name):
            flag = "--" + name.replace("_", "-")
            raise ModelBundleError(
                f"{out} was trained with {flag} {getattr(saved, name)!r}; --resume cannot change it to {value!r}: "
                "drop the option, or start a new --out"
            )
    changes: dict[str, Any] = {
        k: getattr(given, k)
        for k in ("device", "workers", "amp", "checkpoint_every_s", "checkpoint_every_steps", "max_bad_steps", "door")
    }
    if given.steps is not None:
        changes.update(steps=given.steps, epochs=None)
    elif given.epochs is not None:
        changes.update(epochs=given.epochs, steps=None)
    if given.slide_mpp is not None:
        changes["slide_mpp"] = given.slide_mpp
    return dataclasses.replace(saved, **changes)


def write_run_info(out: Path, config: TrainConfig, run: TrainingData, device: torch.device, dist: _Dist) -> None:
    """Write ``train_config.json``: the settings, project, device, world size, versions and the split."""
    atomic_write_json(
        out / "train_config.json",
        {
            "config": config.to_json(),
            "project": run.project,
            "started": _now(),
            "device": str(device),
            "world_size": dist.world_size,
            "effective_batch_size": config.batch_size * dist.world_size,
            "versions": versions(),
            "data": run.summary,
            "lineage": run.lineage,
        },
    )


# ------------------------------------------------------------------------------ checkpoints
def read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of ``checkpoints/last.pt`` (``weights_only``); :class:`ModelBundleError` if it is
    unreadable or not ours."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
        raise ModelBundleError(
            f"cannot read checkpoint {path} ({type(err).__name__}); delete the folder's checkpoints/ to start over"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != _CKPT_FORMAT:
        raise ModelBundleError(f"{path} is not a qupath-camseg training checkpoint; start a new --out")
    return payload


def load_checkpoint(
    payload: dict[str, Any],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Restore weights, optimizer, schedule, AMP scaler and RNG states from ``payload``; return the
    progress ``state`` and the ``history``."""
    model.load_state_dict(payload["model"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng_torch"])
    if torch.cuda.is_available() and payload.get("rng_cuda"):
        torch.cuda.set_rng_state_all(list(payload["rng_cuda"]))
    return dict(payload["state"]), json.loads(payload["history"])


def save_checkpoint(
    out: Path,
    *,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
    history: list[dict[str, Any]],
    config: TrainConfig,
    dist: _Dist,
) -> None:
    """Rank 0 writes ``checkpoints/last.pt`` (tensors and plain values only) and ``last.json``."""
    if not dist.is_main:
        return
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        log.warning("weights are not finite at step %d; keeping the previous checkpoint", state["global_step"])
        return
    payload = {
        "format": _CKPT_FORMAT,
        "format_version": 1,
        "version": __version__,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "state": dict(state),
        "history": json.dumps(history),
        "config": json.dumps(config.to_json()),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(out / CHECKPOINT_NAME, buf.getvalue())
    atomic_write_json(
        out / "checkpoints" / "last.json",
        {**{k: state[k] for k in ("epoch", "step_in_epoch", "global_step")}, "saved": _now()},
    )


def training_summary(config: TrainConfig, run: TrainingData, record: dict[str, Any]) -> dict[str, Any]:
    """The ``training`` section of ``model.json`` for the model of epoch ``record``."""
    return {
        "project": run.project,
        "epoch": record["epoch"],
        "step": record["step"],
        "tiles_seen": record["step"] * config.batch_size,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
        "val_dice": record.get("val_dice"),
        "val_iou": record.get("val_iou"),
        "val_loss": record.get("val_loss"),
        "per_class": record.get("per_class"),
        "data": run.summary,
        "augment": dataclasses.asdict(config.augment) if config.augment is not None else None,
        "saved": _now(),
        "lineage": run.lineage,
    }


def write_metrics(out: Path, history: list[dict[str, Any]], run: TrainingData, *,
                  calibration: dict[str, Any] | None = None) -> None:
    """Write ``metrics.json`` (history, best epoch, split and, after the last epoch, the
    calibration of ``model.json``) and ``training_curve.png``."""
    best = max((r for r in history if r.get("best")), key=lambda r: r["step"], default=None)
    split = {"train": [i.name for i in run.train_images], "val": [i.name for i in run.val_images]}
    metrics = {"history": history, "best": best, "split": split, "updated": _now()}
    if calibration is not None:
        metrics["calibration"] = calibration
    atomic_write_json(out / "metrics.json", metrics)
    save_figure(training_curve_figure(history, title=f"Training {out.name}"), out / "training_curve.png")
