"""Tiles → model → chunk store: the inference loop of one whole slide.

:func:`run_inference` computes every chunk of the store that is still missing, in four steps:
the work list (per stripe of chunk columns, the active tiles from the first missing band on, in
batches: :func:`_stripe`); the readers (threads sharing one :class:`TileReader`, or DataLoader
worker processes: :class:`_TileSource`); the batch loop of each stripe (tiles → :func:`_forward` →
:class:`~qupath_camseg.predict.blending.StripeAccumulator` → :class:`~qupath_camseg.predict.blending.BandWriter`,
which writes chunks on writer threads: :class:`_Loop`); and finishing (the last rows of each
stripe, then waiting for the chunk writes). The map geometry and the blending are described in
:mod:`qupath_camseg.predict.blending`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import torch
from shapely.geometry.base import BaseGeometry

from qupath_camseg._runtime import cpu_threads_tick, mp_context
from qupath_camseg.errors import CamsegError, SlideReadError
from qupath_camseg.model import Calibration, LoadedModel
from qupath_camseg.predict.blending import BandWriter, ChunkFill, StripeAccumulator, blend_window
from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.predict.options import Progress, no_progress
from qupath_camseg.predict.tile_reader import (
    PREFETCH_BATCHES,
    ReaderArgs,
    TileBatches,
    TileReader,
    thread_batches,
    use_read_processes,
)
from qupath_camseg.wsi import StainTransform, TissueMask

__all__ = ["InferenceStats", "run_inference"]

#: A tile of the plan's grid: ``(row, column)``.
Tile = tuple[int, int]
#: RGB tiles ``uint8 (B, tile_px, tile_px, 3)``: a numpy array (threads) or a CPU tensor (processes).
RGBBatch = npt.NDArray[np.uint8] | torch.Tensor


class InferenceStats(TypedDict):
    """What :func:`run_inference` did: tiles computed, whether reader processes read them, and
    seconds spent (``setup``, ``waiting_for_tiles``, ``model_and_blend``, ``last_rows``,
    ``waiting_for_writes``)."""

    tiles: int
    read_processes: bool
    timings: dict[str, float]


def run_inference(slide_path: Path, slide_mpp: float | None, plan: TilePlan, active: npt.NDArray[np.bool_],
                  store: ChunkStore, lm: LoadedModel, roi: BaseGeometry | None, *, batch_size: int = 16,
                  workers: int = 4, image: str = "", emit: Progress | None = None,
                  on_chunk: Callable[[int, int], None] | None = None, readers: str = "auto",
                  tissue: TissueMask | None = None, stain: StainTransform | None = None,
                  fill: ChunkFill | None = None) -> InferenceStats:
    """Compute every missing chunk of ``store``.

    ``active`` is ``bool (ny, nx)`` (tiles to compute); ``slide_mpp`` overrides the slide's own
    pixel size (µm/px); ``roi`` an optional level-0 geometry and ``tissue`` an optional tissue
    mask, outside which the stored probabilities are zero. ``emit`` receives ``start``, ``note``
    and ``progress`` events; ``on_chunk(row, col)`` is called (on a writer thread) after each
    chunk is stored. ``workers`` tile readers are threads or processes as
    :func:`~qupath_camseg.predict.tile_reader.use_read_processes` decides; ``stain`` (if given)
    normalises each tile as it is read. ``fill`` may replace
    pixels of each chunk before it is masked and stored (see :class:`BandWriter`).
    """
    t_fn = time.perf_counter()
    emit = emit or no_progress
    device = torch.device(lm.device)
    needed = plan.needed_chunks(active)
    window = torch.from_numpy(blend_window(plan.tile_px)).to(device)
    stripes = [s for c0 in range(0, plan.chunk_shape[1], plan.stripe_chunks)
               if (s := _stripe(plan, active, needed, store, c0, batch_size)) is not None]
    total = sum(len(b) for s in stripes for b in s.batches)
    emit({"event": "start", "image": image, "tiles": total, "resumed": store.resumed and total < int(active.sum())})
    processes = _read_processes(readers, device, workers, plan, batch_size, emit, image)
    source = _TileSource((slide_path, slide_mpp, plan, lm.config.mpp, stain), stripes, processes=processes and total > 0,
                         workers=workers, batch_size=batch_size, cuda=device.type == "cuda")
    # chunk files are independent (each zlib + fsync + rename, GIL released), so a few writers
    # keep the fsyncs from queueing up behind one thread at the end of the slide
    writer = ThreadPoolExecutor(max(1, min(4, workers)), thread_name_prefix="qcamseg-write")
    pending: list[Future[None]] = []
    loop = _Loop(lm, device, plan, window, total=total, emit=emit, image=image,
                 pad_to=batch_size if lm.compiled else None)  # one static shape per slide
    try:
        for stripe in stripes:
            band = BandWriter(plan, store, needed, roi, stripe.c0, stripe.c1, stripe.b0, writer, pending,
                              on_chunk, tissue, fill)
            loop.run_stripe(stripe, source.batches(stripe), band)
        t0 = time.perf_counter()
        for f in pending:
            f.result()
        t_writes = time.perf_counter() - t0
    finally:
        source.close()
        writer.shutdown(wait=True)
    return {"tiles": loop.done, "read_processes": source.processes,
            "timings": {"setup": loop.t_start - t_fn, "waiting_for_tiles": loop.t_wait,
                        "model_and_blend": loop.t_model, "last_rows": loop.t_tail, "waiting_for_writes": t_writes}}


@dataclass
class _Stripe:
    """The work of the stripe of chunk columns ``[c0, c1)``: its tiles in ``batches`` (row-major),
    from chunk band ``b0`` on; ``first_row`` is the tile row its accumulator starts at."""

    c0: int
    c1: int
    b0: int
    first_row: int
    batches: list[list[Tile]]


def _stripe(plan: TilePlan, active: npt.NDArray[np.bool_], needed: npt.NDArray[np.bool_], store: ChunkStore,
            c0: int, batch_size: int) -> _Stripe | None:
    """The work of the stripe starting at chunk column ``c0`` (``None``: all its chunks are stored).

    Tiles are listed in row-major order from a batch boundary of the full stripe order, so a
    resumed run forms exactly the batches of an uninterrupted one (bit-identical results).
    """
    c1 = min(plan.chunk_shape[1], c0 + plan.stripe_chunks)
    todo = [r for r in range(plan.chunk_shape[0])
            if any(needed[r, c] and not store.has(r, c) for c in range(c0, c1))]
    if not todo:
        return None
    b0 = todo[0]
    cols = plan.tiles_overlapping(c0 * plan.chunk_px, min(c1 * plan.chunk_px, plan.map_size[0]))
    k0 = plan.tiles_overlapping(b0 * plan.chunk_px, b0 * plan.chunk_px + 1).start
    tiles = [(int(ty), int(tx) + cols.start) for ty, tx in np.argwhere(active[:, cols.start:cols.stop])]
    n0 = next((i for i, (ty, _) in enumerate(tiles) if ty >= k0), len(tiles))
    start = (n0 // batch_size) * batch_size
    tiles = tiles[start:]
    first_row = min(tiles[0][0], k0) if tiles else k0
    return _Stripe(c0, c1, b0, first_row, [tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)])


def _read_processes(readers: str, device: torch.device, workers: int, plan: TilePlan, batch_size: int,
                    emit: Progress, image: str) -> bool:
    """Whether worker processes read the tiles (:func:`use_read_processes`); a note when ``auto``
    would have used them on CUDA but ``/dev/shm`` is too small."""
    batch_bytes = batch_size * plan.tile_px * plan.tile_px * 3
    processes = use_read_processes(readers, device, workers, batch_bytes=batch_bytes)
    if readers == "auto" and device.type == "cuda" and workers >= 2 and not processes:
        emit({"event": "note", "image": image, "message": "/dev/shm is too small for reader processes; reading "
              "tiles with threads (docker: --shm-size 8g)"})
    return processes


class _TileSource:
    """Batches of RGB tiles for the stripes, in order: from one DataLoader over every batch of
    every stripe (``processes``), or read tile by tile on a pool of ``workers`` threads."""

    def __init__(self, reader_args: ReaderArgs, stripes: list[_Stripe], *, processes: bool, workers: int,
                 batch_size: int, cuda: bool) -> None:
        self.slide_path, self.processes = reader_args[0], processes
        self.ahead = max(2 * batch_size, 4 * workers)  # tiles in flight on the threads
        self._loader: Iterator[torch.Tensor] | None = None
        self._reader: TileReader | None = None
        self._pool: ThreadPoolExecutor | None = None
        if processes:
            # workers are forked before any thread of ours starts; they never touch CUDA. Two batches
            # per worker in flight bound the shared memory (16 workers × 2 × 32 tiles of 0.75 MB ≈ 0.8 GB)
            self._loader = iter(torch.utils.data.DataLoader(
                TileBatches(reader_args, [b for s in stripes for b in s.batches]), batch_size=None, shuffle=False,
                num_workers=workers, pin_memory=cuda, prefetch_factor=PREFETCH_BATCHES,
                multiprocessing_context=mp_context()))
        else:
            self._reader = TileReader(*reader_args)
            self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="qcamseg-read")

    def batches(self, stripe: _Stripe) -> Iterator[RGBBatch]:
        """The batches of ``stripe``, read ahead."""
        if self._pool is not None and self._reader is not None:
            return thread_batches(self._pool, self._reader, stripe.batches, self.ahead)
        return (self._next() for _ in stripe.batches)

    def _next(self) -> torch.Tensor:
        if self._loader is None:
            raise RuntimeError("the tile source is closed")
        return _next_from_workers(self._loader, self.slide_path)

    def close(self) -> None:
        """Stop the reader threads (queued reads are cancelled), close their slide handles, and
        stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._reader is not None:
            self._reader.close()
        self._loader = None  # the last reference: stops the worker processes


