"""Scores over a set of evaluated slides, and the split into the headline set and training slides.

The headline scores of ``qcamseg evaluate`` are over the slides the model did not train on (roles
from :mod:`qupath_camseg.evaluate.roles`: ``val``, ``unseen`` and ``unknown``); the ``train`` slides
are scored apart. ``all_slides`` pools every slide (the behaviour before roles existed). When every
slide is a training slide, those are the headline with a warning (scope ``training_only``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qupath_camseg.evaluate._json import json_float
from qupath_camseg.evaluate.auc import roc_auc
from qupath_camseg.evaluate.calibration import HeatmapCalibration
from qupath_camseg.evaluate.lesion_froc import FROCResult, froc
from qupath_camseg.evaluate.pixels import PixelCounts, pooled_counts

if TYPE_CHECKING:
    from qupath_camseg.evaluate.project import SlideEvaluation

__all__ = ["SCOPES", "SetSummary", "split_headline", "summarise_set"]

SCOPES = ("held_out", "all_slides", "training_only")
"""What the headline scores are over: the slides not trained on, every slide, or (a warning) only
training slides."""


@dataclass(frozen=True)
class SetSummary:
    """Scores over a set of slides: the FROC, pooled pixel counts, slide AUC, mean per-slide Dice
    and the heatmaps' calibration on tissue (``None`` when no slide has a heatmap)."""

    names: list[str]
    froc: FROCResult
    pooled: PixelCounts
    auc: float
    mean_dice: float
    calibration: HeatmapCalibration | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: pooled scores, mean Dice, FROC score (``None`` and a ``froc_note`` without
        lesions), slide AUC, ECE and mean tumour probability on normal tissue, the slides."""
        out: dict[str, Any] = {f"pooled_{k}": json_float(v) for k, v in self.pooled.scores().items()}
        out.update(mean_dice=json_float(self.mean_dice), froc_score=json_float(self.froc.score),
                   slide_auc=json_float(self.auc), n_slides=len(self.names), n_lesions=self.froc.n_lesions,
                   images=list(self.names))
        if not self.froc.n_lesions:
            out["froc_note"] = "no lesions: these slides' ground truth holds no tumour lesion (ITCs aside)"
        cal = self.calibration
        out["ece"] = json_float(cal.bins.ece) if cal is not None else None
        out["mean_prob_normal_tissue"] = json_float(cal.mean_normal_prob) if cal is not None else None
        return out


def summarise_set(slides: Sequence[SlideEvaluation]) -> SetSummary:
    """The scores over ``slides`` (at least one)."""
    dices = [s.pixels.dice for s in slides if not math.isnan(s.pixels.dice)]
    cals = [s.calibration for s in slides if s.calibration is not None]
    calibration = sum(cals[1:], cals[0]) if cals else None
    return SetSummary(
        [s.image_name for s in slides], froc([s.lesions for s in slides]), pooled_counts(s.pixels for s in slides),
        roc_auc([s.has_tumor for s in slides], [s.slide_score for s in slides]),
        float(np.mean(dices)) if dices else math.nan, calibration,
    )


def split_headline(slides: Sequence[SlideEvaluation], *, all_slides: bool,
                   warnings: list[str]) -> tuple[str, SetSummary, SetSummary | None]:
    """``(scope, headline, training)``: the headline set's scores and, apart, the training slides'
    (``None`` when there are none or they are in the headline). A warning is appended when only
    training slides exist."""
    if all_slides:
        return "all_slides", summarise_set(slides), None
    held = [s for s in slides if s.role != "train"]
    trained = [s for s in slides if s.role == "train"]
    if not held:
        warnings.append(f"every evaluated slide ({', '.join(s.image_name for s in trained)}) was used to train "
                        "the model: these scores are on training slides and say little about new slides; "
                        "predict slides the model never saw (or held out with --val-images) and evaluate those")
        return "training_only", summarise_set(trained), None
    return "held_out", summarise_set(held), summarise_set(trained) if trained else None
