"""What a QuPath project records about an image file: the reader (``providerClassName``) and the
server metadata (level-0 size, pyramid levels, µm/px, tile size), as QuPath itself writes them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qupath_camseg.errors import CamsegError
from qupath_camseg.qupath.colors import rgb_to_argb
from qupath_camseg.qupath.uris import path_to_uri
from qupath_camseg.wsi import open_slide

__all__ = ["ImageInfo", "read_image_info", "server_builder"]

_OPENSLIDE_PROVIDER = "qupath.lib.images.servers.openslide.OpenslideServerBuilder"
_BIOFORMATS_PROVIDER = "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder"


@dataclass(frozen=True)
class ImageInfo:
    """What QuPath's server metadata records: level-0 size (w, h) px, pyramid level sizes,
    level-0 µm/px (None if unknown) and the file's tile size in px."""

    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: float | None = None
    tile_px: int = 256


def read_image_info(path: str | os.PathLike[str]) -> ImageInfo | None:
    """:class:`ImageInfo` of a slide file (via :mod:`qupath_camseg.wsi.slides`), None if unreadable."""
    try:
        with open_slide(path) as slide:
            return ImageInfo(
                int(slide.dimensions[0]), int(slide.dimensions[1]),
                tuple((int(w), int(h)) for w, h in slide.level_dimensions),
                float(slide.mpp) if slide.has_mpp else None,
            )
    except (CamsegError, OSError):
        return None


def server_builder(src: Path, where: Path, name: str, info: ImageInfo | None) -> dict[str, Any]:
    """A project entry's ``serverBuilder`` for the image file ``src`` that will be at ``where``.

    ``info``: the image's size/levels/mpp when known, else read from ``src`` (no ``metadata``
    when unreadable); recorded as QuPath's server metadata so QuPath shows the right pixel size.
    """
    provider = _provider_for(src)
    builder: dict[str, Any] = {
        "builderType": "uri",
        "providerClassName": provider,
        "uri": path_to_uri(where),
        "args": [] if provider == _OPENSLIDE_PROVIDER else ["--series", "0"],
    }
    info = info if info is not None else read_image_info(src)
    if info is not None:
        builder["metadata"] = _server_metadata(info, name)
    return builder


def _provider_for(path: Path) -> str:
    """QuPath's reader for ``path``: OpenSlide when it recognises the file, else Bio-Formats."""
    try:
        import openslide
    except ImportError:  # optional dependency: Bio-Formats reads every TIFF we write
        return _BIOFORMATS_PROVIDER
    try:
        return _OPENSLIDE_PROVIDER if openslide.OpenSlide.detect_format(str(path)) else _BIOFORMATS_PROVIDER
    except Exception:  # noqa: BLE001 - any failure just means "not for OpenSlide"
        return _BIOFORMATS_PROVIDER


def _server_metadata(info: ImageInfo, name: str) -> dict[str, Any]:
    """ImageServerMetadata in the form QuPath writes it (size, levels, µm/px, tiles, RGB channels)."""
    meta: dict[str, Any] = {
        "name": name, "width": info.width, "height": info.height, "sizeZ": 1, "sizeT": 1,
        "channelType": "DEFAULT", "isRGB": True, "pixelType": "UINT8",
        "levels": [{"downsample": info.width / w if i else 1.0, "width": w, "height": h}
                   for i, (w, h) in enumerate(info.level_dimensions)],
        "channels": [{"name": n, "color": rgb_to_argb(c)} for n, c in
                     (("Red", (255, 0, 0)), ("Green", (0, 255, 0)), ("Blue", (0, 0, 255)))],
    }
    if info.mpp is not None:
        meta["pixelCalibration"] = {
            "pixelWidth": {"value": float(info.mpp), "unit": "µm"},
            "pixelHeight": {"value": float(info.mpp), "unit": "µm"},
            "zSpacing": {"value": 1.0, "unit": "z-slice"},
            "timeUnit": "SECONDS",
            "timepoints": [],
        }
    meta["preferredTileWidth"] = meta["preferredTileHeight"] = int(info.tile_px)
    return meta