class _Loop:
    """The batch loop: tiles → model → stripe accumulator → band writer, with progress events
    (at most twice a second, and for the last tile) and the seconds spent in each part."""

    def __init__(self, lm: LoadedModel, device: torch.device, plan: TilePlan, window: torch.Tensor, *, total: int,
                 emit: Progress, image: str, pad_to: int | None) -> None:
        self.lm, self.device, self.plan, self.window, self.pad_to = lm, device, plan, window, pad_to
        self.cuda = device.type == "cuda"
        self.total, self.emit, self.image = total, emit, image
        self.done, self.last = 0, 0.0
        self.t_wait = self.t_model = self.t_tail = 0.0
        self.t_start = time.perf_counter()

    def run_stripe(self, stripe: _Stripe, source: Iterator[RGBBatch], band: BandWriter) -> None:
        """Compute ``stripe``'s batches (read from ``source``) and hand every finished row to ``band``."""
        plan = self.plan
        x0, x1 = stripe.c0 * plan.chunk_px, min(stripe.c1 * plan.chunk_px, plan.map_size[0])
        acc = StripeAccumulator(plan, x0, x1, len(self.lm.config.classes), stripe.first_row, self.window)
        for batch in stripe.batches:
            cpu_threads_tick()  # the model's threads follow the cores other processes leave free
            t0 = time.perf_counter()
            rgb = next(source)
            t1 = time.perf_counter()
            probs = _forward(self.lm.model, rgb, self.device, self.cuda, pad_to=self.pad_to,
                             calibration=self.lm.config.calibration)
            for (ty, tx), p in zip(batch, probs):
                while acc.row < ty:
                    band.put(*acc.finish_row())
                acc.add(tx, p)
            # no per-batch torch.cuda.synchronize: the next batch is read and stacked while the
            # GPU works (tile rows sync in BandWriter.put), so on CUDA model_and_blend is launch time
            self.t_wait, self.t_model = self.t_wait + t1 - t0, self.t_model + time.perf_counter() - t1
            self._advance(len(batch))
        t0 = time.perf_counter()
        while plan.tile_origin(acc.row) < plan.map_size[1]:
            band.put(*acc.finish_row())
        band.flush_last()
        self.t_tail += time.perf_counter() - t0

    def _advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > 0.5 or self.done == self.total:
            self.last = now
            self.emit({"event": "progress", "image": self.image, "done": self.done, "total": self.total,
                       "tiles_per_s": round(self.done / max(now - self.t_start, 1e-9), 2)})


