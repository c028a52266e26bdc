"""Overlapping-tile blending and the chunked probability store.

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
(a few percent of extra work) - the price of bounded memory.
"""

from __future__ import annotations

import json
import math
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from qupath_camseg._io import atomic_write_bytes, atomic_write_json

__all__ = ["ChunkStore", "StripeAccumulator", "TilePlan", "blend_window", "run_inference"]

_CHUNK_RE = re.compile(r"^r(\d{5})_c(\d{5})\.zlib$")


def blend_window(tile_px: int, *, floor: float = 1e-2) -> npt.NDArray[np.float32]:
    """Separable Hann (sin²) window of shape ``(tile_px, tile_px)``, values in ``[floor, 1]``.

    The floor keeps pixels covered by a single tile (slide borders) defined; where tiles overlap
    the window makes each tile's border count little, which is what removes seams.
    """
    i = (np.arange(tile_px, dtype=np.float64) + 0.5) / tile_px
    w1 = np.sin(np.pi * i) ** 2
    return np.maximum(np.outer(w1, w1), floor).astype(np.float32)


@dataclass(frozen=True)
class TilePlan:
    """The tile and chunk geometry of one slide's probability map (all sizes in map pixels).

    ``map_size`` is ``(width, height)`` of the map; ``ds`` the level-0 px per map px.
    """

    map_size: tuple[int, int]
    ds: float
    tile_px: int
    stride_px: int
    chunk_px: int
    stripe_chunks: int

    @classmethod
    def create(
        cls, slide_size_px: tuple[int, int], slide_mpp: float, model_mpp: float, *, tile_px: int,
        overlap: float = 0.25, chunk_px: int = 512, stripe_chunks: int = 16,
    ) -> TilePlan:
        """Plan for a slide of ``slide_size_px`` (level 0) at ``slide_mpp`` read at ``model_mpp``."""
        if not 0 <= overlap < 0.5:
            raise ValueError(f"overlap must be in [0, 0.5), not {overlap}")
        if chunk_px % 16:
            raise ValueError(f"chunk_px must be a multiple of 16 (a TIFF tile), not {chunk_px}")
        ds = model_mpp / slide_mpp
        w = max(1, math.ceil(slide_size_px[0] / ds))
        h = max(1, math.ceil(slide_size_px[1] / ds))
        stride = max(1, round(tile_px * (1 - overlap)))
        return cls((w, h), ds, tile_px, stride, chunk_px, max(1, stripe_chunks))

    @property
    def offset_px(self) -> int:
        """Shift of the tile grid origin (tile ``k`` starts at ``k*stride - offset``)."""
        return (self.tile_px - self.stride_px) // 2

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tile rows and columns ``(ny, nx)``."""
        def n(size: int) -> int:
            return max(1, math.ceil((size + self.offset_px - self.tile_px) / self.stride_px) + 1)
        return n(self.map_size[1]), n(self.map_size[0])

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """Number of chunk rows and columns."""
        return math.ceil(self.map_size[1] / self.chunk_px), math.ceil(self.map_size[0] / self.chunk_px)

    def tile_origin(self, k: int) -> int:
        """Map coordinate of tile row/column ``k``'s first pixel (may be negative)."""
        return k * self.stride_px - self.offset_px

    def tiles_overlapping(self, a: int, b: int) -> range:
        """Tile indices (one axis) whose span intersects map pixels ``[a, b)``."""
        first = max(0, math.floor((a + self.offset_px - self.tile_px) / self.stride_px) + 1)
        last = math.ceil((b + self.offset_px) / self.stride_px)  # exclusive
        return range(first, max(first, last))

    def tile_boxes_level0(self) -> npt.NDArray[np.float64]:
        """``(ny, nx, 4)`` boxes ``(x, y, w, h)`` of every tile in level-0 px (unclipped)."""
        ny, nx = self.grid_shape
        xs = np.array([self.tile_origin(k) for k in range(nx)], dtype=np.float64) * self.ds
        ys = np.array([self.tile_origin(k) for k in range(ny)], dtype=np.float64) * self.ds
        boxes = np.zeros((ny, nx, 4))
        boxes[..., 0] = xs[None, :]
        boxes[..., 1] = ys[:, None]
        boxes[..., 2:] = self.tile_px * self.ds
        return boxes

    def chunk_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Chunk ``(row, col)`` as ``(x, y, w, h)`` in map px, clipped to the map."""
        x, y = col * self.chunk_px, row * self.chunk_px
        return x, y, min(self.chunk_px, self.map_size[0] - x), min(self.chunk_px, self.map_size[1] - y)

    def needed_chunks(self, active: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Chunks that at least one active tile overlaps, ``(chunk_rows, chunk_cols)``."""
        cr, cc = self.chunk_shape
        out = np.zeros((cr, cc), dtype=bool)
        for r in range(cr):
            rows = self.tiles_overlapping(r * self.chunk_px, min((r + 1) * self.chunk_px, self.map_size[1]))
            sub = active[rows.start:rows.stop]
            if not sub.any():
                continue
            cols_any = sub.any(axis=0)
            for c in range(cc):
                cols = self.tiles_overlapping(c * self.chunk_px, min((c + 1) * self.chunk_px, self.map_size[0]))
                out[r, c] = bool(cols_any[cols.start:cols.stop].any())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (part of the resume key)."""
        d = asdict(self)
        d["map_size"] = list(self.map_size)
        return d


class ChunkStore:
    """A folder of ``uint8`` probability chunks ``(n_channels, h, w)``, one file per chunk.

    ``meta.json`` holds ``key`` (everything the probabilities depend on); opening a store whose
    key differs, or with ``overwrite=True``, deletes the old chunks first. Chunks are written
    atomically (temp file + rename), so a chunk file is either complete or absent.
    """

    def __init__(self, folder: str | Path, plan: TilePlan, n_channels: int, key: dict[str, Any], *,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.plan = plan
        self.n_channels = n_channels
        meta = {"format": "qupath-camseg probability chunks v1", "dtype": "uint8 round(255*p)",
                "n_channels": n_channels, "plan": plan.to_dict(), "key": key}
        meta_path = self.folder / "meta.json"
        old = None
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        self.resumed = old == meta and not overwrite
        if not self.resumed:
            self.clear()
            atomic_write_json(meta_path, meta)

    def clear(self) -> None:
        """Delete this store's chunk files (only files named like chunks)."""
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                if _CHUNK_RE.match(p.name) or (p.name.startswith(".r") and p.name.endswith(".tmp")):
                    p.unlink(missing_ok=True)

    def path(self, row: int, col: int) -> Path:
        return self.folder / f"r{row:05d}_c{col:05d}.zlib"

    def has(self, row: int, col: int) -> bool:
        return self.path(row, col).is_file()

    def write(self, row: int, col: int, data: npt.NDArray[np.uint8]) -> None:
        """Store chunk ``(row, col)``; ``data`` is ``uint8 (n_channels, h, w)`` of the clipped chunk box."""
        _, _, w, h = self.plan.chunk_box(row, col)
        if data.shape != (self.n_channels, h, w) or data.dtype != np.uint8:
            raise ValueError(f"chunk {row},{col} must be uint8 {(self.n_channels, h, w)}, not {data.dtype} {data.shape}")
        atomic_write_bytes(self.path(row, col), zlib.compress(np.ascontiguousarray(data).tobytes(), 1))

    def read(self, row: int, col: int) -> npt.NDArray[np.uint8]:
        """Chunk ``(row, col)`` as ``uint8 (n_channels, h, w)``; zeros where nothing was predicted."""
        _, _, w, h = self.plan.chunk_box(row, col)
        p = self.path(row, col)
        if not p.is_file():
            return np.zeros((self.n_channels, h, w), dtype=np.uint8)
        return np.frombuffer(zlib.decompress(p.read_bytes()), dtype=np.uint8).reshape(self.n_channels, h, w)

    def iter_chunks(self) -> Iterator[tuple[int, int, npt.NDArray[np.uint8]]]:
        """Stored chunks in row-major order as ``(row, col, data)`` (missing chunks skipped)."""
        rows, cols = self.plan.chunk_shape
        for r in range(rows):
            for c in range(cols):
                if self.has(r, c):
                    yield r, c, self.read(r, c)

    def read_region(self, box: tuple[int, int, int, int], channel: int = 0) -> npt.NDArray[np.uint8]:
        """Map pixels of ``box`` (map px, clipped to the map) of one channel as ``uint8 (h, w)``."""
        x, y, w, h = box
        x1, y1 = min(x + w, self.plan.map_size[0]), min(y + h, self.plan.map_size[1])
        out = np.zeros((max(0, y1 - y), max(0, x1 - x)), dtype=np.uint8)
        cp = self.plan.chunk_px
        for r in range(y // cp, math.ceil(y1 / cp)):
            for c in range(x // cp, math.ceil(x1 / cp)):
                if not self.has(r, c):
                    continue
                cx, cy, _, _ = self.plan.chunk_box(r, c)
                data = self.read(r, c)[channel]
                sy0, sx0 = max(y, cy), max(x, cx)
                sy1, sx1 = min(y1, cy + data.shape[0]), min(x1, cx + data.shape[1])
                out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = data[sy0 - cy:sy1 - cy, sx0 - cx:sx1 - cx]
        return out


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

    def add(self, col: int, probs: torch.Tensor) -> None:
        """Add one tile's probabilities ``(n_channels, tile_px, tile_px)`` at tile column ``col``."""
        a = self.plan.tile_origin(col) - self.ax0
        t, o = self.plan.tile_px, self.off
        self.acc[:-1, o:o + t, a:a + t].addcmul_(probs, self.window)
        self.acc[-1, o:o + t, a:a + t].add_(self.window)

    def finish_row(self) -> tuple[int, torch.Tensor]:
        """Close the current tile row; return ``(map_y, uint8 (n_channels, stride_px, x1 - x0))``.

        ``map_y`` is the map row of the first returned row (negative near the top edge).
        """
        s, t = self.plan.stride_px, self.plan.tile_px
        done = self.acc[:, self.off:self.off + s, self.out_x0 - self.ax0:self.out_x1 - self.ax0]
        weight = done[-1:]
        prob = torch.where(weight > 0, done[:-1] / weight.clamp_min(1e-12), torch.zeros_like(done[:-1]))
        q = (prob.clamp(0, 1) * 255).round().to(torch.uint8)
        y = self.plan.tile_origin(self.row)
        self.row += 1
        self.off += s
        if self.off + t > self.rows:  # move the live rows to the top, clear the rest
            keep = self.rows - self.off
            self.acc[:, :keep] = self.acc[:, self.off:].clone()
            self.acc[:, keep:].zero_()
            self.off = 0
        return y, q


class _BlockCache:
    """Decoded level blocks shared by the reader threads: a bounded LRU in which each block is
    decoded once even when several threads ask for it at the same time (the others wait)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._blocks: OrderedDict[Any, _Block] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0

    def get(self, key: Any, load: Any) -> npt.NDArray[np.uint8]:
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
    __slots__ = ("ready", "value", "error")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: npt.NDArray[np.uint8] | None = None
        self.error: BaseException | None = None


#: Most memory the reader's block cache may hold (decoded RGB), bytes; 0 reads every tile directly.
_BLOCK_CACHE_BYTES = 128 << 20


class _Reader:
    """Reads tiles on a thread pool; each thread opens its own slide handle.

    Overlapping tiles share most of their pixels and, at unaligned offsets, each would decode up
    to four stored (JPEG) tiles of the file. So tiles are cut from *blocks* aligned to the file's
    stored tiles at the read level, each decoded once and kept in a small LRU (:class:`_BlockCache`,
    about two tile rows of a stripe). The pixels are identical to
    :meth:`~qupath_camseg.slides.Slide.read_region_mpp`.
    """

    def __init__(self, slide_path: Path, slide_mpp: float | None, plan: TilePlan, model_mpp: float) -> None:
        self.path, self.mpp_override, self.plan, self.model_mpp = slide_path, slide_mpp, plan, model_mpp
        self._local = threading.local()
        self._lock = threading.Lock()
        self._slides: list[Any] = []
        self._cache: _BlockCache | None = None

    def _slide(self) -> Any:
        slide = getattr(self._local, "slide", None)
        if slide is None:
            from qupath_camseg.slides import open_slide

            slide = open_slide(self.path, mpp=self.mpp_override)
            self._local.slide = slide
            with self._lock:
                self._slides.append(slide)
        return slide

    def _block_px(self, slide: Any, level: int) -> tuple[int, int]:
        stored = slide._stored_tile_px(level)
        if stored is None or not (64 <= min(stored) and max(stored) <= 4096):
            return 512, 512  # still aligned to any power-of-two tiling up to 512
        return stored

    def read(self, ty: int, tx: int) -> npt.NDArray[np.uint8]:
        """Tile ``(row, col)`` as RGB ``uint8 (tile_px, tile_px, 3)``; outside the slide is white."""
        from qupath_camseg.slides import _resample

        slide = self._slide()
        p, t = self.plan, self.plan.tile_px
        box = (p.tile_origin(tx) * p.ds, p.tile_origin(ty) * p.ds, t * p.ds, t * p.ds)
        if _BLOCK_CACHE_BYTES <= 0:  # cache off (benchmarks compare with it)
            return slide.read_region_mpp(box, self.model_mpp, out_size=(t, t))
        level, (x, y, w, h), src, size = slide._mpp_geometry(box, self.model_mpp, (t, t))
        return _resample(self._region(slide, level, x, y, w, h), src, size)

    def _region(self, slide: Any, level: int, x: int, y: int, w: int, h: int) -> npt.NDArray[np.uint8]:
        """Level pixels ``[x, x+w) × [y, y+h)`` (as ``Slide._read_level``) from cached blocks."""
        bw, bh = self._block_px(slide, level)
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    p = self.plan
                    level_px = p.ds / slide.level_downsamples[level]  # level px per map px
                    across = math.ceil((p.stripe_chunks * p.chunk_px + p.tile_px) * level_px / bw) + 2
                    down = math.ceil((p.tile_px + 4 * p.stride_px) * level_px / bh) + 2
                    self._cache = _BlockCache(min(across * down, max(4, _BLOCK_CACHE_BYTES // (3 * bw * bh))))
        cache = self._cache
        out = np.empty((h, w, 3), dtype=np.uint8)
        for by in range(y // bh, (y + h - 1) // bh + 1):
            for bx in range(x // bw, (x + w - 1) // bw + 1):
                block = cache.get((level, bx, by), lambda bx=bx, by=by: slide._read_level(level, bx * bw, by * bh, bw, bh))
                x0, y0 = max(x, bx * bw), max(y, by * bh)
                x1, y1 = min(x + w, (bx + 1) * bw), min(y + h, (by + 1) * bh)
                out[y0 - y:y1 - y, x0 - x:x1 - x] = block[y0 - by * bh:y1 - by * bh, x0 - bx * bw:x1 - bx * bw]
        return out

    def close(self) -> None:
        for s in self._slides:
            s.close()


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
                  image: str = "", emit: Any = None) -> dict[str, Any]:
    """Compute every missing chunk of ``store``; return ``{"tiles": n computed, "timings": {...}}``.

    ``active`` is ``bool (ny, nx)`` (tiles to compute); ``lm`` a loaded model (``.model``,
    ``.config``, ``.device``); ``roi`` an optional level-0 shapely geometry outside which the
    stored probabilities are zero. ``emit`` receives ``start`` and ``progress`` events.
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
    reader = _Reader(slide_path, slide_mpp, plan, lm.config.mpp)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="qcamseg-read")
    # chunk files are independent (each zlib + fsync + rename, GIL released), so a few writers
    # keep the fsyncs from queueing up behind one thread at the end of the slide
    writer = ThreadPoolExecutor(max(1, min(4, workers)), thread_name_prefix="qcamseg-write")
    pending: list[Any] = []
    t_start, t_wait, t_model, t_writes, t_tail, done, last = time.perf_counter(), 0.0, 0.0, 0.0, 0.0, 0, 0.0
    try:
        for c0, c1, b0, tiles, first_row in stripes:
            x0, x1 = c0 * cp, min(c1 * cp, plan.map_size[0])
            acc = StripeAccumulator(plan, x0, x1, n, first_row, window)
            band = _Band(plan, store, needed, roi, c0, c1, b0, writer, pending)
            ahead = max(2 * batch_size, 4 * workers)
            futures = [pool.submit(reader.read, *t) for t in tiles[:ahead]]
            for i in range(0, len(tiles), batch_size):
                batch = tiles[i:i + batch_size]
                futures += [pool.submit(reader.read, *t) for t in tiles[len(futures):i + batch_size + ahead]]
                t0 = time.perf_counter()
                rgb = np.stack([futures[j].result() for j in range(i, i + len(batch))])
                for j in range(i, i + len(batch)):
                    futures[j] = None
                t1 = time.perf_counter()
                probs = _forward(lm.model, rgb, device, cuda)
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
        pool.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        reader.close()
    return {"tiles": done, "timings": {"setup": t_start - t_fn, "waiting_for_tiles": t_wait, "model_and_blend": t_model,
                                       "last_rows": t_tail, "waiting_for_writes": t_writes}}


def _forward(model: Any, rgb: npt.NDArray[np.uint8], device: torch.device, cuda: bool) -> torch.Tensor:
    """Softmax foreground probabilities ``(B, n_classes, t, t)`` float32 on ``device`` for RGB tiles."""
    if cuda:  # uint8 over the bus (4× fewer bytes), converted on the GPU
        x = torch.from_numpy(rgb).pin_memory().to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    else:  # numpy's uint8 → float32 is ~3× faster than torch's on a strided view (same values)
        x = torch.from_numpy(rgb.astype(np.float32)).permute(0, 3, 1, 2)
    # either way: NHWC memory → channels-last NCHW view
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        logits = model(x)
    logits = logits.float()
    if logits.shape[-2:] != x.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.softmax(logits, dim=1)[:, 1:]


class _Band:
    """Collects finished map rows of one stripe into a band of chunks and writes each full band."""

    def __init__(self, plan: TilePlan, store: ChunkStore, needed: npt.NDArray[np.bool_], roi: Any,
                 c0: int, c1: int, b0: int, writer: Any, pending: list[Any]) -> None:
        self.plan, self.store, self.needed, self.roi = plan, store, needed, roi
        self.c0, self.c1, self.x0 = c0, c1, c0 * plan.chunk_px
        self.width = min(c1 * plan.chunk_px, plan.map_size[0]) - self.x0
        self.y_min = b0 * plan.chunk_px
        self.band = b0
        self.buf = np.zeros((store.n_channels, plan.chunk_px, self.width), dtype=np.uint8)
        self.writer, self.pending = writer, pending

    def put(self, y: int, rows: torch.Tensor) -> None:
        """Rows ``[y, y + len)`` of the stripe (``uint8 (n, len, width)``)."""
        arr = rows.cpu().numpy()
        cp, h = self.plan.chunk_px, self.plan.map_size[1]
        i = max(0, self.y_min - y)
        while i < arr.shape[1] and y + i < h:
            yy = y + i
            b = yy // cp
            if b != self.band:
                self._flush()
                self.band = b
            k = min(arr.shape[1] - i, (b + 1) * cp - yy, h - yy)
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
            if self.roi is not None:
                data = _mask_roi(data, self.roi, (cx, cy, w, h), self.plan.ds)
            self.pending.append(self.writer.submit(self.store.write, b, c, data))
        self.buf[:] = 0


def _mask_roi(data: npt.NDArray[np.uint8], roi: Any, box: tuple[int, int, int, int], ds: float) -> npt.NDArray[np.uint8]:
    """Zero ``data`` (``(n, h, w)``, map px box ``box``) outside the level-0 ``roi``."""
    import shapely

    from qupath_camseg.masks import rasterize

    x, y, w, h = box
    l0 = (x * ds, y * ds, w * ds, h * ds)
    cell = shapely.box(l0[0], l0[1], l0[0] + l0[2], l0[1] + l0[3])
    if roi.contains(cell):
        return data
    if not roi.intersects(cell):
        return np.zeros_like(data)
    inside = rasterize([(roi, 1)], l0, (w, h)) > 0
    return data * inside[None]
