"""Tiles → model → blended probability map: the inference loop of a whole slide.

Whole-slide inference works on a *map* at the model's pixel size: map pixel ``(x, y)`` covers
level-0 pixels ``[x*ds, (x+1)*ds) x [y*ds, (y+1)*ds)`` with ``ds = model_mpp / slide_mpp``.
Tiles of ``tile_px`` map pixels sit on a regular grid with stride ``stride_px`` whose origin is
shifted by ``-(tile_px - stride_px) // 2`` so that every map pixel lies in the inner part of some
tile. Each tile's softmax probabilities are multiplied by a smooth window (:func:`blend_window`)
and summed; the map is the weighted sum divided by the summed weights, so seams vanish.

Memory does not depend on slide size: the map is processed in vertical *stripes* (a few chunks
wide) and, inside a stripe, tile row by tile row with a rolling accumulator of ``tile_px`` rows
(:class:`StripeAccumulator`). Finished rows are quantised to ``uint8`` (``round(255 p)``) and
written as square chunks of ``chunk_px`` map pixels (:class:`ChunkStore`), one zlib-compressed
file per chunk written atomically, so an interrupted run resumes from the finished chunks and
gives bit-identical results. Tiles that straddle a stripe edge are computed by both stripes
(a few percent of extra work) - the price of bounded memory. Tiles come from
:mod:`qupath_camseg.predict.tile_reader`; the geometry and the store from :mod:`qupath_camseg.predict.chunks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.predict.tile_reader import (
    PREFETCH_BATCHES,
    TileBatches,
    TileReader,
    thread_batches,
    use_read_processes,
)

__all__ = ["ChunkStore", "StripeAccumulator", "TilePlan", "blend_window", "run_inference"]

def blend_window(tile_px: int, *, floor: float = 1e-2) -> npt.NDArray[np.float32]:
    """Separable Hann (sin²) window of shape ``(tile_px, tile_px)``, values in ``[floor, 1]``.

    The floor keeps pixels covered by a single tile (slide borders) defined; where tiles overlap
    the window makes each tile's border count little, which is what removes seams.
    """
    i = (np.arange(tile_px, dtype=np.float64) + 0.5) / tile_px
    w1 = np.sin(np.pi * i) ** 2
    return np.maximum(np.outer(w1, w1), floor).astype(np.float32)


class StripeAccumulator:
    """Rolling weighted-sum accumulator for one stripe of map columns ``[x0, x1)``.

    Holds ``tile_px + 2 * stride_px`` rows of ``n_channels + 1`` float32 planes (probabilities and
    weight) on the window's device. Call :meth:`add` for every tile of tile row :attr:`row` (in
    column order), then :meth:`finish_row` to get the ``stride_px`` rows no later tile touches.
    Live rows are moved to the top only when the buffer runs out (every other tile row).
    """

    def __init__(self, plan: TilePlan, x0: int, x1: int, n_channels: int, first_row: int,
                 window: torch.Tensor) -> None:
        self.plan = plan
        cols = plan.tiles_overlapping(x0, x1)
        self.out_x0, self.out_x1 = x0, x1
        self.ax0 = plan.tile_origin(cols.start)  # map x of accumulator column 0
        width = plan.tile_origin(cols.stop - 1) + plan.tile_px - self.ax0
        self.row = first_row
        self.off = 0  # buffer row of the current tile row's first map row
        self.window = window
        self.rows = plan.tile_px + 2 * plan.stride_px
        self.acc = torch.zeros((n_channels + 1, self.rows, width), dtype=torch.float32, device=window.device)
        self.last_added = first_row - 2  # tile row of the last add(); older rows no longer reach the buffer
        self.dirty = False  # whether anything was added since the buffer was last all zero

    def add(self, col: int, probs: torch.Tensor) -> None:
        """Add one tile's probabilities ``(n_channels, tile_px, tile_px)`` at tile column ``col``."""
        a = self.plan.tile_origin(col) - self.ax0
        t, o = self.plan.tile_px, self.off
        self.acc[:-1, o:o + t, a:a + t].addcmul_(probs, self.window)
        self.acc[-1, o:o + t, a:a + t].add_(self.window)
        self.last_added, self.dirty = self.row, True

    def finish_row(self) -> tuple[int, torch.Tensor | None]:
        """Close the current tile row; return ``(map_y, uint8 (n_channels, stride_px, x1 - x0))``,
        or ``(map_y, None)`` when no tile touches those rows (glass between and below tissue:
        nothing to compute).

        ``map_y`` is the map row of the first returned row (negative near the top edge). A tile
        spans less than two strides (overlap < 0.5), so only tiles of this row and the one above
        reach the rows closed here.
        """
        s, t = self.plan.stride_px, self.plan.tile_px
        y = self.plan.tile_origin(self.row)
        if self.last_added < self.row - 1:  # nothing live in the buffer: clear it once, restart at the top
            if self.dirty:
                self.acc.zero_()
                self.dirty = False
            self.row += 1
            self.off = 0
            return y, None
        done = self.acc[:, self.off:self.off + s, self.out_x0 - self.ax0:self.out_x1 - self.ax0]
        weight = done[-1:]
        prob = torch.where(weight > 0, done[:-1] / weight.clamp_min(1e-12), torch.zeros_like(done[:-1]))
        q = (prob.clamp(0, 1) * 255).round().to(torch.uint8)
        self.row += 1
        self.off += s
        if self.off + t > self.rows:  # move the live rows to the top, clear the rest
            keep = self.rows - self.off
            self.acc[:, :keep] = self.acc[:, self.off:].clone()
            self.acc[:, keep:].zero_()
            self.off = 0
        return y, q


