"""The machine a command runs on: device, worker counts, shared memory, versions.

One place for the run-time choices that training and prediction share: which torch device
``--device auto`` means (one GPU per ``torchrun`` process), how many reader/loader workers a
machine affords, how many worker processes fit in ``/dev/shm`` (containers often give it 64 MB),
and the versions recorded with every output. torch is imported inside the functions that need
it, so importing this module stays cheap (the CLI and the output-stage workers import it).
"""

from __future__ import annotations

import importlib.metadata as _md
import multiprocessing
import multiprocessing.context
import os
import platform
from collections.abc import Iterable

from qupath_camseg import __version__
from qupath_camseg._dist import env_rank
from qupath_camseg.errors import InvalidSettingsError

__all__ = [
    "available_memory",
    "cpu_count",
    "default_loader_workers",
    "default_reader_workers",
    "device_name",
    "file_size_limit",
    "MP_START_ENV",
    "mp_context",
    "require_memory",
    "resolve_device",
    "shm_free_bytes",
    "versions",
    "workers_fitting_shm",
]

#: Environment variable that forces the start method of every worker process qcamseg starts
#: (``spawn``, ``fork`` or ``forkserver``): ``QCAMSEG_MP_START=spawn`` runs Linux the way macOS and
#: Windows always run (CI runs the multiprocessing tests so).
MP_START_ENV = "QCAMSEG_MP_START"

_VERSIONED = ("torch", "numpy", "tiffslide", "tifffile", "shapely", "openslide-python")


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity where the platform has one, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_device(name: str | None) -> str:
    """``auto``/``cuda``/``cpu``/``cuda:N``/``mps`` → a concrete torch device string.

    ``auto`` is CUDA when PyTorch sees a GPU, else the CPU (Apple's GPU, ``mps``, only when asked
    for: it runs in float32 and some operations fall back to the CPU). Under
    ``torchrun`` (``WORLD_SIZE`` > 1) plain ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per
    process) and that GPU is made current. A GPU that is asked for but missing is an
    :class:`~qupath_camseg.errors.InvalidSettingsError` naming the fix.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidSettingsError(
                f"--device {name} was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto, "
                "or install a CUDA build of torch")
        _, world, local = env_rank()
        if name == "cuda" and world > 1:
            if local >= torch.cuda.device_count():
                raise InvalidSettingsError(
                    f"torchrun started process LOCAL_RANK={local} but only {torch.cuda.device_count()} GPU(s) "
                    "are visible; use --nproc_per_node at most the number of GPUs per node")
            name = f"cuda:{local}"
            torch.cuda.set_device(local)
    elif name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidSettingsError("--device mps was asked for but PyTorch sees no Apple GPU (MPS: macOS 12.3+ on "
                                       "Apple silicon); use --device cpu or auto")
    elif name != "cpu":
        raise InvalidSettingsError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return name


def device_name(device: str) -> str:
    """A readable name of ``device`` for reports, e.g. ``cuda:0 (NVIDIA H100)``."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    if device == "mps":
        return f"mps (Apple GPU, {platform.machine()})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def default_reader_workers(device: str) -> int:
    """Tile readers for whole-slide inference when the user gave none: 4 on a CPU (the model is
    the bottleneck); on a GPU half the cores, at most 8 (one reader decodes ≈ 1,000 tiles/s of
    512², and the main thread and the output-stage processes need cores too)."""
    return max(2, min(8, cpu_count() // 2)) if device.startswith("cuda") else 4


def default_loader_workers(device: str, world_size: int = 1) -> int:
    """Training loader processes when the user gave none: on a GPU one per core of this rank's
    share minus one, at most 16 (one worker delivers ≈ 60–70 tiles/s of 512²); on a CPU at most 2
    (the model step is the bottleneck and needs the cores)."""
    cpus = max(1, cpu_count() // max(1, world_size))
    if device.startswith("cuda"):
        return max(1, min(16, cpus - 1))
    return min(2, cpus // 2)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes of memory a new allocation can get now: the GPU's free memory for a CUDA ``device``,
    else the machine's available RAM (``psutil``); ``None`` when unknown."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, RuntimeError):
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def require_memory(nbytes: int, *, what: str, fix: str, device: str = "cpu",
                   error: type[Exception] = InvalidSettingsError) -> None:
    """Refuse (``error``, :class:`InvalidSettingsError` by default) a step that needs ``nbytes``
    when the ``device`` has less available (:func:`available_memory`), naming both and ``fix``."""
    have = available_memory(device)
    if have is not None and nbytes > have:
        where = "the GPU" if device.startswith("cuda") else "this machine"
        raise error(f"{what} needs at least {_size(nbytes)} of memory, but {where} has {_size(have)} available; {fix}")


def mp_context() -> multiprocessing.context.BaseContext | None:
    """The start method for loader/reader worker processes: ``$QCAMSEG_MP_START`` when set, else
    ``None`` (the platform's default: ``spawn`` on macOS and Windows, ``fork`` on Linux). Everything
    handed to a worker is picklable and imports cleanly, so every start method works."""
    name = os.environ.get(MP_START_ENV, "").strip().lower()
    if not name:
        return None
    if name not in multiprocessing.get_all_start_methods():
        raise InvalidSettingsError(f"{MP_START_ENV}={name!r} is not a start method here; use one of "
                                   f"{', '.join(multiprocessing.get_all_start_methods())} or unset it")
    return multiprocessing.get_context(name)


def shm_free_bytes() -> int | None:
    """Free bytes of ``/dev/shm``, where DataLoader workers hand batches over (containers often
    give it only 64 MB); ``None`` where there is no such folder (macOS, Windows)."""
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (``ulimit -f``, ``RLIMIT_FSIZE``), or ``None`` when
    there is none (or the platform has no such limit: Windows). Worker processes hand batches
    over in shared-memory files, which the limit applies to too."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def workers_fitting_shm(bytes_per_worker: int) -> int | None:
    """How many worker processes, each with ``bytes_per_worker`` of batches in flight, fit in half
    of ``/dev/shm`` (``None``: no such folder, no limit known)."""
    free = shm_free_bytes()
    if free is None:
        return None
    return int(free // 2 // max(1, bytes_per_worker))


def versions(packages: Iterable[str] = _VERSIONED) -> dict[str, str]:
    """``{"qupath-camseg": ..., "python": ..., package: version}`` for the installed ``packages``."""
    out = {"qupath-camseg": __version__, "python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            pass
    return out