def _next_from_workers(loader: Iterator[torch.Tensor], slide_path: Path) -> torch.Tensor:
    """The next batch from the DataLoader readers, with their failures as one-line errors: the
    loader re-raises a worker's exception with the worker's traceback as the message."""
    try:
        return next(loader)
    except CamsegError as err:
        last = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        name = f"{type(err).__module__}.{type(err).__name__}: "
        raise type(err)(last[len(name):] if last.startswith(name) else last) from None
    except RuntimeError as err:  # a reader process was killed (out of memory, /dev/shm full, ...)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise SlideReadError(f"{slide_path}: a tile reader process died ({first}); rerun the same command to "
                             "resume, or pass --readers threads") from err


def _forward(model: torch.nn.Module, rgb: RGBBatch, device: torch.device, cuda: bool, *,
             pad_to: int | None = None, calibration: Calibration | None = None) -> torch.Tensor:
    """Softmax foreground probabilities ``(B, n_classes, t, t)`` float32 on ``device`` for RGB tiles
    ``uint8 (B, t, t, 3)`` (a numpy array or a CPU tensor). ``pad_to``: zero-pad the batch to
    this size before the model (and drop the padding after), for compiled models.
    ``calibration``: the model folder's logit transform, applied in float32 before the softmax
    (``None``: the raw softmax, unchanged).

    With one foreground class (background + tumour, the Camelyon case) the softmax is computed
    as ``sigmoid(l₁ - l₀)``: the same value, without a second exp and a reduction.
    """
    if cuda:  # uint8 over the bus (4× fewer bytes), converted on the GPU
        t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(rgb)
        t = t if t.is_pinned() else t.pin_memory()
        x = t.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    else:  # numpy's uint8 → float32 is ~3× faster than torch's on a strided view (same values)
        a = rgb.numpy() if isinstance(rgb, torch.Tensor) else rgb
        x = torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2)
    # either way: NHWC memory → channels-last NCHW view
    n = x.shape[0]
    if pad_to is not None and n < pad_to:  # a compiled model keeps one static batch shape
        x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:])).contiguous(memory_format=torch.channels_last)])
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        logits = model(x)[:n]
    logits = logits.float()
    if calibration is not None:
        logits = calibration.apply(logits)
    if logits.shape[-2:] != x.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if logits.shape[1] == 2:
        return torch.sigmoid(logits[:, 1:] - logits[:, :1])
    return torch.softmax(logits, dim=1)[:, 1:]
