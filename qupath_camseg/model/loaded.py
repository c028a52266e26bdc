"""A model folder loaded for inference: the network in eval mode on its device, with the bundle's
config and the SHA-256 of its weights (the identity that reports and resume keys record).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from qupath_camseg._runtime import resolve_device
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.model.bundle import WEIGHTS_NAME, ModelConfig, load_bundle

__all__ = ["LoadedModel", "compile_model", "load_model"]


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


def compile_model(lm: LoadedModel) -> LoadedModel:
    """``lm`` with its network compiled by ``torch.compile`` (static shapes: the inference loop
    pads short batches to the batch size, so one graph serves a whole slide). The first batch
    pays the compile time (tens of seconds; inductor caches it on disk for later runs); after that
    tiles run faster on a GPU. Same probabilities up to float rounding."""
    if lm.compiled:
        return lm
    return LoadedModel(torch.compile(lm.model, dynamic=False), lm.config, lm.path, lm.sha256, lm.device, True)


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
