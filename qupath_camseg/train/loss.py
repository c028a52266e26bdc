"""The training loss: cross-entropy + soft Dice over the foreground classes, ignoring label 255."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qupath_camseg.train.images import IGNORE_INDEX

__all__ = ["dice_ce_loss"]


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
