"""Model folders: weights in safetensors plus a ``model.json`` holding everything inference needs.

A model folder (``MODEL_DIR``) holds::

    model.safetensors   the weights (safetensors: no code can hide in it)
    model.json          architecture, pixel size, tile size, classes and colours, input convention,
                        package version, training summary; and, when there is one, a ``screen``
                        section (:func:`save_screen`)
    screen.safetensors  optional: a small screening network at a coarse pixel size, whose
                        threshold was chosen on the validation slides (``predict --cascade``)

``save_bundle`` writes the weights first and ``model.json`` last, each atomically, so a folder
with a ``model.json`` always has matching weights. ``load_bundle`` never unpickles: ``.pt``,
``.pth``, ``.ckpt`` and ``.bin`` files are refused with an explanation.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from qupath_camseg import __version__
from qupath_camseg._io import atomic_write_bytes, atomic_write_json
from qupath_camseg.annotations import default_class_color
from qupath_camseg.errors import ModelBundleError, StainNormalizationError
from qupath_camseg.model.calibration import FORMULA, Calibration
from qupath_camseg.model.networks import build_model, input_multiple, normalize_arch
from qupath_camseg.wsi import StainReference

__all__ = ["ModelConfig", "save_bundle", "load_bundle", "read_model_config", "WEIGHTS_NAME", "CONFIG_NAME",
           "write_model_config", "SCREEN_WEIGHTS_NAME", "save_screen", "load_screen_bundle"]

WEIGHTS_NAME = "model.safetensors"
SCREEN_WEIGHTS_NAME = "screen.safetensors"
CONFIG_NAME = "model.json"
_FORMAT = "qupath-camseg-model"
_FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def _now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelConfig:
    """What a model folder says about its network (stored as ``model.json``).

    ``classes`` lists the foreground classes in output-channel order (channel ``i + 1``), each
    ``{"name": str, "color": [r, g, b]}``; channel 0 is background. ``mpp`` is the pixel size
    (µm/px) the model was trained at; ``tile_px`` the training tile size (px at ``mpp``).
    ``stain``: the stain reference of ``qcamseg train --stain-norm macenko``
    (:meth:`~qupath_camseg.wsi.stain.StainReference.to_json`; absent from older model folders and
    from models trained without it), which predict normalises every slide to.
    ``calibration``: the logit transform before the softmax
    (:class:`~qupath_camseg.model.calibration.Calibration`; ``None``: the raw softmax, as in
    folders written before it existed).
    ``screen``: the screening network's section (``None``: none; see :func:`save_screen`).
    """

    arch: dict[str, Any]
    mpp: float
    tile_px: int
    classes: list[dict[str, Any]]
    version: str = __version__
    created: str = field(default_factory=_now_utc)
    training: dict[str, Any] = field(default_factory=dict)
    stain: dict[str, Any] | None = None  # the stain reference (``--stain-norm``); None: no normalisation
    calibration: Calibration | None = None
    screen: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.arch = normalize_arch({**self.arch, "n_classes": len(self.classes)} if self.classes else self.arch)
        self.classes = [_check_class(c) for c in self.classes]
        self.stain = None if self.stain is None else self.stain_reference.to_json()  # type: ignore[union-attr]

    @property
    def stain_reference(self) -> StainReference | None:
        """The stain reference tiles are normalised to before the network sees them (``None``: none)."""
        try:
            return None if self.stain is None else StainReference.from_json(self.stain)
        except StainNormalizationError as err:
            raise ModelBundleError(f"stain: {err}; retrain the model or remove the stain entry") from err

    @property
    def class_names(self) -> list[str]:
        """Foreground class names; class ``i`` is output channel ``i + 1``."""
        return [c["name"] for c in self.classes]

    @property
    def n_channels(self) -> int:
        """Number of output channels (background + classes)."""
        return 1 + len(self.classes)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be divisible by this (pad tiles up to it)."""
        return input_multiple(self.arch)

    def to_json(self) -> dict[str, Any]:
        """The ``model.json`` content (a JSON-ready dict)."""
        data = asdict(self)
        if data["stain"] is None:  # models without stain normalisation keep today's model.json
            del data["stain"]
        data.pop("calibration")
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_json()
        if data.get("screen") is None:
            data.pop("screen", None)  # as before screens existed: older versions read it
        data = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **data}
        data["weights"] = WEIGHTS_NAME
        data["input"] = {
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "range": [0, 255],
            "normalization": "inside the model (mean/std buffers)",
            "multiple_px": self.input_multiple,
        }
        data["output"] = {"kind": "logits", "channels": ["background", *self.class_names], "activation": "softmax"}
        if self.calibration is not None:
            data["output"]["calibration"] = FORMULA
        return data

    @classmethod
    def from_json(cls, data: Any, *, source: str = "model.json") -> ModelConfig:
        """Validate a ``model.json`` dict; raise :class:`ModelBundleError` naming ``source``."""
        if not isinstance(data, dict):
            raise ModelBundleError(f"{source} must hold a JSON object; re-save the model with qcamseg train")
        fmt_version = data.get("format_version", _FORMAT_VERSION)
        if data.get("format", _FORMAT) != _FORMAT:
            raise ModelBundleError(f"{source} is not a qupath-camseg model (format {data.get('format')!r})")
        if not isinstance(fmt_version, int) or fmt_version > _FORMAT_VERSION:
            raise ModelBundleError(
                f"{source} has model format {fmt_version!r}, newer than this qupath-camseg "
                f"{__version__} understands; upgrade with: pip install -U qupath-camseg"
            )
        missing = [k for k in ("arch", "mpp", "tile_px", "classes") if k not in data]
        if missing:
            raise ModelBundleError(
                f"{source} lacks {', '.join(missing)}; the model folder is incomplete, retrain or re-export it"
            )
        mpp, tile_px = data["mpp"], data["tile_px"]
        restore = "restore model.json from the training output (or retrain)"
        if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not (mpp > 0 and math.isfinite(mpp)):
            raise ModelBundleError(f"{source}: mpp must be a positive number (µm/px), not {mpp!r}; {restore}")
        if isinstance(tile_px, bool) or not isinstance(tile_px, int) or tile_px < 1:
            raise ModelBundleError(f"{source}: tile_px must be a positive integer, not {tile_px!r}; {restore}")
        if not isinstance(data["arch"], dict) or not isinstance(data["classes"], list) or not data["classes"]:
            raise ModelBundleError(f"{source}: arch must be an object and classes a non-empty list; {restore}")
        calibration = None if data.get("calibration") is None else Calibration.from_json(
            data["calibration"], n_channels=1 + len(data["classes"]), source=source)
        try:
            return cls(
                arch=data["arch"],
                mpp=float(mpp),
                tile_px=tile_px,
                classes=data["classes"],
                version=str(data.get("version", "unknown")),
                created=str(data.get("created", "")),
                training=dict(data.get("training") or {}),
                stain=data.get("stain"),
                calibration=calibration,
                screen=dict(data["screen"]) if isinstance(data.get("screen"), dict) else None,
            )
        except ModelBundleError as err:
            raise ModelBundleError(f"{source}: {err}") from err


