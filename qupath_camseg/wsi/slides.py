"""Whole-slide image access by physical pixel size. The only module that imports tiffslide/openslide.

:func:`open_slide` returns a :class:`Slide`: level geometry, the level-0 pixel size ``mpp``
(µm/px) and reads that return RGB ``uint8`` arrays ``(h, w, 3)`` — alpha composited onto white,
everything outside the slide white — either per pyramid level (:meth:`Slide.read_region`) or for a
level-0 box at a target µm/px (:meth:`Slide.read_region_mpp`: read from the coarsest level that is
still at least as fine as the target, then area-average down to the exact output size).

**Backends.** tiffslide (pure Python + tifffile/imagecodecs: SVS, generic tiled TIFF, OME-TIFF,
NDPI, SCN, …) by default; OpenSlide (``pip install qupath-camseg[openslide]``) on request
(``backend="openslide"``) and automatically for files tiffslide cannot open (MRXS, VMS, BIF, …).

**Pixel size.** In order: the ``mpp=`` override; the vendor field (``tiffslide.mpp-x`` /
``openslide.mpp-x``); the level-0 TIFF ``XResolution``/``ResolutionUnit`` tags (centimetre or
inch); otherwise :attr:`Slide.mpp` raises :class:`MissingMppError`, whose message names the fix
(``--slide-mpp`` on the command line, ``mpp=`` in Python). Values outside 0.01–20 µm/px are
treated as missing: they are file-format defaults (72 dpi = 352.8 µm/px), not microscope
calibrations.

**Pixel types.** 8-bit RGB(A) and 8-bit grey (shown as grey RGB) are read; a TIFF with other
pixels (16-bit or float, more than 4 channels: fluorescence, multiplex) is refused with
:class:`SlideReadError` rather than clipped into plausible-looking garbage.

**Coordinates = QuPath's.** QuPath's OpenSlide server (``OpenslideImageServer``) reads
``openslide.bounds-x/-y/-width/-height``; when all four are present it reports the image as
``bounds-width × bounds-height`` and adds ``(bounds-x, bounds-y)`` to every tile request, i.e. its
pixel (0, 0) is OpenSlide's (bounds-x, bounds-y). Scanners that write bounds (MIRAX, Leica SCN,
Ventana) are opened with OpenSlide by QuPath by default, so this module does the same with either
backend whenever the bounds properties are reported: level-0 coordinates here always mean QuPath's
level-0 coordinates and annotations round-trip without offsets. (QuPath's ``--no-crop`` server
argument, which disables this, is not supported.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from qupath_camseg._runtime import require_memory
from qupath_camseg.errors import MissingMppError, SlideNotFoundError, SlideReadError
from qupath_camseg.wsi._tiff import mpp_from_tiff_tags, tiff_pixel_problem

__all__ = ["BACKENDS", "Slide", "open_slide", "resample"]

BACKENDS = ("auto", "tiffslide", "openslide")
_MPP_RANGE = (0.01, 20.0)
_LEVEL_EPS = 0.01  # accept a level up to 1 % coarser than asked (downsamples like 2.0005)
#: Reads larger than this (bytes of RGB) are checked against the memory available first.
_CHECKED_READ_BYTES = 256 << 20
_OPENSLIDE_ONLY = {".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm"}

RGB = npt.NDArray[np.uint8]


def _to_rgb(arr: npt.NDArray[Any]) -> RGB:
    """(h, w[, 1|2|3|4]) array → RGB uint8 (h, w, 3); alpha composited onto white."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] in (2, 4) and arr[..., -1].min() == 255:  # opaque: drop alpha (same pixels)
        arr = arr[..., :-1]
    elif arr.shape[-1] in (2, 4):  # with alpha
        color, alpha = arr[..., :-1].astype(np.float32), arr[..., -1:].astype(np.float32) / 255.0
        arr = np.clip(color * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def resample(region: RGB, src: tuple[float, float, float, float], out_size: tuple[int, int]) -> RGB:
    """``region`` resampled so that its sub-box ``src`` (x0, y0, x1, y1 in region px) fills
    ``out_size=(w, h)``: area (box) filter when shrinking, bilinear when enlarging."""
    if region.shape[1] == out_size[0] and region.shape[0] == out_size[1] and src == (0, 0, out_size[0], out_size[1]):
        return region
    downscale = (src[2] - src[0]) >= out_size[0]
    resample = Image.Resampling.BOX if downscale else Image.Resampling.BILINEAR
    img = Image.fromarray(region).resize(tuple(int(v) for v in out_size), resample, box=src, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def _float_or_none(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class Slide:
    """An open whole-slide image. Use :func:`open_slide`; close it (or use ``with``) when done.

    Attributes: ``path``, ``backend`` (``"tiffslide"`` or ``"openslide"``), ``dimensions``
    (level-0 ``(width, height)`` px), ``level_count``, ``level_dimensions``, ``level_downsamples``,
    ``bounds_offset`` (``(x, y)`` added to every read, see the module docstring), ``properties``.
    """

    def __init__(self, path: Path, handle: Any, backend: str, *, mpp: float | None = None) -> None:
        self.path = path
        self.backend = backend
        self._h = handle
        self._pages: dict[int, Any] = {}  # level -> tifffile page decoded directly (None: tiffslide's path)
        self.properties: dict[str, Any] = dict(handle.properties)
        prefix = "openslide" if backend == "openslide" else "tiffslide"
        full_w, full_h = (int(v) for v in handle.dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in handle.level_downsamples)
        bounds = [_float_or_none(self.properties.get(f"{prefix}.bounds-{k}")) for k in ("x", "y", "width", "height")]
        if all(b is not None for b in bounds):
            bx, by, bw, bh = (int(b) for b in bounds)  # type: ignore[arg-type]
            self.bounds_offset: tuple[int, int] = (bx, by)
            self.dimensions: tuple[int, int] = (bw, bh)
            self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
                (int(bw / d), int(bh / d)) for d in self.level_downsamples
            )
        else:
            self.bounds_offset = (0, 0)
            self.dimensions = (full_w, full_h)
            self.level_dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self.level_count = len(self.level_dimensions)
        self._mpp_override = mpp
        self._mpp_found, self._mpp_note = self._find_mpp(prefix)

    # ------------------------------------------------------------------ pixel size
    def _find_mpp(self, prefix: str) -> tuple[float | None, str]:
        candidates = [
            (_float_or_none(self.properties.get(f"{prefix}.mpp-x")), "metadata"),
            (mpp_from_tiff_tags(self.path), "TIFF resolution tags"),
        ]
        note = ""
        for value, source in candidates:
            if value is None:
                continue
            if _MPP_RANGE[0] <= value <= _MPP_RANGE[1]:
                return value, source
            note = f" (its {source} say {value:g} µm/px, which is not a microscope calibration)"
        return None, note

    @property
    def has_mpp(self) -> bool:
        """True when the level-0 pixel size is known (from the file or the override)."""
        return self._mpp_override is not None or self._mpp_found is not None

    @property
    def mpp(self) -> float:
        """Level-0 pixel size in µm/px. Raises :class:`MissingMppError` when unknown."""
        if self._mpp_override is not None:
            return self._mpp_override
        if self._mpp_found is None:
            raise MissingMppError(
                f"{self.path}: the slide's metadata has no pixel size{self._mpp_note}; pass the "
                "level-0 µm/px with --slide-mpp (command line) or mpp= (Python), e.g. --slide-mpp 0.25"
            )
        return self._mpp_found

    # ------------------------------------------------------------------ reading
    def best_level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest level whose pixels are not coarser than ``target_mpp`` (1 % tolerance)."""
        if not target_mpp > 0:
            raise ValueError(f"target_mpp must be positive (got {target_mpp})")
        wanted = target_mpp / self.mpp * (1.0 + _LEVEL_EPS)
        ok = [i for i, d in enumerate(self.level_downsamples) if d <= wanted]
        return max(ok, key=lambda i: self.level_downsamples[i]) if ok else 0

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> RGB:
        """Level pixels [x, x+w) × [y, y+h) (level coordinates, QuPath frame); outside = white."""
        out = np.full((h, w, 3), 255, np.uint8)
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        ds = self.level_downsamples[level]
        # level-0 location whose level coordinate floors *and* rounds to x0 for ds >= 2
        loc = (math.ceil(x0 * ds) + self.bounds_offset[0], math.ceil(y0 * ds) + self.bounds_offset[1])
        try:
            if self.backend != "tiffslide":
                arr = np.asarray(self._h.read_region(loc, level, (x1 - x0, y1 - y0)))
            else:
                arr = self._read_stored_tiles(level, x0, y0, x1, y1)
                if arr is None:
                    arr = self._h.read_region(loc, level, (x1 - x0, y1 - y0), as_array=True)
        except Exception as err:
            raise SlideReadError(
                f"{self.path}: cannot read level {level} at {loc} ({type(err).__name__}: {err}); "
                "the file may be truncated or corrupt - re-copy or re-export it"
            ) from err
        out[y0 - y:y1 - y, x0 - x:x1 - x] = _to_rgb(arr)[: y1 - y0, : x1 - x0]
        return out

    def _level_page(self, level: int) -> Any:
        """The tifffile page holding ``level`` when its stored tiles can be decoded directly (one
        tiled, contiguous-sample page whose size is the level's; cached), else ``None``."""
        cache = self._pages
        if level not in cache:
            cache[level] = None
            try:
                levels = self._h.ts_tifffile.series[0].levels
                pages = levels[level].pages if level < len(levels) else []
                page = pages[0] if len(pages) == 1 else None
                if (page is not None and page.is_tiled and page.planarconfig == 1 and page.imagedepth == 1
                        and (page.imagewidth, page.imagelength) == tuple(self.level_dimensions[level])
                        and page.dtype == np.uint8 and page.samplesperpixel in (1, 3, 4)):
                    cache[level] = page
            except Exception:  # noqa: BLE001 - anything unusual: tiffslide's own (slower) path
                cache[level] = None
        return cache[level]

    def _read_stored_tiles(self, level: int, x0: int, y0: int, x1: int, y1: int) -> npt.NDArray[np.uint8] | None:
        """Level pixels ``[x0, x1) × [y0, y1)`` (inside the level) decoded straight from the file's
        stored tiles with tifffile (what tiffslide's zarr store does per tile, without its
        overhead: ≈ 17 % of a 512² training read); ``None`` where that path does not apply."""
        page = self._level_page(level)
        if page is None:
            return None
        tw, th = page.tilewidth, page.tilelength
        ntx = -(-page.imagewidth // tw)
        fh = page.parent.filehandle
        out = np.empty((y1 - y0, x1 - x0, page.samplesperpixel), np.uint8)
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                index = ty * ntx + tx
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if not count:
                    return None  # a sparse tile: let tiffslide decide its fill
                with fh.lock:
                    fh.seek(offset)
                    data = fh.read(count)
                tile = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)[0]
                tile = tile.reshape(th, tw, page.samplesperpixel)
                ax0, ay0 = max(x0, tx * tw), max(y0, ty * th)
                ax1, ay1 = min(x1, (tx + 1) * tw), min(y1, (ty + 1) * th)
                out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = tile[ay0 - ty * th:ay1 - ty * th, ax0 - tx * tw:ax1 - tx * tw]
        return out

    def read_region(self, location_px: tuple[int, int], level: int, size_px: tuple[int, int]) -> RGB:
        """RGB uint8 ``(h, w, 3)`` of ``size_px=(w, h)`` level pixels whose top-left corner is the
        level-0 point ``location_px=(x, y)`` (OpenSlide's convention)."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level must be in 0..{self.level_count - 1} (got {level})")
        ds = self.level_downsamples[level]
        w, h = (int(v) for v in size_px)
        return self.read_level(level, int(math.floor(location_px[0] / ds)), int(math.floor(location_px[1] / ds)), w, h)

    def read_region_mpp(self, box_px: tuple[float, float, float, float], target_mpp: float, *,
                        out_size: tuple[int, int] | None = None) -> RGB:
        """The level-0 box ``(x, y, width, height)`` at ``target_mpp`` µm/px: RGB uint8 ``(h, w, 3)``.

        Output size ``(round(width·mpp/target_mpp), round(height·mpp/target_mpp))`` unless
        ``out_size=(w, h)``. Reads the best level (:meth:`best_level_for_mpp`) and resamples with
        an area (box) filter, exact to sub-pixel offsets; upsampling is bilinear.
        """
        level, (ix0, iy0, w, h), src, size = self.mpp_geometry(box_px, target_mpp, out_size)
        nbytes = 3 * (w * h + size[0] * size[1])
        if nbytes > _CHECKED_READ_BYTES:  # a tile is far below; a region of a million px² is not
            require_memory(nbytes, what=f"reading {w}x{h} px of level {level} of {self.path} ({size[0]}x{size[1]} px out)",
                           fix="choose a smaller region (level-0 px) or a coarser µm/px")
        return resample(self.read_level(level, ix0, iy0, w, h), src, size)

    def mpp_geometry(self, box_px: tuple[float, float, float, float], target_mpp: float,
                      out_size: tuple[int, int] | None) -> tuple[int, tuple[int, int, int, int],
                                                                tuple[float, float, float, float], tuple[int, int]]:
        """What :meth:`read_region_mpp` reads: ``(level, (x, y, w, h) level px, src box in that
        region, out_size)``; the result is ``resample(read_level(level, x, y, w, h), src, out_size)``
        (so a caller may cut the region from a larger read and get identical pixels)."""
        x, y, bw, bh = (float(v) for v in box_px)
        if bw <= 0 or bh <= 0:
            raise ValueError(f"box_px width and height must be positive (got {box_px})")
        if out_size is None:
            scale = self.mpp / target_mpp
            out_size = (max(1, round(bw * scale)), max(1, round(bh * scale)))
        level = self.best_level_for_mpp(target_mpp)
        ds = self.level_downsamples[level]
        lx0, ly0, lx1, ly1 = x / ds, y / ds, (x + bw) / ds, (y + bh) / ds
        ix0, iy0 = math.floor(lx0), math.floor(ly0)
        ix1, iy1 = math.ceil(lx1 - 1e-9), math.ceil(ly1 - 1e-9)
        src = (lx0 - ix0, ly0 - iy0, lx1 - ix0, ly1 - iy0)
        return level, (ix0, iy0, ix1 - ix0, iy1 - iy0), src, (int(out_size[0]), int(out_size[1]))

    def stored_tile_px(self, level: int) -> tuple[int, int] | None:
        """``(w, h)`` of the file's stored tiles at ``level`` when the backend reports them."""
        prefix = "openslide" if self.backend == "openslide" else "tiffslide"
        w = _float_or_none(self.properties.get(f"{prefix}.level[{level}].tile-width"))
        h = _float_or_none(self.properties.get(f"{prefix}.level[{level}].tile-height"))
        return (int(w), int(h)) if w and h and w > 0 and h > 0 else None

    def read_thumbnail_mpp(self, target_mpp: float) -> tuple[RGB, float]:
        """The whole slide at ``target_mpp`` µm/px: ``(rgb (h, w, 3) uint8, downsample)`` where
        ``downsample = target_mpp / mpp`` (level-0 px per output px)."""
        w, h = self.dimensions
        return self.read_region_mpp((0, 0, w, h), target_mpp), target_mpp / self.mpp

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the file handle."""
        self._h.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.mpp:g}" if self.has_mpp else "unknown"
        return f"Slide({str(self.path)!r}, backend={self.backend!r}, dimensions={self.dimensions}, mpp={mpp})"


def _open_tiffslide(path: Path) -> Any:
    import tiffslide

    return tiffslide.TiffSlide(path)


def _open_openslide(path: Path) -> Any:
    try:
        import openslide
    except ImportError as err:
        raise SlideReadError(
            f"{path}: this format needs OpenSlide; install it with: pip install 'qupath-camseg[openslide]'"
        ) from err
    return openslide.OpenSlide(str(path))


def open_slide(path: str | os.PathLike[str], *, mpp: float | None = None, backend: str = "auto") -> Slide:
    """Open a whole-slide image.

    ``mpp``: level-0 µm/px, overriding the file's; ``backend``: ``"auto"`` (tiffslide, falling back
    to OpenSlide for formats tiffslide cannot open), ``"tiffslide"`` or ``"openslide"``.
    Raises :class:`SlideNotFoundError` (no such file) or :class:`SlideReadError` (unreadable).
    """
    p = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if mpp is not None and not (isinstance(mpp, (int, float)) and mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number of µm/px (got {mpp!r})")
    if not p.exists():
        raise SlideNotFoundError(f"{p}: no such slide file; check the path (and the project's image URIs)")
    if p.is_dir() and p.suffix.lower() != ".mrxs":
        raise SlideReadError(f"{p}: is a folder, not a slide file; give the slide file itself")
    if p.is_file() and (problem := tiff_pixel_problem(p)) is not None:
        raise SlideReadError(
            f"{p}: {problem}; qcamseg reads 8-bit RGB brightfield (H&E) slides; convert it to "
            "8-bit RGB (e.g. with Fiji, vips or QuPath) or use the scanner's original file"
        )
    order = [backend] if backend != "auto" else (
        ["openslide"] if p.suffix.lower() in _OPENSLIDE_ONLY else ["tiffslide", "openslide"]
    )
    errors: list[str] = []
    for name in order:
        try:
            handle = _open_tiffslide(p) if name == "tiffslide" else _open_openslide(p)
        except SlideReadError as err:
            errors.append(str(err).split(": ", 1)[-1])
            continue
        except Exception as err:  # noqa: BLE001 - every reader failure becomes one clear error
            errors.append(f"{name}: {type(err).__name__}: {err}".strip())
            continue
        try:
            return Slide(p, handle, name, mpp=float(mpp) if mpp is not None else None)
        except Exception as err:  # noqa: BLE001
            handle.close()
            errors.append(f"{name}: {type(err).__name__}: {err}")
    raise SlideReadError(
        f"{p}: cannot open as a whole-slide image ({'; '.join(errors)}); check that the file is complete "
        "and is a supported format (SVS, tiled TIFF, OME-TIFF, NDPI, SCN; MRXS/VMS/BIF need OpenSlide)"
    )
