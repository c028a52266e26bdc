"""Calibrate a trained model: prior shift + temperature, fitted after the last epoch.

:func:`calibrate_run` takes the best model of a run (the model folder's weights) and stores a
:class:`~qupath_camseg.model.calibration.Calibration` in its ``model.json``, so that
``qcamseg predict`` gives probabilities that mean what they say (a pixel at 0.3 is tumour about
30 % of the time; the 0.5 threshold is the more-likely-than-not line):

1. **prior shift** ``b[c] = log(π_true[c] / π_sampled[c])`` per output channel, from the class
   priors of :mod:`qupath_camseg.train.priors` (the oversampled training tiles vs. the tissue of
   the training slides); for background + tumour the tumour-vs-background logit moves by
   ``log(true prior odds / sampled prior odds)``;
2. **temperature** ``T``: the network's logits on the validation slides' tiles are computed once
   (every ``stride``-th pixel of each tile) and ``T`` minimises the negative log-likelihood of
   ``softmax(logits / T + b)`` against their labels (LBFGS on ``log T``, ``b`` fixed);
3. the **expected calibration error** (:mod:`qupath_camseg.evaluate.calibration`) of each class's
   probability on those pixels, before (raw softmax), with the prior shift only, and after both;
   ``reliability.png`` draws the reliability diagram.

Without validation slides only the prior shift is stored (``T = 1``; no ECE). With
``unannotated="ignore"`` (partial annotations, as in the correction loop) the training slides'
tissue priors are unknown (unannotated tissue is unlabelled). When every validation slide is
outlined completely (its annotations cover at least :data:`EXHAUSTIVE_FRACTION` of its tissue,
:attr:`~qupath_camseg.train.images.LabelledImage.annotated_fraction`), its tiles - a uniform grid
over the tissue - hold the tissue's classes in their true proportions, so the logit bias is fitted
there together with ``T`` (:func:`fit_temperature_and_bias`, Platt scaling): without it the models
of a generated correction loop kept a validation ECE of 0.36 after their temperature (the sampler's
class balance, not the tissue's, set their threshold). Otherwise the bias stays 0, only ``T`` is
fitted, and ``model.json`` says how to do better. The ECE is measured on the pixels ``T`` was fitted on
(one parameter: a small optimism); ``qcamseg evaluate`` measures it on whole held-out slides.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from qupath_camseg.evaluate import (
    ReliabilityBins,
    reliability_bins,
    reliability_figure,
    save_figure,
)
from qupath_camseg.evaluate._json import json_float
from qupath_camseg.model import (
    Calibration,
    load_bundle,
    read_model_config,
    write_model_config,
)
from qupath_camseg.train.images import IGNORE_INDEX, LabelledImage
from qupath_camseg.train.placement import Placement
from qupath_camseg.train.priors import ClassPriors, training_priors
from qupath_camseg.train.session import TrainSession

__all__ = ["EXHAUSTIVE_FRACTION", "RELIABILITY_NAME", "calibrate_run", "fit_temperature", "fit_temperature_and_bias",
           "run_calibration", "val_logits"]

log = logging.getLogger(__name__)
RELIABILITY_NAME = "reliability.png"
_T_RANGE = (1e-2, 1e2)  # temperatures outside this are clamped (and reported)
#: With ``unannotated="ignore"``, validation slides whose annotations cover at least this share of
#: their tissue count as outlined completely: the logit bias is fitted on them.
EXHAUSTIVE_FRACTION = 0.9
_PIXELS_PER_TILE = 4096  # validation pixels kept per tile (every stride-th pixel of each row/column)


@torch.no_grad()
def val_logits(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
               placement: Placement, tile_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits ``(N, C)`` (CPU) and labels ``(N,)`` (int64) of every ``stride``-th pixel
    (rows and columns, ≈ :data:`_PIXELS_PER_TILE` per tile) of the validation ``batches``
    (uint8 images ``(B, 3, T, T)``, labels ``(B, T, T)``), pixels labelled 255 left out."""
    stride = max(1, round(tile_px / _PIXELS_PER_TILE**0.5))
    off = stride // 2
    model.eval()
    out_l, out_y = [], []
    for images, labels in batches:
        x = placement.inputs(images)
        with placement.autocast():
            logits = model(x).float()
        if logits.shape[-2:] != labels.shape[-2:]:  # a network with a coarser output, as predict does
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[:, :, off::stride, off::stride]
        y = labels[:, off::stride, off::stride].long()
        flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]).cpu()
        yf = y.reshape(-1)
        keep = yf != IGNORE_INDEX
        out_l.append(flat[keep])
        out_y.append(yf[keep])
    if not out_l:
        return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.long)
    return torch.cat(out_l), torch.cat(out_y)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bias: Sequence[float]) -> float:
    """The temperature ``T`` minimising the mean NLL of ``softmax(logits / T + bias)`` (LBFGS on
    ``log T``, float64), clamped to [0.01, 100]. ``logits`` ``(N, C)``, ``labels`` ``(N,)``."""
    return _fit_nll(logits, labels, bias, free_bias=False)[0]


