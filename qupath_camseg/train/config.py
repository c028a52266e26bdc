"""Training settings: :class:`TrainConfig`, what a run needs besides the project, and its parts.

The settings sit below the code that reads them: the data (:mod:`qupath_camseg.train.collect`,
:mod:`qupath_camseg.train.datasets`), the loop (:mod:`qupath_camseg.train.loop`) and the run
folder (:mod:`qupath_camseg.train.run_folder`) import this module, never the reverse. Saved with
every run as ``train_config.json`` and inside each checkpoint, so that ``--resume`` restores it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from qupath_camseg.errors import InvalidSettingsError, ModelBundleError
from qupath_camseg.model import input_multiple, normalize_arch
from qupath_camseg.train.augment import AugmentConfig

__all__ = ["FIXED_ON_RESUME", "SamplingConfig", "TrainConfig"]

# Settings that define the data and the model: a resumed run must keep them.
FIXED_ON_RESUME = (
    "classes",
    "mpp",
    "tile_px",
    "batch_size",
    "tiles_per_epoch",
    "lr",
    "weight_decay",
    "arch",
    "seed",
    "unannotated",
    "include_unannotated",
    "images",
    "val_images",
    "val_fraction",
    "stain_norm",
    "init",
)


@dataclass(frozen=True)
class SamplingConfig:
    """Where training tiles come from: fractions centred inside / on the border of target-class
    regions, inside negative regions (annotations of other classes, e.g. ``Normal``; only when
    there are some), the rest random tissue; and the tissue fraction a negative tile must hold."""

    inside_fraction: float = 0.35
    border_fraction: float = 0.15
    min_tissue: float = 0.25
    jitter: float = 0.25  # max offset of a centred tile, as a fraction of the tile size
    negative_fraction: float = 0.15  # centred inside background-class annotations (e.g. Normal), when any


@dataclass
class TrainConfig:
    """Everything a training run needs besides the project. Units: ``mpp`` µm/px, ``tile_px`` px.

    ``epochs`` × ``tiles_per_epoch`` tiles are drawn, or ``steps`` optimizer steps when given
    (default 10 epochs). ``unannotated``: ``"negative"`` (Camelyon: outlines are exhaustive) or
    ``"ignore"``. ``val_images``: names/IDs held out for validation; empty → ``val_fraction``
    of the annotated images, chosen by slide (never by tile). ``workers=None`` picks a number
    from the CPU count. ``amp``: ``"auto"`` (bf16 on GPUs that have it, else fp16), ``"bf16"``,
    ``"fp16"`` or ``"off"`` (always off on CPU). ``stain_norm``: ``"macenko"`` normalises every
    slide's stains to a reference fitted on the training slides (stored in the model, followed by
    predict; :mod:`qupath_camseg.train.stain_fit`), ``"none"`` (default) reads them as they are.
    ``door``: how the project's annotations are read (``"auto"``, ``"files"``:
    ``camseg/annotations/``, ``"paquo"``: QuPath's saved data; see
    :func:`~qupath_camseg.qupath.open_project`). ``init``: a model folder to fine-tune from (its
    weights, architecture, mpp, tile and classes; see :mod:`qupath_camseg.train.lineage`).
    """

    classes: tuple[str, ...] = ("Tumor",)
    mpp: float = 0.5
    tile_px: int = 512
    epochs: int | None = None
    steps: int | None = None
    tiles_per_epoch: int = 2048
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    arch: dict[str, Any] = field(default_factory=lambda: {"name": "unet"})
    seed: int = 0
    unannotated: str = "negative"
    include_unannotated: bool = False
    images: tuple[str, ...] = ()
    val_images: tuple[str, ...] = ()
    val_fraction: float = 0.2
    max_val_tiles: int = 512
    device: str = "auto"
    workers: int | None = None
    amp: str = "auto"
    slide_mpp: float | None = None
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int | None = None
    max_bad_steps: int = 10
    grad_clip: float = 5.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    stain_norm: str = "none"
    door: str = "auto"
    init: str | None = None

    def validate(self) -> None:
        """Raise :class:`InvalidSettingsError` (one line, naming the option) for impossible settings."""
        try:
            arch = normalize_arch({**self.arch, "n_classes": max(1, len(self.classes))})
        except ModelBundleError as err:  # an architecture option, not a model folder
            raise InvalidSettingsError(str(err)) from err
        multiple = input_multiple(arch)
        if self.tile_px < multiple or self.tile_px % multiple:
            raise InvalidSettingsError(
                f"--tile {self.tile_px} must be a multiple of {multiple} for this model; "
                f"try {max(multiple, round(self.tile_px / multiple) * multiple)}"
            )
        for name in ("mpp", "lr"):
            if not getattr(self, name) > 0:
                raise InvalidSettingsError(f"--{name} must be positive, not {getattr(self, name)}")
        for name in ("batch_size", "tiles_per_epoch"):
            if getattr(self, name) < 1:
                raise InvalidSettingsError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1 or self.steps is not None and self.steps < 1:
            raise InvalidSettingsError("--epochs and --steps must be at least 1")
        if self.unannotated not in ("negative", "ignore"):
            raise InvalidSettingsError(f"--unannotated must be 'negative' or 'ignore', not {self.unannotated!r}")
        if self.stain_norm not in ("none", "macenko"):
            raise InvalidSettingsError(f"--stain-norm must be 'none' or 'macenko', not {self.stain_norm!r}")
        if self.door not in ("auto", "files", "paquo"):
            raise InvalidSettingsError(f"--door must be auto, files or paquo, not {self.door!r}")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise InvalidSettingsError(f"--classes must name distinct classes, not {list(self.classes)}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json` (unknown keys are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        for key in ("classes", "images", "val_images"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if isinstance(kw.get("sampling"), dict):
            kw["sampling"] = SamplingConfig(**kw["sampling"])
        if isinstance(kw.get("augment"), dict):
            aug = dict(kw["augment"])
            aug["blur_sigma_px"] = tuple(aug.get("blur_sigma_px", (0.3, 1.0)))
            kw["augment"] = AugmentConfig(**aug)
        return cls(**kw)