def _stripe_work(plan: TilePlan, active: npt.NDArray[np.bool_], needed: npt.NDArray[np.bool_],
                 store: ChunkStore, c0: int, c1: int, batch_size: int) -> tuple[int, list[tuple[int, int]], int] | None:
    """For the stripe of chunk columns ``[c0, c1)``: ``(first band to compute, tiles, first tile row)``.

    Tiles are listed in row-major order from a batch boundary of the full stripe order, so a
    resumed run forms exactly the batches of an uninterrupted one (bit-identical results).
    """
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
    return b0, tiles, first_row


def run_inference(slide_path: Path, slide_mpp: float | None, plan: TilePlan, active: npt.NDArray[np.bool_],
                  store: ChunkStore, lm: Any, roi: Any, *, batch_size: int = 16, workers: int = 4,
                  image: str = "", emit: Any = None, on_chunk: Any = None, readers: str = "auto",
                  tissue: Any = None) -> dict[str, Any]:
    """Compute every missing chunk of ``store``; return ``{"tiles": n computed, "timings": {...}}``.

    ``active`` is ``bool (ny, nx)`` (tiles to compute); ``lm`` a loaded model (``.model``,
    ``.config``, ``.device``); ``roi`` an optional level-0 shapely geometry and ``tissue`` an
    optional :class:`~qupath_camseg.wsi.tissue.TissueMask`, outside which the stored probabilities
    are zero. ``emit`` receives ``start`` and ``progress`` events;
    ``on_chunk(row, col)`` is called (on a writer thread) after each chunk is stored.
    ``workers`` tile readers are threads or processes as :func:`use_read_processes` decides.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    t_fn = time.perf_counter()
    emit = emit or (lambda e: None)
    device = torch.device(lm.device)
    cuda = device.type == "cuda"
    n = len(lm.config.classes)
    cp, cc = plan.chunk_px, plan.chunk_shape[1]
    needed = plan.needed_chunks(active)
    window = torch.from_numpy(blend_window(plan.tile_px)).to(device)
    stripes = []
    for c0 in range(0, cc, plan.stripe_chunks):
        work = _stripe_work(plan, active, needed, store, c0, min(cc, c0 + plan.stripe_chunks), batch_size)
        if work is not None:
            stripes.append((c0, min(cc, c0 + plan.stripe_chunks), *work))
    total = sum(len(s[3]) for s in stripes)
    emit({"event": "start", "image": image, "tiles": total, "resumed": store.resumed and total < int(active.sum())})
    batches = [[tiles[i:i + batch_size] for i in range(0, len(tiles), batch_size)] for *_, tiles, _ in stripes]
    reader_args = (slide_path, slide_mpp, plan, lm.config.mpp)
    reader, pool, loader, loader_used = None, None, None, False
    pad_to = batch_size if getattr(lm, "compiled", False) else None  # one static shape per slide
    batch_bytes = batch_size * plan.tile_px * plan.tile_px * 3
    processes = use_read_processes(readers, device, workers, batch_bytes=batch_bytes)
    if readers == "auto" and cuda and workers >= 2 and not processes:
        emit({"event": "note", "image": image, "message": "/dev/shm is too small for reader processes; reading "
              "tiles with threads (docker: --shm-size 8g)"})
    if processes and total:
        # workers are forked before any thread of ours starts; they never touch CUDA. Two batches
        # per worker in flight bound the shared memory (16 workers × 2 × 32 tiles of 0.75 MB ≈ 0.8 GB)
        loader_used = True
        loader = iter(torch.utils.data.DataLoader(
            TileBatches(reader_args, [b for s in batches for b in s]), batch_size=None, shuffle=False,
            num_workers=workers, pin_memory=cuda, prefetch_factor=PREFETCH_BATCHES))
    else:
        reader = TileReader(*reader_args)
        pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="qcamseg-read")
    # chunk files are independent (each zlib + fsync + rename, GIL released), so a few writers
    # keep the fsyncs from queueing up behind one thread at the end of the slide
    writer = ThreadPoolExecutor(max(1, min(4, workers)), thread_name_prefix="qcamseg-write")
    pending: list[Any] = []
    t_start, t_wait, t_model, t_writes, t_tail, done, last = time.perf_counter(), 0.0, 0.0, 0.0, 0.0, 0, 0.0
    try:
        for (c0, c1, b0, tiles, first_row), stripe_batches in zip(stripes, batches):
            x0, x1 = c0 * cp, min(c1 * cp, plan.map_size[0])
            acc = StripeAccumulator(plan, x0, x1, n, first_row, window)
            band = _Band(plan, store, needed, roi, c0, c1, b0, writer, pending, on_chunk, tissue)
            if loader is not None:
                source = (_next_from_workers(loader, slide_path) for _ in stripe_batches)
            else:
                source = thread_batches(pool, reader, stripe_batches, max(2 * batch_size, 4 * workers))
            for batch in stripe_batches:
                t0 = time.perf_counter()
                rgb = next(source)
                t1 = time.perf_counter()
                probs = _forward(lm.model, rgb, device, cuda, pad_to=pad_to)
                for (ty, tx), p in zip(batch, probs):
                    while acc.row < ty:
                        band.put(*acc.finish_row())
                    acc.add(tx, p)
                # no per-batch torch.cuda.synchronize: the next batch is read and stacked while the
                # GPU works (tile rows sync in _Band.put), so on CUDA model_and_blend is launch time
                t_wait, t_model = t_wait + t1 - t0, t_model + time.perf_counter() - t1
                done += len(batch)
                now = time.perf_counter()
                if now - last > 0.5 or done == total:
                    last = now
                    emit({"event": "progress", "image": image, "done": done, "total": total,
                          "tiles_per_s": round(done / max(now - t_start, 1e-9), 2)})
            t0 = time.perf_counter()
            while plan.tile_origin(acc.row) < plan.map_size[1]:
                band.put(*acc.finish_row())
            band.flush_last()
            t_tail += time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in pending:
            f.result()
        t_writes = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        if reader is not None:
            reader.close()
        del loader  # stops the worker processes
    return {"tiles": done, "read_processes": loader_used,
            "timings": {"setup": t_start - t_fn, "waiting_for_tiles": t_wait, "model_and_blend": t_model,
                        "last_rows": t_tail, "waiting_for_writes": t_writes}}


def _next_from_workers(loader: Any, slide_path: Path) -> torch.Tensor:
    """The next batch from the DataLoader readers, with their failures as one-line errors: the
    loader re-raises a worker's exception with the worker's traceback as the message."""
    from qupath_camseg.errors import CamsegError

    try:
        return next(loader)
    except CamsegError as err:
        last = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        name = f"{type(err).__module__}.{type(err).__name__}: "
        raise type(err)(last[len(name):] if last.startswith(name) else last) from None
    except RuntimeError as err:  # a reader process was killed (out of memory, /dev/shm full, ...)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CamsegError(f"{slide_path}: a tile reader process died ({first}); rerun the same command to "
                          "resume, or pass --readers threads") from err


def _forward(model: Any, rgb: npt.NDArray[np.uint8] | torch.Tensor, device: torch.device, cuda: bool, *,
             pad_to: int | None = None) -> torch.Tensor:
    """Softmax foreground probabilities ``(B, n_classes, t, t)`` float32 on ``device`` for RGB tiles
    ``uint8 (B, t, t, 3)`` (a numpy array or a CPU tensor). ``pad_to``: zero-pad the batch to
    this size before the model (and drop the padding after), for compiled models.

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
    if logits.shape[-2:] != x.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if logits.shape[1] == 2:
        return torch.sigmoid(logits[:, 1:] - logits[:, :1])
    return torch.softmax(logits, dim=1)[:, 1:]


