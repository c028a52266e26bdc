"""Tile datasets for training and validation, and the sampler that keys them.

Each sample is a tile of ``tile_px × tile_px`` pixels at ``mpp`` µm/px, read by pyramid level
(``Slide.read_region_mpp``: never a whole level) and labelled by rasterising the polygons of its
:class:`~qupath_camseg.train.images.LabelledImage`.

Sampling is class-balanced: a fraction of tiles is centred inside a target-class region, a
fraction on its border (so edges are learned), a fraction inside the negative regions (annotations
of other classes, e.g. ``Normal``: corrected false positives; only when there are some), the rest
anywhere on *tissue* (never blank glass) - except with ``unannotated="ignore"``, where tissue no
annotation covers teaches nothing and that share goes to the negative regions too.
Every sample is a pure function of ``(seed, epoch, index)``: a key ``(epoch, index)`` drawn by
:class:`TileSampler` fully determines position, image and augmentation, so training is
reproducible with ``--seed``, independent of the number of workers, and resumable mid-epoch
(the sampler's state is just ``(epoch, position)``). The sampler shards keys across distributed
ranks.

Datasets keep one slide handle per DataLoader worker (opened lazily, never pickled), as wsinfer does.
With ``stains`` (``--stain-norm``), each image's tiles are stain-normalised as they are read
(:mod:`qupath_camseg.train.stain_fit`), before augmentation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from qupath_camseg.train.augment import IDENTITY_PARAMS, AugmentConfig, augment_tile
from qupath_camseg.train.config import SamplingConfig
from qupath_camseg.train.images import IGNORE_INDEX, LabelledImage
from qupath_camseg.wsi import Slide, StainTransform, open_slide

__all__ = ["TileSampler", "TrainTileDataset", "ValTileDataset", "val_tiles"]

#: A tile to read: ``(image index, level-0 box (x, y, w, h) in px)``.
TileKey = tuple[int, tuple[int, int, int, int]]


def val_tiles(
    images: Sequence[LabelledImage], *, max_tiles: int, seed: int
) -> list[TileKey]:
    """Validation tiles ``(image index, level-0 box)``: each image's non-overlapping tissue grid.

    When there are more than ``max_tiles``, a fixed random subset (``seed``) is kept.
    """
    out: list[TileKey] = []
    for i, img in enumerate(images):
        size = int(round(img.tile_px_level0))
        out.extend((i, (int(x), int(y), size, size)) for x, y in img.grid_xy)
    if len(out) > max_tiles:
        rng = np.random.default_rng([seed, 7919])
        keep = np.sort(rng.choice(len(out), max_tiles, replace=False))
        out = [out[k] for k in keep]
    return out


class _SlideReader:
    """Lazily opened slide handles, one set per process (DataLoader worker); never pickled."""

    def __init__(self, images: Sequence[LabelledImage], mpp: float, tile_px: int,
                 stains: Sequence[StainTransform] | None = None) -> None:
        self.images = list(images)
        self.stains = list(stains) if stains is not None else None
        if self.stains is not None and len(self.stains) != len(self.images):
            raise ValueError(f"{len(self.stains)} stain transforms for {len(self.images)} images")
        self.mpp = mpp
        self.tile_px = tile_px
        self._handles: dict[int, Slide] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def read(self, index: int, box_px: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
        if self._pid != os.getpid():  # forked worker: never share the parent's file handles
            self._handles, self._pid = {}, os.getpid()
        slide = self._handles.get(index)
        if slide is None:
            img = self.images[index]
            slide = self._handles[index] = open_slide(img.path, mpp=img.mpp_override)
        rgb = np.asarray(slide.read_region_mpp(box_px, self.mpp, out_size=(self.tile_px, self.tile_px)))
        return rgb if self.stains is None else self.stains[index](rgb)

    def close(self) -> None:
        for slide in self._handles.values():
            slide.close()
        self._handles = {}


def _to_tensors(rgb: npt.NDArray[np.uint8], label: npt.NDArray[np.uint8]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` uint8 tensor; label ``(H, W)`` uint8 tensor.

    The inputs may be strided views (a dihedral transform): each is copied exactly once.
    """
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), torch.from_numpy(np.ascontiguousarray(label))


