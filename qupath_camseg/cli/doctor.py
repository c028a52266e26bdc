"""``qcamseg doctor``: what this machine offers the tool, and what is missing (with the fix).

Exit code 0 when the tool can run (Python ≥ 3.10, torch, a slide reader, a writable temp folder);
1 when something required is missing. QuPath is optional (the QuPath-free door always works).
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import tempfile
from pathlib import Path

import click

__all__ = ["doctor", "collect_report"]

_PACKAGES = ("qupath-camseg", "numpy", "torch", "tiffslide", "tifffile", "imagecodecs", "openslide-python",
             "openslide-bin", "shapely", "scikit-image", "paquo", "safetensors", "click", "onnx", "onnxruntime")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_lines() -> tuple[list[str], bool]:
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - report any broken install, never crash
        return [f"torch: NOT usable ({type(err).__name__}: {err}); pip install torch"], False
    lines = [f"torch: {torch.__version__} (threads {torch.get_num_threads()})"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        lines.append(f"CUDA: {torch.version.cuda}, {len(names)} device(s): {', '.join(names)}")
    else:
        built = torch.version.cuda or "none (CPU build)"
        lines.append(f"CUDA: not available (torch built with CUDA {built}); training and prediction use the CPU")
    mps = getattr(torch.backends, "mps", None)
    lines.append(f"MPS (Apple GPU): {'available' if mps is not None and mps.is_available() else 'not available'}")
    return lines, True


def _slide_reader_lines() -> tuple[list[str], bool]:
    lines, ok = [], False
    try:
        import tiffslide

        lines.append(f"tiffslide: {tiffslide.__version__}")
        ok = True
    except Exception as err:  # noqa: BLE001
        lines.append(f"tiffslide: NOT usable ({err}); pip install tiffslide")
    try:
        import openslide

        lib = getattr(openslide, "__library_version__", "?")
        lines.append(f"openslide: python {openslide.__version__}, library {lib}")
        ok = True
    except Exception as err:  # noqa: BLE001 - optional reader
        lines.append(f"openslide: not available ({type(err).__name__}); optional: pip install openslide-python openslide-bin")
    return lines, ok


def _qupath_line() -> str:
    try:
        from qupath_camseg.qupath import find_qupath_installation

        folder, reason = find_qupath_installation()
    except Exception as err:  # noqa: BLE001 - paquo broken: report, the file door still works
        return f"QuPath: cannot ask paquo ({type(err).__name__}: {err}); the QuPath-free door is used"
    if folder is None:
        return f"QuPath: not found; the QuPath-free door is used ({reason})"
    return f"QuPath: {reason}; projects open through paquo"


def _temp_line() -> tuple[str, bool]:
    try:
        with tempfile.NamedTemporaryFile(prefix="qcamseg-doctor-") as fh:
            fh.write(b"ok")
        return f"temp folder: {Path(tempfile.gettempdir())} (writable)", True
    except OSError as err:
        return f"temp folder: {tempfile.gettempdir()} NOT writable ({err}); set TMPDIR to a writable folder", False


def _shm_line() -> str | None:
    """How much room worker processes have to hand tiles over (``None`` off Linux)."""
    from qupath_camseg._runtime import shm_free_bytes

    free = shm_free_bytes()
    if free is None:
        return None
    if free < 1 << 30:
        return (f"shared memory (/dev/shm): {free >> 20} MB free - little for loader/reader processes: training "
                "uses fewer workers and GPU prediction reads with threads; in Docker pass --shm-size 8g")
    return f"shared memory (/dev/shm): {free >> 30} GB free"


def collect_report() -> tuple[list[str], bool]:
    """The report's lines and whether the tool can run on this machine."""
    py_ok = sys.version_info >= (3, 10)
    lines = [
        f"Python: {platform.python_version()} ({sys.executable})" + ("" if py_ok else " - needs Python 3.10 or newer"),
        f"platform: {platform.platform()} ({platform.machine()})",
    ]
    versions = [f"{d} {v}" for d in _PACKAGES if (v := _version(d)) is not None]
    missing = [d for d in _PACKAGES if _version(d) is None]
    lines.append("packages: " + ", ".join(versions))
    if missing:
        lines.append("not installed (optional unless named above): " + ", ".join(missing))
    torch_lines, torch_ok = _torch_lines()
    reader_lines, reader_ok = _slide_reader_lines()
    temp, temp_ok = _temp_line()
    lines += torch_lines + reader_lines + [_qupath_line(), temp]
    if (shm := _shm_line()) is not None:
        lines.append(shm)
    return lines, py_ok and torch_ok and reader_ok and temp_ok


@click.command("doctor")
def doctor() -> int:
    """Check Python, torch/CUDA/MPS, slide readers, QuPath, the temp folder and shared memory."""
    lines, ok = collect_report()
    for line in lines:
        click.echo(line)
    click.echo("ok: qcamseg can run here" if ok else "problem: fix the lines marked NOT above, then rerun qcamseg doctor")
    return 0 if ok else 1