class _Band:
    """Collects finished map rows of one stripe into a band of chunks and writes each full band."""

    def __init__(self, plan: TilePlan, store: ChunkStore, needed: npt.NDArray[np.bool_], roi: Any,
                 c0: int, c1: int, b0: int, writer: Any, pending: list[Any], on_chunk: Any = None,
                 tissue: Any = None) -> None:
        self.plan, self.store, self.needed, self.roi, self.tissue = plan, store, needed, roi, tissue
        self.c0, self.c1, self.x0 = c0, c1, c0 * plan.chunk_px
        self.width = min(c1 * plan.chunk_px, plan.map_size[0]) - self.x0
        self.y_min = b0 * plan.chunk_px
        self.band = b0
        self.buf = np.zeros((store.n_channels, plan.chunk_px, self.width), dtype=np.uint8)
        self.writer, self.pending, self.on_chunk = writer, pending, on_chunk

    def put(self, y: int, rows: torch.Tensor | None) -> None:
        """Rows ``[y, y + len)`` of the stripe (``uint8 (n, len, width)``; ``None``: ``stride_px``
        rows of zeros)."""
        arr = rows.cpu().numpy() if rows is not None else None
        n_rows = arr.shape[1] if arr is not None else self.plan.stride_px
        cp, h = self.plan.chunk_px, self.plan.map_size[1]
        i = max(0, self.y_min - y)
        while i < n_rows and y + i < h:
            yy = y + i
            b = yy // cp
            if b != self.band:
                self._flush()
                self.band = b
            k = min(n_rows - i, (b + 1) * cp - yy, h - yy)
            if arr is not None:  # (the buffer is zeroed after each flush)
                self.buf[:, yy - b * cp:yy - b * cp + k] = arr[:, i:i + k]
            i += k
            if yy + k == min((b + 1) * cp, h):
                self._flush()
                self.band = b + 1

    def flush_last(self) -> None:
        if self.band < self.plan.chunk_shape[0] and self.buf.any():
            self._flush()

    def _flush(self) -> None:
        b = self.band
        if b >= self.plan.chunk_shape[0]:
            return
        for c in range(self.c0, self.c1):
            if not self.needed[b, c]:
                continue
            cx, cy, w, h = self.plan.chunk_box(b, c)
            data = self.buf[:, :h, cx - self.x0:cx - self.x0 + w].copy()
            if self.roi is not None:  # here, not on the writers: a shared prepared geometry is not thread-safe
                data = _mask_roi(data, self.roi, (cx, cy, w, h), self.plan.ds)
            self.pending.append(self.writer.submit(self._write, b, c, data))
        self.buf[:] = 0

    def _write(self, row: int, col: int, data: npt.NDArray[np.uint8]) -> None:
        """Writer thread: zero the chunk off the tissue (≈ 1 ms a chunk, kept off the inference
        thread), store it, report it."""
        if self.tissue is not None:
            data = _mask_tissue(data, self.tissue, self.plan.chunk_box(row, col), self.plan.ds)
        self.store.write(row, col, data)
        if self.on_chunk is not None:
            self.on_chunk(row, col)


