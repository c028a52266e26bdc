"""Export a trained model folder as a QuPath pixel classifier that runs inside QuPath, no Python.

``export_qupath(MODEL_DIR)`` writes a folder with::

    model.onnx            the network + normalisation + calibration + softmax, fixed input (OpenCV DNN)
    <name>.json           the pixel classifier QuPath loads (OpenCVDnn → model.onnx)
    model.pt              (--format torchscript|both) TorchScript for the Deep Java Library extension
    <name>-djl.json       (--format torchscript|both) the pixel classifier for model.pt
    README.md             where the files go and how to run them (GUI and script)
    export.json           provenance: sizes, classes, versions, the parity check

``install_into_project`` copies them into ``<project>/classifiers/pixel_classifiers/`` (model files
renamed ``<name>.onnx`` / ``<name>.pt``) with the JSON pointing at the copies, atomically, under the
project lock, never replacing an existing classifier of the same name unless ``overwrite`` (then the
old files are backed up to ``<project>/camseg/backups/`` first).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qupath_camseg import __version__
from qupath_camseg._io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    backup_file,
    file_lock,
    no_link,
    path_inside,
)
from qupath_camseg._runtime import require_memory
from qupath_camseg.errors import (
    ModelBundleError,
    OutputNotWritableError,
    ProjectError,
    ProjectNotFoundError,
)
from qupath_camseg.export.onnx import (
    ONNX_OPSET,
    ProbabilityModel,
    export_onnx,
    export_torchscript,
)
from qupath_camseg.export.pixel_classifier import build_pixel_classifier, set_model_uri
from qupath_camseg.export.pixel_classifier_check import validate_pixel_classifier
from qupath_camseg.model import Calibration, forward_bytes, load_bundle

__all__ = [
    "CLASSIFIER_DIR",
    "DEFAULT_PADDING_PX",
    "QuPathExport",
    "export_qupath",
    "install_into_project",
    "project_folder",
]

#: Default context on each side of a QuPath tile (px at the model's mpp).
DEFAULT_PADDING_PX = 32
#: Where QuPath looks for a project's pixel classifiers.
CLASSIFIER_DIR = Path("classifiers") / "pixel_classifiers"
_FORMATS = ("onnx", "torchscript", "both")


@dataclass
class QuPathExport:
    """What :func:`export_qupath` wrote. Sizes in px at ``mpp`` (µm/px)."""

    folder: Path
    name: str
    mpp: float
    tile_px: int
    padding_px: int
    input_px: int
    classes: list[dict[str, Any]]
    onnx: Path | None = None
    torchscript: Path | None = None
    classifiers: dict[str, Path] = field(default_factory=dict)  # "opencv" / "djl" → JSON path
    max_abs_diff: float | None = None  # ONNX (onnxruntime) vs PyTorch on a random tile
    notes: list[str] = field(default_factory=list)


def _classifier_name(model_dir: Path, name: str | None) -> str:
    raw = name or f"camseg-{model_dir.resolve().name}"
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.")
    if not clean:
        raise ModelBundleError(f"classifier name {raw!r} has no usable characters; pass --name with letters or digits")
    return clean


def _sizes(tile_px: int, padding_px: int | None, multiple: int, *, explicit_padding: bool) -> tuple[int, int]:
    """Return (padding, input) with input = tile + 2·padding divisible by ``multiple``."""
    pad = DEFAULT_PADDING_PX if padding_px is None else int(padding_px)
    if tile_px < 1 or pad < 0:
        raise ModelBundleError(f"--tile-px must be ≥ 1 and --padding ≥ 0 (got {tile_px}, {pad})")
    if (tile_px + 2 * pad) % multiple == 0:
        return pad, tile_px + 2 * pad
    if not explicit_padding:  # smallest padding ≥ the default that fits
        while (tile_px + 2 * pad) % multiple:
            pad += 1
            if pad > DEFAULT_PADDING_PX + multiple:
                break
        if (tile_px + 2 * pad) % multiple == 0:
            return pad, tile_px + 2 * pad
    good = [p for p in range(pad, pad + multiple) if (tile_px + 2 * p) % multiple == 0]
    hint = f"--padding {good[0]}" if good else f"a --tile-px divisible by {multiple // 2 if multiple % 2 == 0 else multiple}"
    raise ModelBundleError(
        f"tile {tile_px} + 2 × padding {pad} = {tile_px + 2 * pad} px is not divisible by {multiple}, which "
        f"this network needs; use {hint}"
    )


def _prepare_out(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputNotWritableError(f"{out} is a file; choose a folder with --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "export.json").is_file() and not overwrite:
        raise OutputNotWritableError(
            f"{out} already holds files that are not a qcamseg export; choose an empty --out folder or add --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputNotWritableError(f"cannot create {out}: {err.strerror}; choose a folder you can write to (--out)") from err


def _onnx_parity(model: torch.nn.Module, onnx_path: Path, input_px: int,
                 calibration: Calibration | None) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, 3, input_px, input_px)).astype(np.float32)
    with torch.no_grad():
        ref = ProbabilityModel(model, calibration).eval()(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.abs(got - ref).max())


def export_qupath(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "onnx",
    padding_px: int | None = None,
    tile_px: int | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> QuPathExport:
    """Export ``model_dir`` (written by ``qcamseg train``) for QuPath; see the module docstring.

    ``tile_px``: QuPath output tile (default: the model's training tile); ``padding_px``: context on
    each side (default 32, nudged up so tile + 2·padding suits the network); ``fmt``: ``onnx``,
    ``torchscript`` or ``both``. Output goes to ``out_dir`` (default ``MODEL_DIR/qupath``).
    """
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, not {fmt!r}")
    model_dir = Path(model_dir)
    model, config = load_bundle(model_dir)
    model = model.float().eval()
    cname = _classifier_name(model_dir, name)
    tile = int(tile_px or config.tile_px)
    pad, input_px = _sizes(tile, padding_px, config.input_multiple, explicit_padding=padding_px is not None)
    # tracing, the ONNX parity check and onnxruntime each hold a forward pass
    require_memory(3 * forward_bytes(config, input_px), what=f"exporting at {input_px} px per tile (--tile-px {tile})",
                   fix="choose a smaller --tile-px (QuPath tiles are typically 256-1024 px)")
    out = Path(out_dir) if out_dir is not None else model_dir / "qupath"
    _prepare_out(out, overwrite=overwrite)
    result = QuPathExport(out.resolve(), cname, config.mpp, tile, pad, input_px, [dict(c) for c in config.classes])
    targets: list[tuple[str, str, Path]] = []
    if fmt in ("onnx", "both"):
        result.onnx = export_onnx(model, out / "model.onnx", input_px=input_px,
                                  calibration=config.calibration).resolve()
        result.max_abs_diff = _onnx_parity(model, result.onnx, input_px, config.calibration)
        targets.append(("opencv", "OpenCVDnn", result.onnx))
    if fmt in ("torchscript", "both"):
        result.torchscript = export_torchscript(model, out / "model.pt", input_px=input_px,
                                                calibration=config.calibration).resolve()
        targets.append(("djl", "DjlDnnModel", result.torchscript))
        result.notes.append("model.pt needs QuPath's Deep Java Library extension with the PyTorch engine")
    if config.stain is not None:
        result.notes.append("the model was trained with --stain-norm macenko, which QuPath's pixel classifier does "
                            "not apply: on slides stained unlike the training slides, qcamseg predict will do better")
    if config.calibration is not None:
        result.notes.append(f"probabilities are calibrated as in qcamseg predict (temperature "
                            f"{config.calibration.temperature:.4g}, prior shift {[round(b, 4) for b in config.calibration.logit_bias]})")
    for key, dnn, model_file in targets:
        data = build_pixel_classifier(
            model_uri=model_file.as_uri(), mpp=config.mpp, input_px=input_px, padding_px=pad,
            classes=config.classes, dnn=dnn, name=cname,
        )  # fmt: skip
        validate_pixel_classifier(data, check_files=True)
        path = out / (f"{cname}.json" if key == "opencv" else f"{cname}-djl.json")
        atomic_write_json(path, data)
        result.classifiers[key] = path.resolve()
    atomic_write_text(out / "README.md", _readme(result))
    atomic_write_json(out / "export.json", _provenance(result, model_dir))
    return result


def _provenance(result: QuPathExport, model_dir: Path) -> dict[str, Any]:
    import onnx

    return {
        "format": "qupath-camseg-qupath-export",
        "name": result.name,
        "model_dir": str(model_dir.resolve()),
        "mpp": result.mpp,
        "tile_px": result.tile_px,
        "padding_px": result.padding_px,
        "input_px": result.input_px,
        "classes": result.classes,
        "background_class": "Ignore*",
        "files": {
            "onnx": result.onnx.name if result.onnx else None,
            "torchscript": result.torchscript.name if result.torchscript else None,
            "classifiers": {k: p.name for k, p in result.classifiers.items()},
        },
        "onnx_opset": ONNX_OPSET,
        "check": {"onnxruntime_vs_pytorch_max_abs_diff": result.max_abs_diff},
        "versions": {"qupath_camseg": __version__, "torch": torch.__version__, "onnx": onnx.__version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _readme(r: QuPathExport) -> str:
    classes = ", ".join(f"{c['name']} (channel {i})" for i, c in enumerate(r.classes, start=1))
    djl = (
        f"\n`{r.name}-djl.json` + `model.pt` (TorchScript) are the same classifier for QuPath's Deep Java "
        "Library extension (Extensions › Deep Java Library, PyTorch engine); use them only if you need "
        "a GPU through PyTorch.\n"
        if r.torchscript
        else ""
    )
    return f"""# {r.name}: QuPath pixel classifier

Made by qupath-camseg {__version__}. Runs inside QuPath 0.5, 0.6 and 0.7 with no Python and no GPU
(QuPath's own OpenCV runs `model.onnx`).

- Resolution: {r.mpp:g} µm/px. QuPath downsamples each image to this pixel size, so images need a
  pixel size (Image tab › Pixel width/height in µm).
- Classes: {classes}. Channel 0 (background) is `Ignore*`: QuPath creates no objects for it.
- Tiles: {r.tile_px} px with {r.padding_px} px of context on each side (network input {r.input_px} px).
{djl}
## Put it in a QuPath project

Copy `{r.name}.json` and `model.onnx` into the project folder's `classifiers/pixel_classifiers/`
(create the folder if needed), renaming `model.onnx` to `{r.name}.onnx`, then open
`{r.name}.json` in a text editor and change `pathModel` to the new location
(`file:/…/classifiers/pixel_classifiers/{r.name}.onnx`). Or let qcamseg do all of this:

    qcamseg export-qupath MODEL_DIR --into-project /path/to/project

(`pathModel` must be an absolute path: if you move the project, run that command again, or use the
script `camseg_Apply_pixel_classifier.groovy`, which finds `{r.name}.onnx` next to the JSON.)

## Run it from the QuPath window

1. Open an image of the project; optionally draw or select an annotation (e.g. the tissue).
2. Classify › Pixel classification › Load pixel classifier, choose `{r.name}`; the overlay shows
   the prediction.
3. In that dialog: **Create objects** (annotations around each class, inside the selection or the
   whole image), or **Measure** (area of each class per selected object).

## Run it from a script (Automate › Script editor; "Run for project" for many images)

```groovy
def classifier = loadPixelClassifier('{r.name}')
selectAnnotations()   // or createFullImageAnnotation(true) for the whole image
createAnnotationsFromPixelClassifier(classifier, 1000.0, 1000.0, 'SPLIT')  // min object / hole area µm²
addPixelClassifierMeasurements(classifier, '{r.name}')
```

The script `groovy/camseg_Apply_pixel_classifier.groovy` from qupath-camseg does the same and also
works after the project has moved.
"""


def project_folder(project: str | os.PathLike[str]) -> Path:
    """The folder of a QuPath project (its folder or project.qpproj); ProjectNotFoundError if none."""
    path = Path(project)
    folder = path.parent if path.suffix == ".qpproj" else path
    if not (folder / "project.qpproj").is_file():
        raise ProjectNotFoundError(f"no project.qpproj in {folder}; pass a QuPath project folder to --into-project")
    return folder


def install_into_project(
    export: QuPathExport, project: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Copy an export into ``<project>/classifiers/pixel_classifiers/``; return the files written.

    Raises :class:`ProjectError` if a classifier of the same name exists and ``overwrite`` is false.
    """
    folder = project_folder(project).resolve()
    no_link(folder / "classifiers")
    no_link(folder / "camseg")
    dest = path_inside(folder, *CLASSIFIER_DIR.parts)  # a crafted project's links cannot send the files elsewhere
    plan: list[tuple[str, Path, Path, Path]] = []  # (key, model src, model dest, json dest)
    if "opencv" in export.classifiers and export.onnx:
        plan.append(("opencv", export.onnx, dest / f"{export.name}.onnx", dest / f"{export.name}.json"))
    if "djl" in export.classifiers and export.torchscript:
        plan.append(("djl", export.torchscript, dest / f"{export.name}.pt", dest / f"{export.name}-djl.json"))
    with file_lock(folder / "camseg" / "camseg.lock", what=f"project {folder}"):
        existing = [p for _, _, m, j in plan for p in (m, j) if p.exists()]
        if existing and not overwrite:
            raise ProjectError(
                f"{existing[0]} already exists in project {folder}; pass --overwrite to replace it "
                f"(the old files are backed up) or --name to export under another name"
            )
        written: list[Path] = []
        for path in existing:
            backup_file(path, backup_dir=folder / "camseg" / "backups")
        for key, src, model_dest, json_dest in plan:
            atomic_write_bytes(model_dest, src.read_bytes())  # model first: a JSON never dangles
            data = json.loads(export.classifiers[key].read_text(encoding="utf-8"))
            set_model_uri(data, model_dest.as_uri())
            validate_pixel_classifier(data, check_files=True)
            atomic_write_json(json_dest, data)
            written += [model_dest, json_dest]
    return written
