"""Validation of one epoch: pixel Dice/IoU per class on the held-out slides' tiles, and the loss."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from qupath_camseg._dist import Dist
from qupath_camseg.train.images import IGNORE_INDEX
from qupath_camseg.train.loss import dice_ce_loss
from qupath_camseg.train.placement import Placement

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    classes: Sequence[dict[str, Any]],
    *,
    placement: Placement,
    dist: Dist,
) -> dict[str, Any]:
    """Pixel Dice/IoU per class and mean over classes (labels 255 excluded), and the loss.

    ``batches``: uint8 ``(image (N, 3, T, T), label (N, T, T))``; ``classes``: the foreground
    classes in output-channel order (``{"name": ...}``). Counts are summed over ranks. Returns
    ``val_loss``, ``val_dice``, ``val_iou`` (``None`` where undefined), ``val_tiles`` and ``per_class``.
    """
    model.eval()
    n_classes = len(classes)
    counts = torch.zeros(n_classes, 3, dtype=torch.float64)  # tp, fp, fn
    loss_sum = torch.zeros(2, dtype=torch.float64)  # loss · tiles, tiles
    for images, labels in batches:
        x = placement.inputs(images)
        y = placement.targets(labels)
        with placement.autocast():
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
