"""Class priors of a training run: what the sampler fed the network, and what the tissue holds.

Training tiles are class-balanced (:class:`~qupath_camseg.train.config.SamplingConfig`: by default
35 % centred inside a target region, 15 % on its border, the rest anywhere on tissue), so the
network learns the class frequencies of the *sampled* tiles, not of the slides. The prior shift of
:mod:`qupath_camseg.model.calibration` needs both:

* **sampled prior** ``π_sampled[c]``: the fraction of labelled pixels of class ``c`` in the tiles
  training drew. The keys ``(epoch, index)`` of every tile drawn are known (each tile is a pure
  function of its key, see :mod:`qupath_camseg.train.datasets`), so up to ``max_tiles`` of them
  are drawn again, uniformly, and only their labels are rasterised (no pixels read);
* **true prior** ``π_true[c]``: the same fraction over the tissue of the training slides: up to
  ``max_tiles`` tiles drawn uniformly from every training slide's tissue tiles (those the sampler
  draws its random negatives from), i.e. what training would have seen without oversampling.

Labels are rasterised at ``label_px × label_px`` per tile (pixel centres: an unbiased estimate of
the area fractions); pixels labelled 255 (``Ignore*`` classes) are left out, as in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qupath_camseg.train.datasets import TrainTileDataset
from qupath_camseg.train.images import IGNORE_INDEX, LabelledImage

__all__ = ["ClassPriors", "sampled_label_counts", "tissue_label_counts", "training_priors"]

_LABEL_PX = 64  # label raster per tile: 4096 pixel centres


@dataclass(frozen=True)
class ClassPriors:
    """Pixel counts per output channel (background first) of the sampled tiles and of the tissue,
    and how many tiles each came from. ``sampled`` / ``true``: the priors (counts + 1, normalised,
    so no class has probability 0)."""

    sampled_counts: npt.NDArray[np.float64]
    true_counts: npt.NDArray[np.float64]
    sampled_tiles: int
    true_tiles: int

    @property
    def sampled(self) -> npt.NDArray[np.float64]:
        return _normalised(self.sampled_counts)

    @property
    def true(self) -> npt.NDArray[np.float64]:
        return _normalised(self.true_counts)

    @property
    def logit_bias(self) -> npt.NDArray[np.float64]:
        """``log(π_true / π_sampled)`` per channel: the prior shift of the logits."""
        return np.log(self.true) - np.log(self.sampled)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: both priors and the tiles they were estimated from."""
        return {"sampled": [float(v) for v in self.sampled], "true": [float(v) for v in self.true],
                "sampled_tiles": self.sampled_tiles, "true_tiles": self.true_tiles, "label_px": _LABEL_PX}


def _normalised(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    c = counts + 1.0
    return c / c.sum()


def _count(labels: npt.NDArray[np.uint8], n_channels: int) -> npt.NDArray[np.float64]:
    lab = labels[labels != IGNORE_INDEX].astype(np.int64)
    return np.bincount(lab, minlength=n_channels)[:n_channels].astype(np.float64)


def sampled_label_counts(dataset: TrainTileDataset, *, tiles_drawn: int, tiles_per_epoch: int, n_channels: int,
                         max_tiles: int, seed: int) -> tuple[npt.NDArray[np.float64], int]:
    """Label pixel counts per channel of up to ``max_tiles`` of the ``tiles_drawn`` tiles training
    drew (global tile ``g`` has key ``(g // tiles_per_epoch, g % tiles_per_epoch)``), and how many
    tiles were counted. ``tiles_per_epoch``: keys per epoch over all ranks."""
    n = min(tiles_drawn, max_tiles)
    rng = np.random.default_rng([seed, 4099])
    chosen = np.sort(rng.choice(tiles_drawn, n, replace=False)) if n < tiles_drawn else np.arange(tiles_drawn)
    counts = np.zeros(n_channels, np.float64)
    for g in chosen:
        epoch, index = divmod(int(g), tiles_per_epoch)
        idx, box = dataset.sample_box(np.random.default_rng([dataset.seed, epoch, index]))
        counts += _count(dataset.images[idx].label_tile(box, (_LABEL_PX, _LABEL_PX)), n_channels)
    return counts, int(n)


def tissue_label_counts(images: Sequence[LabelledImage], *, n_channels: int, max_tiles: int,
                        seed: int) -> tuple[npt.NDArray[np.float64], int]:
    """Label pixel counts per channel of up to ``max_tiles`` tissue tiles drawn uniformly from all
    of ``images``' tissue tiles, and how many tiles were counted."""
    ends = np.cumsum([len(img.tissue_xy) for img in images]) if images else np.zeros(0, np.int64)
    total = int(ends[-1]) if len(ends) else 0
    if total == 0:
        return np.zeros(n_channels, np.float64), 0
    rng = np.random.default_rng([seed, 8191])
    n = min(total, max_tiles)
    chosen = np.sort(rng.choice(total, n, replace=False))
    counts = np.zeros(n_channels, np.float64)
    for g in chosen:
        i = int(np.searchsorted(ends, g, side="right"))
        k = int(g) - (int(ends[i - 1]) if i else 0)
        img = images[i]
        size = round(img.tile_px_level0)
        x, y = (int(v) for v in img.tissue_xy[k])
        counts += _count(img.label_tile((x, y, size, size), (_LABEL_PX, _LABEL_PX)), n_channels)
    return counts, int(n)


def training_priors(dataset: TrainTileDataset, *, tiles_drawn: int, tiles_per_epoch: int, n_channels: int,
                    max_tiles: int = 2048) -> ClassPriors | None:
    """Both priors of a run (``None`` when no tile was drawn or no tissue tile exists)."""
    if tiles_drawn < 1:
        return None
    sampled, n_sampled = sampled_label_counts(dataset, tiles_drawn=tiles_drawn, tiles_per_epoch=tiles_per_epoch,
                                              n_channels=n_channels, max_tiles=max_tiles, seed=dataset.seed)
    true, n_true = tissue_label_counts(dataset.images, n_channels=n_channels, max_tiles=max_tiles, seed=dataset.seed)
    if n_true == 0 or true.sum() <= 0 or sampled.sum() <= 0:
        return None
    return ClassPriors(sampled, true, n_sampled, n_true)
