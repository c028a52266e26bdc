"""The machine a command runs on: device, worker counts, CPU threads, shared memory, versions.

One place for the run-time choices that training and prediction share: which torch device
``--device auto`` means (one GPU per ``torchrun`` process), how many reader/loader workers a
machine affords, how many intra-op threads the model gets (:func:`configure_cpu_threads`: the
cores actually free, re-checked as the run goes by :class:`CpuThreads`), how OpenMP's idle threads
wait (:func:`prefer_passive_omp_wait`), how many worker processes fit in ``/dev/shm`` (containers
often give it 64 MB), and the versions recorded with every output. torch is imported inside the
functions that need it, so importing this module stays cheap (the CLI and the output-stage
workers import it).
"""

from __future__ import annotations

import importlib.metadata as _md
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import platform
import sys
import time
from collections.abc import Iterable

from qupath_camseg import __version__
from qupath_camseg._dist import env_rank
from qupath_camseg.errors import InvalidSettingsError

__all__ = [
    "available_memory",
    "CpuThreads",
    "configure_cpu_threads",
    "cpu_count",
    "default_loader_workers",
    "default_reader_workers",
    "device_name",
    "file_size_limit",
    "MP_START_ENV",
    "mp_context",
    "require_memory",
    "cpu_threads_tick",
    "prefer_passive_omp_wait",
    "resolve_device",
    "shm_free_bytes",
    "versions",
    "workers_fitting_shm",
]

#: Environment variable that forces the start method of every worker process qcamseg starts
#: (``spawn``, ``fork`` or ``forkserver``): ``QCAMSEG_MP_START=spawn`` runs Linux the way macOS and
#: Windows always run (CI runs the multiprocessing tests so).
MP_START_ENV = "QCAMSEG_MP_START"

log = logging.getLogger(__name__)

#: Environment variable fixing the intra-op threads of a CPU run (``N``), or ``off``: leave them alone.
THREADS_ENV = "QCAMSEG_THREADS"

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