class TrainTileDataset(torch.utils.data.Dataset):
    """Class-balanced random tiles. Index with a key ``(epoch, i)`` from :class:`TileSampler`.

    Returns ``(image uint8 (3, T, T), label uint8 (T, T), photometric params float32 (9,))``
    (dihedral transforms already applied); convert to float and apply
    :func:`qupath_camseg.train.augment.photometric` on the device.
    """

    def __init__(
        self,
        images: Sequence[LabelledImage],
        *,
        mpp: float,
        tile_px: int,
        seed: int,
        sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 - frozen dataclass
        augment: AugmentConfig | None = AugmentConfig(),  # noqa: B008 - frozen dataclass
        stains: Sequence[StainTransform] | None = None,
    ) -> None:
        self.reader = _SlideReader(images, mpp, tile_px, stains)
        self.images = self.reader.images
        self.tile_px, self.seed, self.sampling, self.augment = tile_px, seed, sampling, augment
        labels = sorted({lab for img in self.images for lab in img.regions})
        self._labels = labels
        # per target label: image weights by area; tissue: weights by number of tissue tiles
        self._label_w = {lab: _normalise([img.region_area(lab) for img in self.images]) for lab in labels}
        self._tissue_w = _normalise([float(len(img.tissue_xy)) for img in self.images])
        self._negative_w = _normalise([img.negative_area() for img in self.images])
        inside, border = (sampling.inside_fraction, sampling.border_fraction) if labels else (0.0, 0.0)
        negative = [sampling.negative_fraction] if self._negative_w is not None else []  # kind 3
        rest = max(0.0, 1.0 - inside - border - sum(negative))
        if negative and all(img.fill == IGNORE_INDEX for img in self.images):
            # unannotated tissue is left out of the loss: a tile there teaches (almost) nothing, so
            # its share goes to the negative regions the user did outline (else the tumour tiles
            # outweigh every correction and a fine-tune over-calls tumour)
            negative, rest = [negative[0] + rest], 0.0
        self._kind_p = np.array([inside, border, rest, *negative])
        if self._tissue_w is None:  # no tissue tile anywhere: only annotated regions
            self._kind_p[2] = 0.0
        self._kind_p = self._kind_p / self._kind_p.sum()

    def __len__(self) -> int:  # keys are drawn by TileSampler; length is not meaningful
        return 2**31 - 1

    def sample_box(self, rng: np.random.Generator) -> TileKey:
        """Draw ``(image index, level-0 box)`` for one training tile."""
        kind = int(rng.choice(len(self._kind_p), p=self._kind_p))
        if kind < 2:
            label = self._labels[int(rng.integers(len(self._labels)))]
            idx = int(rng.choice(len(self.images), p=self._label_w[label]))
            img = self.images[idx]
            cx, cy = img.inside_point(label, rng) if kind == 0 else img.border_point(label, rng)
        elif kind == 3:  # inside a negative region
            idx = int(rng.choice(len(self.images), p=self._negative_w))
            img = self.images[idx]
            cx, cy = img.inside_point(0, rng)
        else:
            idx = int(rng.choice(len(self.images), p=self._tissue_w))
            img = self.images[idx]
            ox, oy = img.tissue_xy[int(rng.integers(len(img.tissue_xy)))]
            cx, cy = ox + img.tile_px_level0 / 2, oy + img.tile_px_level0 / 2
        t0 = img.tile_px_level0
        jitter = self.sampling.jitter * t0
        cx, cy = cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter)
        w, h = img.dimensions
        x = min(max(cx - t0 / 2, 0.0), max(w - t0, 0.0))
        y = min(max(cy - t0 / 2, 0.0), max(h - t0, 0.0))
        size = int(round(t0))
        return idx, (int(round(x)), int(round(y)), size, size)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        idx, box = self.sample_box(rng)
        rgb = self.reader.read(idx, box)
        label = self.images[idx].label_tile(box, (self.tile_px, self.tile_px))
        params = IDENTITY_PARAMS
        if self.augment is not None:
            rgb, label, params = augment_tile(rgb, label, rng, self.augment, copy=False)
        return (*_to_tensors(rgb, label), torch.from_numpy(params))


class ValTileDataset(torch.utils.data.Dataset):
    """Fixed validation tiles (no augmentation); index ``k`` → ``(image (3, T, T), label (T, T))``."""

    def __init__(
        self,
        images: Sequence[LabelledImage],
        tiles: Sequence[TileKey],
        *,
        mpp: float,
        tile_px: int,
        stains: Sequence[StainTransform] | None = None,
    ) -> None:
        self.reader = _SlideReader(images, mpp, tile_px, stains)
        self.images = self.reader.images
        self.tiles = list(tiles)
        self.tile_px = tile_px

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, box = self.tiles[k]
        rgb = self.reader.read(idx, box)
        return _to_tensors(rgb, self.images[idx].label_tile(box, (self.tile_px, self.tile_px)))


class TileSampler(torch.utils.data.Sampler):
    """Keys ``(epoch, i)`` for one epoch of ``steps × batch_size × world_size`` tiles.

    Rank ``r`` of ``world_size`` gets ``i ≡ r (mod world_size)``, so ranks never repeat a tile
    and the union over ranks equals the single-process epoch. :meth:`set_epoch` with
    ``skip_batches`` resumes mid-epoch exactly where a checkpoint left off.
    """

    def __init__(self, steps_per_epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, *, skip_batches: int = 0) -> None:
        """Iterate epoch ``epoch`` next, starting after ``skip_batches`` batches."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = self.skip_batches * self.batch_size
        for j in range(start, self.steps_per_epoch * self.batch_size):
            yield (self.epoch, j * self.world_size + self.rank)


def _normalise(weights: Sequence[float]) -> npt.NDArray[np.float64] | None:
    w = np.asarray(weights, np.float64)
    total = w.sum()
    return None if not math.isfinite(total) or total <= 0 else w / total
