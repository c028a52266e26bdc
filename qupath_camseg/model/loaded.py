"""A model folder loaded for inference: the network in eval mode on its device, with the bundle's
config and the SHA-256 of its weights (the identity that reports and resume keys record); and, on
demand, the folder's screening network (:func:`load_screen`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qupath_camseg._runtime import resolve_device
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model.bundle import WEIGHTS_NAME, ModelConfig, load_bundle, load_screen_bundle

__all__ = ["LoadedModel", "ScreenModel", "compile_model", "load_model", "load_screen"]


@dataclass
class LoadedModel:
    """A model in eval mode on ``device`` with its bundle config and weights' SHA-256.

    ``model`` maps float RGB ``(B, 3, t, t)`` (0-255) to logits ``(B, n_channels, t', t')``;
    ``path`` is the model folder (``None`` for a network built in memory); ``compiled``: the
    network went through :func:`compile_model`.
    """

    model: torch.nn.Module
    config: ModelConfig
    path: Path | None
    sha256: str
    device: str
    compiled: bool = False
    screen: ScreenModel | None = None


@dataclass
class ScreenModel:
    """A model folder's screening network (``model``: a :class:`LoadedModel` at the screen's own
    pixel size) and its ``model.json`` section: ``threshold`` (foreground probability at or above
    which a pixel is screened positive), ``recall`` and ``kept_tissue_fraction`` on the
    validation slides, ``probability_lut`` (256 calibrated probabilities, one per stored byte)."""

    model: LoadedModel
    section: dict[str, Any]

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold (``None``: the screen was never calibrated)."""
        t = self.section.get("threshold")
        return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def compile_model(lm: LoadedModel) -> LoadedModel:
    """``lm`` with its network compiled by ``torch.compile`` (static shapes: the inference loop
    pads short batches to the batch size, so one graph serves a whole slide). The first batch
    pays the compile time (tens of seconds; inductor caches it on disk for later runs); after that
    tiles run faster on a GPU. Same probabilities up to float rounding."""
    if lm.compiled:
        return lm
    return LoadedModel(torch.compile(lm.model, dynamic=False), lm.config, lm.path, lm.sha256, lm.device, True,
                       lm.screen)


def load_model(model_dir: str | Path, *, device: str = "auto") -> LoadedModel:
    """Load a model folder for inference (``MODEL_DIR`` with ``model.json`` + ``model.safetensors``)."""
    dev = resolve_device(device)
    model, config = load_bundle(model_dir, device=dev)
    folder = Path(model_dir)
    folder = folder.parent if folder.is_file() else folder
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    if dev.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    if config.tile_px % config.input_multiple:
        raise ModelBundleError(f"{folder}: tile_px {config.tile_px} is not a multiple of {config.input_multiple}; retrain or fix model.json")
    return LoadedModel(model, config, folder, digest, dev)


def load_screen(lm: LoadedModel) -> ScreenModel | None:
    """The screening network of ``lm``'s model folder, loaded once onto ``lm.device`` (``None``:
    the folder has none, or the model was not loaded from a folder)."""
    if lm.screen is not None or lm.path is None or lm.config.screen is None:
        return lm.screen
    loaded = load_screen_bundle(lm.path, device=lm.device)
    if loaded is None:
        return None
    model, config, section = loaded
    if lm.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    lm.screen = ScreenModel(LoadedModel(model, config, lm.path, str(section.get("sha256", "")), lm.device), section)
    return lm.screen
