"""Slide → tiles for whole-slide inference: the tiles of a :class:`~qupath_camseg.predict.chunks.TilePlan`
read at the model's pixel size, on reader threads or in DataLoader worker processes.

Overlapping windows share most of their pixels and, at unaligned offsets, each would decode up
to four stored (JPEG) tiles of the file; :class:`TileReader` cuts windows from stored-tile-aligned
*blocks*, each decoded once into a small LRU shared by its threads (:class:`BlockCache`), with
pixels identical to :meth:`~qupath_camseg.wsi.slides.Slide.read_region_mpp`. :class:`TileBatches`
gives whole batches to :class:`torch.utils.data.DataLoader` workers (each with its own reader),
so decoding runs outside the main process's GIL; :func:`use_read_processes` picks one or the other.
A model trained with stain normalisation gets each tile normalised by the reader (a
:class:`~qupath_camseg.wsi.stain.StainTransform`: the same bytes on threads and in processes).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from qupath_camseg._runtime import file_size_limit, workers_fitting_shm
from qupath_camseg.errors import InvalidSettingsError
from qupath_camseg.predict.chunks import TilePlan
from qupath_camseg.wsi import Slide, StainTransform, open_slide, resample

__all__ = ["BLOCK_CACHE_BYTES", "BlockCache", "PREFETCH_BATCHES", "ReaderArgs", "TileBatches", "TileReader",
           "thread_batches", "use_read_processes"]

#: What a :class:`TileReader` is opened with: ``(slide path, µm/px override or None, plan, model µm/px,
#: stain transform or None)``.
ReaderArgs = tuple[Path, float | None, TilePlan, float, StainTransform | None]


class BlockCache:
    """Decoded level blocks shared by the reader threads: a bounded LRU in which each block is
    decoded once even when several threads ask for it at the same time (the others wait)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._blocks: OrderedDict[Hashable, _Block] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0

    def get(self, key: Hashable, load: Callable[[], npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
        """The block ``key``, decoded by ``load()`` unless cached or being decoded by another thread."""
        with self._lock:
            entry = self._blocks.get(key)
            owner = entry is None
            if owner:
                entry = self._blocks[key] = _Block()
                while len(self._blocks) > self.capacity:
                    self._blocks.popitem(last=False)  # waiters keep their own reference
            else:
                self._blocks.move_to_end(key)
        if owner:
            try:
                entry.value = load()
                self.decoded += 1
            except BaseException as err:
                entry.error = err
                with self._lock:
                    if self._blocks.get(key) is entry:
                        del self._blocks[key]
                raise
            finally:
                entry.ready.set()
        else:
            entry.ready.wait()
            if entry.error is not None:
                raise entry.error
        return entry.value  # type: ignore[return-value]


class _Block:
    __slots__ = ("error", "ready", "value")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: npt.NDArray[np.uint8] | None = None
        self.error: BaseException | None = None


#: Most memory the reader's block cache may hold (decoded RGB), bytes; 0 reads every tile directly.
BLOCK_CACHE_BYTES = 128 << 20


class TileReader:
    """Reads tiles on a thread pool; each thread opens its own slide handle.

    Overlapping tiles share most of their pixels and, at unaligned offsets, each would decode up
    to four stored (JPEG) tiles of the file. So tiles are cut from *blocks* aligned to the file's
    stored tiles at the read level, each decoded once and kept in a small LRU (:class:`BlockCache`,
    about two tile rows of a stripe). The pixels are identical to
    :meth:`~qupath_camseg.wsi.slides.Slide.read_region_mpp`, then normalised by ``stain`` if given.
    """

    def __init__(self, slide_path: Path, slide_mpp: float | None, plan: TilePlan, model_mpp: float,
                 stain: StainTransform | None = None) -> None:
        self.path, self.mpp_override, self.plan, self.model_mpp = slide_path, slide_mpp, plan, model_mpp
        self.stain = stain if stain is not None and not stain.is_identity else None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slides: list[Slide] = []
        self._cache: BlockCache | None = None

    def _slide(self) -> Slide:
        """This thread's slide handle (opened on first use)."""
        slide: Slide | None = getattr(self._local, "slide", None)
        if slide is None:
            slide = open_slide(self.path, mpp=self.mpp_override)
            self._local.slide = slide
            with self._lock:
                self._slides.append(slide)
        return slide

    def _block_px(self, slide: Slide, level: int) -> tuple[int, int]:
        stored = slide.stored_tile_px(level)
        if stored is None or not (64 <= min(stored) and max(stored) <= 4096):
            return 512, 512  # still aligned to any power-of-two tiling up to 512
        return stored

    def read(self, ty: int, tx: int) -> npt.NDArray[np.uint8]:
        """Tile ``(row, col)`` as RGB ``uint8 (tile_px, tile_px, 3)``; outside the slide is white."""
        tile = self._read(ty, tx)
        return tile if self.stain is None else self.stain(tile)

    def _read(self, ty: int, tx: int) -> npt.NDArray[np.uint8]:
        slide = self._slide()
        p, t = self.plan, self.plan.tile_px
        box = (p.tile_origin(tx) * p.ds, p.tile_origin(ty) * p.ds, t * p.ds, t * p.ds)
        if BLOCK_CACHE_BYTES <= 0:  # cache off (benchmarks compare with it)
            return slide.read_region_mpp(box, self.model_mpp, out_size=(t, t))
        level, (x, y, w, h), src, size = slide.mpp_geometry(box, self.model_mpp, (t, t))
        return resample(self._region(slide, level, x, y, w, h), src, size)

    def _region(self, slide: Slide, level: int, x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        """Level pixels ``[x, x+w) × [y, y+h)`` (as ``Slide.read_level``) from cached blocks."""
        bw, bh = self._block_px(slide, level)
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    p = self.plan
                    level_px = p.ds / slide.level_downsamples[level]  # level px per map px
                    across = math.ceil((p.stripe_chunks * p.chunk_px + p.tile_px) * level_px / bw) + 2
                    down = math.ceil((p.tile_px + 4 * p.stride_px) * level_px / bh) + 2
                    self._cache = BlockCache(min(across * down, max(4, BLOCK_CACHE_BYTES // (3 * bw * bh))))
        cache = self._cache
        out = np.empty((h, w, 3), dtype=np.uint8)
        for by in range(y // bh, (y + h - 1) // bh + 1):
            for bx in range(x // bw, (x + w - 1) // bw + 1):
                block = cache.get((level, bx, by), lambda bx=bx, by=by: slide.read_level(level, bx * bw, by * bh, bw, bh))
                x0, y0 = max(x, bx * bw), max(y, by * bh)
                x1, y1 = min(x + w, (bx + 1) * bw), min(y + h, (by + 1) * bh)
                out[y0 - y:y1 - y, x0 - x:x1 - x] = block[y0 - by * bh:y1 - by * bh, x0 - bx * bw:x1 - bx * bw]
        return out

    def close(self) -> None:
        """Close every thread's slide handle."""
        for s in self._slides:
            s.close()


class TileBatches(torch.utils.data.Dataset):
    """Batches of tiles for :class:`torch.utils.data.DataLoader` worker processes.

    Item ``i`` is ``uint8 (B, tile_px, tile_px, 3)`` for the tiles ``batches[i]``. Each worker
    process opens the slide itself (its own :class:`TileReader`, block cache included), so tile
    decoding, resampling and stacking run outside the main process's GIL; the loader hands the
    batches over in shared memory (pinned for CUDA).
    """

    def __init__(self, reader_args: ReaderArgs, batches: list[list[tuple[int, int]]]) -> None:
        self.reader_args, self.batches = reader_args, batches
        self._reader: TileReader | None = None  # opened on first use, inside the worker

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._reader is None:
            self._reader = TileReader(*self.reader_args)
        t = self._reader.plan.tile_px
        out = torch.empty((len(self.batches[i]), t, t, 3), dtype=torch.uint8)
        if torch.utils.data.get_worker_info() is not None:
            out.share_memory_()  # filled in place: handing it to the main process copies nothing
        arr = out.numpy()
        for k, (ty, tx) in enumerate(self.batches[i]):
            arr[k] = self._reader.read(ty, tx)
        return out


def thread_batches(pool: Executor, reader: TileReader, batches: list[list[tuple[int, int]]],
                   ahead: int) -> Iterator[npt.NDArray[np.uint8]]:
    """Stacked batches ``uint8 (B, tile_px, tile_px, 3)`` read tile by tile on a thread pool,
    keeping ``ahead`` tiles in flight."""
    tiles = [t for b in batches for t in b]
    futures: list[Future[npt.NDArray[np.uint8]] | None] = [pool.submit(reader.read, *t) for t in tiles[:ahead]]
    i = 0
    for batch in batches:
        futures += [pool.submit(reader.read, *t) for t in tiles[len(futures):i + len(batch) + ahead]]
        out = np.stack([f.result() for f in futures[i:i + len(batch)] if f is not None])
        for j in range(i, i + len(batch)):
            futures[j] = None
        i += len(batch)
        yield out


#: Batches each reader process keeps in flight (DataLoader ``prefetch_factor``).
PREFETCH_BATCHES = 2


def use_read_processes(readers: str, device: str | torch.device, workers: int, *, batch_bytes: int = 0) -> bool:
    """Whether tiles are read in worker processes: ``readers`` is ``"threads"``, ``"processes"``
    or ``"auto"`` (processes on CUDA with ≥ 2 workers: there the GPU outruns what reader threads
    sharing one GIL can decode; on a CPU the model is the bottleneck and threads cost less).
    ``auto`` also keeps threads when ``/dev/shm`` cannot hold twice the batches in flight
    (``batch_bytes`` each; containers often give it 64 MB), where worker processes would die, and
    always under a file-size limit (``ulimit -f``) smaller than a batch (same result, read on threads)."""
    if readers not in ("auto", "threads", "processes"):
        raise InvalidSettingsError(f"readers must be auto, threads or processes, not {readers!r}")
    limit = file_size_limit()
    if limit is not None and limit < batch_bytes:
        return False
    if readers == "auto":
        if torch.device(device).type != "cuda" or workers < 2:
            return False
        fit = workers_fitting_shm(PREFETCH_BATCHES * batch_bytes)
        return fit is None or fit >= workers
    return readers == "processes"