def fit_temperature_and_bias(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """``(T, bias)`` minimising the mean NLL of ``softmax(logits / T + bias)`` together (Platt
    scaling; LBFGS on ``log T`` and the foreground biases, background's fixed at 0; float64), ``T``
    clamped to [0.01, 100]. ``logits`` ``(N, C)``, ``labels`` ``(N,)`` holding every class."""
    return _fit_nll(logits, labels, [0.0] * logits.shape[1], free_bias=True)


def _fit_nll(logits: torch.Tensor, labels: torch.Tensor, bias: Sequence[float], *,
             free_bias: bool) -> tuple[float, list[float]]:
    """LBFGS on ``log T`` (and, with ``free_bias``, on the foreground entries of ``bias``, from
    the given values) minimising the mean NLL of ``softmax(logits / T + bias)``; ``T`` clamped to
    :data:`_T_RANGE`; ``(1, bias)`` as given when the fit diverges."""
    z, y = logits.double(), labels.long()
    b0 = torch.tensor(list(bias), dtype=torch.float64)
    params = torch.zeros(z.shape[1] if free_bias else 1, dtype=torch.float64, requires_grad=True)  # log T, b[1:]
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def total_bias(p: torch.Tensor) -> torch.Tensor:
        return b0 + torch.cat([p.new_zeros(1), p[1:]]) if free_bias else b0

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z * torch.exp(-params[0]) + total_bias(params), y)
        loss.backward()
        return loss

    opt.step(closure)
    fitted = params.detach()
    t, b = float(torch.exp(fitted[0])), [float(v) for v in total_bias(fitted)]
    if not (np.isfinite(t) and all(np.isfinite(b))):
        return 1.0, [float(v) for v in bias]
    return float(min(max(t, _T_RANGE[0]), _T_RANGE[1])), b


def _class_bins(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                bias: Sequence[float]) -> list[ReliabilityBins]:
    """Reliability bins of each foreground class's probability ``softmax(logits / T + bias)[c]``."""
    z = logits.double() / temperature + torch.tensor(list(bias), dtype=torch.float64)
    prob = torch.softmax(z, dim=1).numpy()
    y = labels.numpy()
    return [reliability_bins(prob[:, c], y == c) for c in range(1, prob.shape[1])]


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float, bias: Sequence[float]) -> float:
    z = logits.double() / temperature + torch.tensor(list(bias), dtype=torch.float64)
    return float(F.cross_entropy(z, labels.long()))


