"""The DataLoaders of a training run: keyed training tiles, fixed validation tiles, worker counts.

Loader workers (``--workers``, else :func:`~qupath_camseg._runtime.default_loader_workers`)
read and augment tiles on the CPU, one thread each, and hand batches over through ``/dev/shm``;
their number is fitted to the shared memory there is (:func:`_fit_shared_memory`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from qupath_camseg._dist import Dist
from qupath_camseg._runtime import (
    configure_cpu_threads,
    default_loader_workers,
    file_size_limit,
    mp_context,
    shm_free_bytes,
    workers_fitting_shm,
)
from qupath_camseg.train.collect import TrainingData
from qupath_camseg.train.config import TrainConfig
from qupath_camseg.train.datasets import (
    TileSampler,
    TrainTileDataset,
    ValTileDataset,
    val_tiles,
)
from qupath_camseg.train.stain_fit import TrainingStains

__all__ = ["Loaders", "build_loaders"]

log = logging.getLogger(__name__)
_PREFETCH_BATCHES = 4  # per training worker


@dataclass
class Loaders:
    """The training loader (keys from ``sampler``: set its epoch before iterating) and the
    validation loader (``None`` without validation images), each over this rank's tiles."""

    sampler: TileSampler
    train: DataLoader
    val: DataLoader | None

    def close(self) -> None:
        """Close the slides the datasets opened in this process."""
        for ds in (self.train.dataset, self.val.dataset if self.val is not None else None):
            if ds is not None:
                ds.reader.close()


def build_loaders(
    data: TrainingData, config: TrainConfig, *, device: torch.device, dist: Dist, steps_per_epoch: int,
    stains: TrainingStains | None = None,
) -> Loaders:
    """Loaders over ``data`` for ``steps_per_epoch`` steps of ``config.batch_size`` tiles per rank
    (tiles stain-normalised by ``stains`` when given)."""
    sampler = TileSampler(steps_per_epoch, config.batch_size, rank=dist.rank, world_size=dist.world_size)
    train_ds = TrainTileDataset(
        data.train_images,
        mpp=config.mpp,
        tile_px=config.tile_px,
        seed=config.seed,
        sampling=config.sampling,
        augment=config.augment,
        stains=stains.train if stains is not None else None,
    )
    workers = config.workers if config.workers is not None else default_loader_workers(str(device), dist.world_size)
    workers = _fit_shared_memory(workers, batch_bytes=config.batch_size * config.tile_px**2 * 4,
                                 given=config.workers is not None)
    # the model's threads: the cores left free (loader workers each use about half a core on a CPU)
    configure_cpu_threads(device.type, busy_workers=0.5 * workers if device.type == "cpu" else 0.0)
    loader_kw: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": _worker_init if workers else None,
    }
    if workers:
        loader_kw.update(persistent_workers=True, prefetch_factor=_PREFETCH_BATCHES, multiprocessing_context=mp_context())
    loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, **loader_kw)
    val_loader = None
    if data.val_images:
        tiles = val_tiles(data.val_images, max_tiles=config.max_val_tiles, seed=config.seed)
        val_ds = ValTileDataset(
            data.val_images, tiles[dist.rank :: dist.world_size], mpp=config.mpp, tile_px=config.tile_px,
            stains=stains.val if stains is not None else None,
        )
        val_loader = DataLoader(
            val_ds,
            batch_size=config.batch_size,
            shuffle=False,
            **{**loader_kw, "persistent_workers": False, "prefetch_factor": 2 if workers else None},
        )
    return Loaders(sampler, loader, val_loader)


def _fit_shared_memory(workers: int, *, batch_bytes: int, given: bool) -> int:
    """Workers whose batches in flight (``_PREFETCH_BATCHES`` of ``batch_bytes`` each) fit in half
    of ``/dev/shm``: containers often give it 64 MB, and workers that run out of it die with a
    bus error. A number the user gave is kept, with a warning. Under a file-size limit (``ulimit -f``)
    smaller than a batch no worker can hand one over: tiles are then loaded in this process."""
    limit = file_size_limit()
    if workers and limit is not None and limit < batch_bytes:
        log.warning("the file-size limit (ulimit -f) is %d KB, less than one batch of tiles (%d KB) that loader "
                    "workers hand over in shared memory: loading tiles in the main process (slower)",
                    limit >> 10, batch_bytes >> 10)
        return 0
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
    """Each loader worker computes on one thread (the workers together use the cores)."""
    torch.set_num_threads(1)