def prefer_passive_omp_wait() -> bool:
    """Ask OpenMP to put idle threads to sleep at once (``OMP_WAIT_POLICY=PASSIVE``) instead of
    spinning: a spinning thread holds a core another process needs (a second 2-thread torch job made
    training 9.7× slower). OpenMP reads the variable once, when torch loads it, so this must run
    before ``import torch`` (the command line calls it first thing; library users set the variable
    themselves). A value already set is kept. Returns whether it can still take effect."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def _cgroup_cpus() -> float | None:
    """The CPU quota of this container (cgroup v2 ``cpu.max`` or v1 ``cfs_quota``), in cores."""
    for path, parse in (("/sys/fs/cgroup/cpu.max", lambda t: t.split()),
                        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", lambda t: [t.strip(), _read(
                            "/sys/fs/cgroup/cpu/cpu.cfs_period_us") or "100000"])):
        text = _read(path)
        if text:
            quota, period = parse(text)[:2]
            if quota not in ("max", "-1") and float(period) > 0:
                return float(quota) / float(period)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return None


def _node_share() -> float:
    """The cores this process may count on: its affinity (or the container's quota, if smaller),
    shared equally among the ``torchrun`` processes on this node (``LOCAL_WORLD_SIZE``)."""
    cores = float(cpu_count())
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1.0, quota))
    return max(1.0, cores / max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


class _CpuSampler:
    """CPU time used by the whole machine (on this process's CPUs) and by this process, since the
    last :meth:`busy_elsewhere` call (``psutil``; ``None`` where it cannot tell)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        try:
            self._cpus: list[int] | None = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self._cpus = None
        self._last = (time.monotonic(), self._own())
        psutil.cpu_percent(percpu=True)  # starts the machine-wide interval

    def _own(self) -> float:
        t = self._me.cpu_times()
        return float(t.user + t.system)

    def busy_elsewhere(self) -> float:
        """Cores kept busy by other processes (this one's loader workers included) since the last call."""
        per_cpu = self._psutil.cpu_percent(percpu=True)
        now, own = time.monotonic(), self._own()
        t0, own0 = self._last
        self._last = (now, own)
        cpus = [c for c in self._cpus if c < len(per_cpu)] if self._cpus else range(len(per_cpu))
        total = sum(per_cpu[c] for c in cpus) / 100.0
        return max(0.0, total - (own - own0) / max(now - t0, 1e-3))


class CpuThreads:
    """The intra-op threads of a CPU run, kept at the cores actually free.

    Free cores: this process's share of the node (:func:`_node_share`: affinity, container quota,
    ``torchrun`` processes on the node; at most torch's own default, the physical cores) less what
    other processes keep busy (measured) less ``busy_workers`` (cores this run's own loader
    processes are expected to use). Measured at the start (over ``sample_s``) and again every
    ``every_s`` seconds by :meth:`tick`, which must be called from the thread that runs the model
    (OpenMP's thread count is per calling thread). ``QCAMSEG_THREADS=N`` fixes the count;
    left alone: GPUs, ``QCAMSEG_THREADS=off``, a count set by ``OMP_NUM_THREADS``, and one the
    caller set with ``torch.set_num_threads`` (anything but torch's default or our last choice).
    """

    def __init__(self, device: str, *, busy_workers: float = 0.0, sample_s: float = 0.2,
                 every_s: float = 10.0) -> None:
        import torch

        self._torch, self.busy_workers, self.every_s = torch, busy_workers, every_s
        fixed = os.environ.get(THREADS_ENV, "").strip()
        self._default = _torch_default_threads(torch)
        self.auto = (device == "cpu" and not fixed and "OMP_NUM_THREADS" not in os.environ
                     and torch.get_num_threads() in (self._default, _LAST_SET[0]))
        self._sampler: _CpuSampler | None = None
        self._next = math.inf
        self.threads = torch.get_num_threads()
        if fixed.isdigit() and device == "cpu":
            self._set(max(1, int(fixed)))
        if not self.auto:
            return
        try:
            self._sampler = _CpuSampler()
        except (ImportError, OSError):  # no psutil data: the node share alone
            self._set(self.free(0.0))
            return
        time.sleep(sample_s)
        self._set(self.free(self._sampler.busy_elsewhere()))
        self._next = time.monotonic() + every_s

    def free(self, busy_elsewhere: float) -> int:
        """Threads for ``busy_elsewhere`` cores in use by others (at least 1)."""
        share = min(_node_share(), float(self._default))
        free = min(share, float(cpu_count()) - busy_elsewhere) - self.busy_workers
        return max(1, min(int(share), math.floor(free + 0.5)))

    def _set(self, n: int) -> None:
        if self._torch.get_num_threads() != n:
            log.debug("intra-op threads: %d -> %d", self._torch.get_num_threads(), n)
            self._torch.set_num_threads(n)
        self.threads = _LAST_SET[0] = n

    def tick(self) -> None:
        """Between steps: re-measure and resize the threads every ``every_s`` seconds (cheap
        otherwise); stops for good if someone else changed the count meanwhile."""
        if self._sampler is None or time.monotonic() < self._next:
            return
        if self._torch.get_num_threads() != self.threads:
            self._sampler = None
            return
        self._set(self.free(self._sampler.busy_elsewhere()))
        self._next = time.monotonic() + self.every_s


#: The thread count this module set last (``[None]``: none yet): a count it may change again.
_LAST_SET: list[int | None] = [None]


def _torch_default_threads(torch: object) -> int:
    """torch's own intra-op default on this machine: the physical cores (``psutil``), else all."""
    try:
        import psutil

        return max(1, int(psutil.cpu_count(logical=False) or os.cpu_count() or 1))
    except ImportError:
        return max(1, os.cpu_count() or 1)


_CPU_THREADS: tuple[tuple[object, ...], CpuThreads] | None = None


def configure_cpu_threads(device: str, *, busy_workers: float = 0.0) -> int:
    """Size torch's intra-op threads for a run on ``device`` (see :class:`CpuThreads`); training
    and prediction both call this before their loop, then :func:`cpu_threads_tick` between steps.
    Measured once per process (0.2 s) and settings, re-checked by the ticks. Returns the count."""
    global _CPU_THREADS
    import torch

    key = (device == "cpu", busy_workers, os.environ.get(THREADS_ENV), os.environ.get("OMP_NUM_THREADS"))
    if _CPU_THREADS is None or _CPU_THREADS[0] != key or torch.get_num_threads() != _CPU_THREADS[1].threads:
        _CPU_THREADS = (key, CpuThreads(device, busy_workers=busy_workers))
    return _CPU_THREADS[1].threads


def cpu_threads_tick() -> None:
    """Between two steps of a run: let :func:`configure_cpu_threads`'s sizing follow the load."""
    if _CPU_THREADS is not None:
        _CPU_THREADS[1].tick()


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