def _mask_roi(data: npt.NDArray[np.uint8], roi: Any, box: tuple[int, int, int, int], ds: float) -> npt.NDArray[np.uint8]:
    """Zero ``data`` (``(n, h, w)``, map px box ``box``) outside the level-0 ``roi``."""
    import shapely

    from qupath_camseg.annotations import rasterize

    x, y, w, h = box
    l0 = (x * ds, y * ds, w * ds, h * ds)
    cell = shapely.box(l0[0], l0[1], l0[0] + l0[2], l0[1] + l0[3])
    if roi.contains(cell):
        return data
    if not roi.intersects(cell):
        return np.zeros_like(data)
    inside = rasterize([(roi, 1)], l0, (w, h)) > 0
    return data * inside[None]


def _mask_tissue(data: npt.NDArray[np.uint8], tissue: Any, box: tuple[int, int, int, int],
                 ds: float) -> npt.NDArray[np.uint8]:
    """Zero ``data`` (``(n, h, w)``, map px box ``box``) where the tissue mask (nearest mask pixel
    of each map pixel's centre) is False: glass, ink and the slide's edges get probability 0."""
    x, y, w, h = box
    mask, md = tissue.mask, float(tissue.downsample)
    cols = np.minimum(((x + np.arange(w) + 0.5) * ds / md).astype(np.int64), mask.shape[1] - 1)
    rows = np.minimum(((y + np.arange(h) + 0.5) * ds / md).astype(np.int64), mask.shape[0] - 1)
    inside = mask[rows[:, None], cols[None, :]]
    return data if inside.all() else data * inside[None]