def _check_class(item: Any) -> dict[str, Any]:
    """A class entry as ``{"name": str, "color": [r, g, b], ...}`` (a bare name gets its default colour)."""
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ModelBundleError(f"each class must be {{'name': str, 'color': [r, g, b]}}, not {item!r}")
    color = item.get("color")
    if color is None:
        color = list(default_class_color(item["name"]))
    if not (
        isinstance(color, (list, tuple))
        and len(color) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in color)
    ):
        raise ModelBundleError(f"class {item['name']!r}: color must be [r, g, b] with 0–255 integers, not {color!r}")
    return {**item, "name": item["name"], "color": [int(v) for v in color]}


def save_bundle(model_dir: str | os.PathLike[str], model: nn.Module, config: ModelConfig) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``model_dir`` (each atomically).

    The weights are saved contiguous (channels-last training is fine) and on the CPU. Returns the
    folder. Raises :class:`~qupath_camseg.errors.OutputNotWritableError` if it cannot be written.
    """
    folder = Path(model_dir)
    module = getattr(model, "module", model)  # DistributedDataParallel / DataParallel wrappers
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    meta = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION)}
    atomic_write_bytes(folder / WEIGHTS_NAME, st_save(state, metadata=meta))
    atomic_write_json(folder / CONFIG_NAME, config.to_json())
    return folder


def write_model_config(model_dir: str | os.PathLike[str], config: ModelConfig) -> Path:
    """Rewrite only ``MODEL_DIR/model.json`` (atomically) for the weights already there, e.g. to
    add the calibration fitted after training. Returns the file."""
    folder = _resolve_folder(Path(model_dir))
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelBundleError(f"{folder} has no {WEIGHTS_NAME}; save the whole bundle with save_bundle")
    atomic_write_json(folder / CONFIG_NAME, config.to_json())
    return folder / CONFIG_NAME


def read_model_config(model_dir: str | os.PathLike[str]) -> ModelConfig:
    """Read and validate ``MODEL_DIR/model.json`` without loading weights."""
    folder = _resolve_folder(Path(model_dir))
    path = folder / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelBundleError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}); retrain or restore the model folder"
        ) from err
    except (RecursionError, UnicodeDecodeError) as err:  # a crafted file: nested thousands deep, or binary
        raise ModelBundleError(f"{path} is not a model.json ({type(err).__name__}); retrain or restore the model "
                               "folder") from err
    except OSError as err:
        raise ModelBundleError(f"cannot read {path}: {err.strerror}") from err
    return ModelConfig.from_json(data, source=str(path))


def _resolve_folder(path: Path) -> Path:
    """Accept the folder itself or a file inside it; refuse pickles and folders without model.json."""
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise ModelBundleError(
                f"{path} is a pickle-based PyTorch file; qcamseg never unpickles (pickles can run code). "
                "Pass a model folder with model.safetensors + model.json (as written by qcamseg train)"
            )
        if path.name in (CONFIG_NAME, WEIGHTS_NAME):
            return path.parent
        raise ModelBundleError(f"{path} is a file; pass the model folder holding {CONFIG_NAME} and {WEIGHTS_NAME}")
    if not path.exists():
        raise ModelBundleError(
            f"model folder {path} does not exist; train one with: qcamseg train PROJECT --out {path}"
        )
    if not (path / CONFIG_NAME).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise ModelBundleError(
                f"{path} holds only pickle-based weights ({', '.join(pickles)}) and no {CONFIG_NAME}; qcamseg "
                "never unpickles. Use a folder written by qcamseg train (model.safetensors + model.json)"
            )
        hint = (
            " (training may still be running or was interrupted before its first validation)"
            if (path / "checkpoints").is_dir()
            else ""
        )
        raise ModelBundleError(f"{path} has no {CONFIG_NAME}{hint}; pass a folder written by qcamseg train")
    return path


def load_bundle(
    model_dir: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Load a model folder: returns ``(model in eval mode on device, config)``.

    Only safetensors weights are read (never pickles). Raises :class:`ModelBundleError` for a
    missing or incomplete folder, invalid ``model.json`` or weights that do not fit the architecture.
    """
    folder = _resolve_folder(Path(model_dir))
    config = read_model_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelBundleError(
            f"{folder} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the model folder is incomplete, copy it again"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelBundleError(
            f"{weights} is not a valid safetensors file ({err}); qcamseg loads safetensors only, never pickles - "
            "use a model folder written by qcamseg train"
        ) from err
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # such a model predicts nothing ("0 tumour regions") without saying why
        raise ModelBundleError(
            f"{weights} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}): training diverged or the "
            "file was damaged; retrain, or use the model folder of an earlier run")
    model = build_model(config.arch, pretrained=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelBundleError(
            f"{weights} does not match the architecture in {CONFIG_NAME} ({first}); the folder mixes two models - "
            "use the model.json that came with these weights, or retrain"
        ) from err
    model.eval()
    return model.to(device), config


def save_screen(model_dir: str | os.PathLike[str], model: nn.Module, screen: ModelConfig,
                calibration: dict[str, Any]) -> Path:
    """Add a screening network to the model folder: ``screen.safetensors``, then ``model.json``
    with a ``screen`` section (the screen's own config, its weights' SHA-256 and ``calibration``:
    threshold, recall, kept tissue fraction, ...), each written atomically. The main weights are
    untouched; a screen already there is replaced."""
    folder = _resolve_folder(Path(model_dir))
    config = read_model_config(folder)
    module = getattr(model, "module", model)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    data = st_save(state, metadata={"format": _FORMAT, "format_version": str(_FORMAT_VERSION), "role": "screen"})
    atomic_write_bytes(folder / SCREEN_WEIGHTS_NAME, data)
    section = {k: v for k, v in screen.to_json().items() if k in ("arch", "mpp", "tile_px", "classes", "version",
                                                                  "created", "training")}
    config.screen = {"weights": SCREEN_WEIGHTS_NAME, "sha256": hashlib.sha256(data).hexdigest(), **section,
                     **calibration}
    atomic_write_json(folder / CONFIG_NAME, config.to_json())
    return folder


def load_screen_bundle(model_dir: str | os.PathLike[str], *, device: str | torch.device = "cpu"
                       ) -> tuple[nn.Module, ModelConfig, dict[str, Any]] | None:
    """The folder's screening network ``(model in eval mode on device, its config, the screen
    section)``, or ``None`` when it has none. Safetensors only; a damaged screen raises
    :class:`ModelBundleError` naming the fix."""
    folder = _resolve_folder(Path(model_dir))
    section = read_model_config(folder).screen
    if section is None:
        return None
    source = f"{folder / CONFIG_NAME} (screen)"
    fix = f"add it again with: qcamseg train PROJECT --out {folder} --screen, or predict with --cascade off"
    config = ModelConfig.from_json({k: v for k, v in section.items() if k != "screen"}, source=source)
    weights = folder / str(section.get("weights", SCREEN_WEIGHTS_NAME))
    if weights.parent != folder or not weights.is_file():
        raise ModelBundleError(f"{folder} lists a screen but has no {SCREEN_WEIGHTS_NAME}; {fix}")
    try:
        state = load_file(str(weights), device="cpu")
        model = build_model(config.arch, pretrained=False)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelBundleError(f"{weights} cannot be loaded as the screen in {CONFIG_NAME} ({first}); {fix}") from err
    model.eval()
    return model.to(device), config, section