def calibrate_run(out: Path, *, priors: ClassPriors | None, logits: torch.Tensor, labels: torch.Tensor,
                  prior_note: str | None = None, fit_bias: bool = False) -> dict[str, Any]:
    """Fit and store the calibration of the model folder ``out`` from ``priors`` (``None``: no
    prior shift, for the reason ``prior_note``) and the validation ``logits`` / ``labels`` (may
    be empty: no temperature). ``fit_bias``: fit the logit bias with ``T`` on the validation pixels
    instead (they hold the tissue's classes in their true proportions; ``priors`` unused). Rewrites
    ``model.json``, draws ``reliability.png`` when there are validation pixels, and returns the
    summary saved in ``metrics.json``."""
    config = read_model_config(out)
    names = config.class_names
    bias = [float(v) for v in priors.logit_bias] if priors is not None else [0.0] * config.n_channels
    details: dict[str, Any] = {"priors": priors.to_dict() if priors is not None else None,
                               "fitted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if prior_note:
        details["prior_note"] = prior_note
    temperature, notes = 1.0, []
    n_classes_seen = int(torch.unique(labels).numel()) if labels.numel() else 0
    if n_classes_seen >= 2:
        if fit_bias and n_classes_seen == config.n_channels:
            temperature, bias = fit_temperature_and_bias(logits, labels)
            details["bias_fitted_on_validation"] = True
        else:
            if fit_bias:
                notes.append("the validation tiles do not hold every class: logit bias not fitted")
            temperature = fit_temperature(logits, labels, bias)
        if temperature in _T_RANGE:
            notes.append(f"temperature clamped to {temperature:g}")
    elif labels.numel():
        notes.append("the validation tiles hold one class only: temperature not fitted")
    else:
        notes.append("no validation slides: temperature not fitted, calibration error not measured")
    details.update(validation_pixels=int(labels.numel()), notes=notes)
    if labels.numel():
        stages = {"before": (1.0, [0.0] * len(bias)), "prior_only": (1.0, bias), "after": (temperature, bias)}
        bins = {k: _class_bins(logits, labels, t, b) for k, (t, b) in stages.items()}
        details["ece"] = {k: {n: json_float(v.ece) for n, v in zip(names, bs)} for k, bs in bins.items()}
        details["nll"] = {k: _nll(logits, labels, t, b) for k, (t, b) in stages.items()}
        fig = reliability_figure({n: (bins["before"][i], bins["after"][i]) for i, n in enumerate(names)},
                                 title=f"Reliability on the validation tiles ({out.name}), T = {temperature:.3g}")
        save_figure(fig, out / RELIABILITY_NAME)
    config.calibration = Calibration(temperature, bias, details)
    write_model_config(out, config)
    log.info("calibration: T=%.4g, logit bias %s, %s", temperature, [round(v, 4) for v in bias], details.get("ece"))
    return config.calibration.to_json()


def run_calibration(s: TrainSession) -> dict[str, Any] | None:
    """Calibrate the best model of the training session ``s`` (rank 0; ``None`` when the run saved
    no model)."""
    out: Path = s.out
    if not (out / "model.json").is_file():
        return None
    model, _ = load_bundle(out, device=s.placement.device)
    model = s.placement.model(model)
    dataset = s.loaders.train.dataset
    cfg = s.config
    tiles_per_epoch = s.steps_per_epoch * cfg.batch_size * s.dist.world_size
    priors, note, fit_bias = None, None, False
    if cfg.unannotated == "ignore":
        fit_bias, note = _validation_outlined(s.data.val_images)
    else:
        priors = training_priors(dataset, tiles_drawn=s.state["global_step"] * cfg.batch_size * s.dist.world_size,
                                 tiles_per_epoch=tiles_per_epoch, n_channels=1 + len(s.data.classes))
        note = None if priors is not None else "no tissue tiles to estimate the class priors from: no prior shift"
    if s.loaders.val is not None:
        logits, labels = val_logits(model, s.loaders.val, placement=s.placement, tile_px=cfg.tile_px)
    else:
        logits, labels = torch.zeros((0, 1 + len(s.data.classes))), torch.zeros(0, dtype=torch.long)
    return calibrate_run(out, priors=priors, logits=logits, labels=labels, prior_note=note, fit_bias=fit_bias)


def _validation_outlined(val_images: Sequence[LabelledImage]) -> tuple[bool, str]:
    """With ``unannotated="ignore"``: whether every validation slide is outlined completely (the
    logit bias can be fitted on it), and the note ``model.json`` keeps about it."""
    if not val_images:
        return False, "unannotated tissue is ignored in training and there are no validation slides: no prior shift"
    least = min(val_images, key=lambda img: img.annotated_fraction)
    if least.annotated_fraction >= EXHAUSTIVE_FRACTION:
        return True, ("unannotated tissue is ignored in training; the validation slides are outlined completely "
                      "(>= {:.0%} of their tissue), so the logit bias is fitted on them with the temperature"
                      ).format(least.annotated_fraction)
    return False, (f"unannotated tissue is ignored in training and validation slide {least.name} is outlined on "
                   f"{least.annotated_fraction:.0%} of its tissue, so the tissue's class priors are unknown: no prior "
                   f"shift (outline the whole tissue of the validation slides, Tumor and Normal, to calibrate the "
                   f"threshold)")
