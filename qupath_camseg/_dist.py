"""torch.distributed as ``torchrun`` sets it up, shared by training and whole-slide inference.

``torchrun --nproc_per_node=N ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and the rendezvous variables) in their environment; :meth:`Dist.from_env` joins
the process group those describe, or returns a single-process stand-in when ``WORLD_SIZE`` is
unset or 1, so callers need no special case. No job system of our own: sharding is a pure
function of the item list (:func:`shard_by_weight`), the same on every rank.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: importing this module stays cheap
    import torch

__all__ = ["Dist", "env_rank", "shard_by_weight"]


def env_rank() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment ``torchrun`` sets ((0, 1, 0) outside it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def shard_by_weight(weights: Sequence[float], world_size: int) -> list[int]:
    """The rank that owns each item: heaviest first to the least-loaded rank (ties: lowest index,
    lowest rank), so equal weights give round-robin. Deterministic: every rank computes the same."""
    load = [0.0] * max(1, world_size)
    owner = [0] * len(weights)
    for i in sorted(range(len(weights)), key=lambda k: (-float(weights[k]), k)):
        r = min(range(len(load)), key=lambda q: (load[q], q))
        owner[i] = r
        load[r] += float(weights[i])
    return owner


class Dist:
    """torch.distributed as set up by ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``), or a
    single process. NCCL on GPUs, gloo on CPU (or as ``backend`` says)."""

    def __init__(
        self, rank: int = 0, world_size: int = 1, local_rank: int = 0, *, owned: bool = False, comm: str = "cpu"
    ) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.is_main = rank == 0
        self._owned, self._comm = owned, comm

    @classmethod
    def from_env(cls, device: str, *, backend: str | None = None, timeout: _dt.timedelta | None = None) -> Dist:
        """Join ``torchrun``'s process group (initialising it if nobody has). ``backend``: ``None``
        picks NCCL when ``device`` is a GPU, else gloo; ``timeout`` bounds each collective."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as tdist

        use_gpu = device != "cpu" and torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        owned = False
        if not tdist.is_initialized():
            if use_gpu:
                torch.cuda.set_device(local)
            kwargs = {"timeout": timeout} if timeout is not None else {}
            nccl = use_gpu and tdist.is_nccl_available()  # Windows builds of torch have no NCCL: gloo
            tdist.init_process_group(backend=backend or ("nccl" if nccl else "gloo"), **kwargs)
            owned = True
        comm = f"cuda:{local}" if tdist.get_backend() == "nccl" else "cpu"
        return cls(tdist.get_rank(), tdist.get_world_size(), local, owned=owned, comm=comm)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks (returns a CPU tensor)."""
        if self.world_size == 1:
            return tensor
        import torch.distributed as tdist

        t = tensor.to(self._comm)
        tdist.all_reduce(t)
        return t.cpu()

    def broadcast_str(self, value: str) -> str:
        """Rank 0's ``value`` on every rank."""
        if self.world_size == 1:
            return value
        import torch
        import torch.distributed as tdist

        box = [value]
        tdist.broadcast_object_list(box, src=0, device=torch.device(self._comm))
        return str(box[0])

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as tdist

            tdist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def finish(self) -> None:
        """End a run that succeeded on every rank: wait for all ranks, then leave the group together.
        ``destroy_process_group`` is collective; a rank that leaves while another still works (rank 0
        calibrating after the last step) can abort in gloo's teardown. After a failure do not call
        this: the failing rank exits and ``torchrun`` stops the others."""
        self.barrier()
        self.close()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as tdist

            tdist.destroy_process_group()
            self._owned = False
