"""Calibrated probabilities: the logit transform a model folder may carry (``model.json``'s
``calibration``), applied to the network's logits before the softmax.

Training oversamples the target classes (tiles centred inside and on the border of tumour), so
the raw softmax answers "how likely is tumour *among the tiles training drew*", not "among the
tissue of a slide". :mod:`qupath_camseg.train.calibrate` fits two corrections after training and
stores them here:

* a **prior shift** per output channel ``c``: ``logit_bias[c] = log(π_true[c] / π_sampled[c])``
  (Bayes' rule for a change of class priors: ``p_true(c|x) ∝ p_sampled(c|x) · π_true[c] /
  π_sampled[c]``); with two channels this shifts the tumour-vs-background logit by
  ``log(true prior odds / sampled prior odds)``;
* a **temperature** ``T > 0`` fitted on the validation slides (minimum negative log-likelihood).

The calibrated probabilities are ``softmax(logits / T + logit_bias)`` over the channel axis
(background first). A model folder without ``calibration`` keeps the raw softmax, so older
folders give exactly the probabilities they always gave.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from qupath_camseg.errors import ModelBundleError

__all__ = ["Calibration"]

#: The formula, as ``model.json`` records it.
FORMULA = "softmax(logits / temperature + logit_bias)"


@dataclass(frozen=True)
class Calibration:
    """``softmax(logits / temperature + logit_bias)``: ``temperature`` > 0, ``logit_bias`` one
    finite number per output channel (background first). ``details``: how both were estimated
    (priors, tiles and pixels used, ECE before/after), kept for provenance only."""

    temperature: float
    logit_bias: tuple[float, ...]
    details: Mapping[str, Any] = field(default_factory=dict)
    _bias: dict[tuple[torch.device, torch.dtype], torch.Tensor] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ModelBundleError(f"calibration temperature must be a positive number, not {t!r}")
        bias = self.logit_bias
        if not isinstance(bias, Sequence) or isinstance(bias, str) or not bias or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bias
        ):
            raise ModelBundleError(f"calibration logit_bias must be a list of finite numbers, not {bias!r}")
        object.__setattr__(self, "temperature", float(t))
        object.__setattr__(self, "logit_bias", tuple(float(b) for b in bias))
        object.__setattr__(self, "details", dict(self.details))

    @property
    def n_channels(self) -> int:
        """Output channels the bias is for (background + classes)."""
        return len(self.logit_bias)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated logits ``(B, C, H, W)`` (float) for raw logits of the same shape; their softmax
        over ``C`` is the calibrated probability."""
        if logits.shape[1] != self.n_channels:
            raise ModelBundleError(
                f"calibration is for {self.n_channels} output channels, the network gives {logits.shape[1]}; "
                "the model folder mixes two models: retrain it"
            )
        key = (logits.device, logits.dtype)
        bias = self._bias.get(key)
        if bias is None:  # once per device: no host-to-device copy (and sync) per batch
            bias = self._bias[key] = torch.tensor(self.logit_bias, dtype=logits.dtype).view(1, -1, 1, 1).to(
                logits.device)
        return logits * (1.0 / self.temperature) + bias

    def to_json(self) -> dict[str, Any]:
        """The ``calibration`` object of ``model.json``."""
        return {"formula": FORMULA, "temperature": self.temperature, "logit_bias": list(self.logit_bias),
                **dict(self.details)}

    @classmethod
    def from_json(cls, data: Any, *, n_channels: int, source: str) -> Calibration:
        """Validate ``model.json``'s ``calibration`` (:class:`ModelBundleError` naming ``source``)."""
        if not isinstance(data, dict):
            raise ModelBundleError(f"{source}: calibration must be an object; retrain or delete the key")
        details = {k: v for k, v in data.items() if k not in ("formula", "temperature", "logit_bias")}
        try:
            cal = cls(data.get("temperature"), data.get("logit_bias"), details)  # type: ignore[arg-type]
        except ModelBundleError as err:
            raise ModelBundleError(f"{source}: {err}; retrain the model or delete the calibration key") from err
        if cal.n_channels != n_channels:
            raise ModelBundleError(
                f"{source}: calibration has {cal.n_channels} logit_bias values for {n_channels} output "
                "channels; retrain the model or delete the calibration key"
            )
        return cal
