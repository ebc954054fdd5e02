"""Process groups: the handful of collectives a sharded model and the engine loop need.

``ParallelGroup`` is the interface; ``SingleGroup`` is the one-rank group (every collective
returns its input untouched, so single-device code pays nothing and changes nothing) and
``DistGroup`` runs the same calls over a ``torch.distributed`` process group: NCCL when the
tensors live on CUDA, gloo on the CPU. Ranks are the group's own ranks (0 .. world_size - 1),
also for a subgroup cut out of a larger world with ``DistGroup.split``.

``broadcast_object`` exists for the engine loop of a multi-rank server: rank 0 schedules a step
and sends its metadata (token ids, positions, block tables) to the other ranks, which then run the
same forward in lockstep.
"""

from __future__ import annotations

import datetime
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_STARTUP_TIMEOUT_S = 1800.0


@runtime_checkable
class ParallelGroup(Protocol):
    """Ranks that hold shards of one model and run every collective together, in the same order."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``x`` over the ranks, on every rank (``x`` may be reused)."""
        ...

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """Every rank's ``x`` concatenated along ``dim`` in rank order, on every rank (same shapes)."""
        ...

    def gather(self, x: torch.Tensor, dim: int = -1, dst: int = 0) -> torch.Tensor | None:
        """As ``all_gather``, but only rank ``dst`` receives the result; the others get ``None``."""
        ...

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``x`` on every rank (the others pass a tensor of the same shape and dtype)."""
        ...

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank (the others' argument is ignored)."""
        ...

    def wait_for_all(self) -> None:
        """Block until every rank got here: once, after loading. Ranks load at their own pace, so
        this wait is bounded by the start-up timeout, not by the (shorter) one of a step."""
        ...


class SingleGroup:
    """The group of one rank: nothing to communicate, every collective is the identity."""

    rank = 0
    world_size = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return x

    def gather(self, x: torch.Tensor, dim: int = -1, dst: int = 0) -> torch.Tensor | None:
        return x

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        return x

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def wait_for_all(self) -> None:
        return None


class DistGroup:
    """A ``torch.distributed`` process group (``pg``; ``None`` is the default, whole world).

    Collectives block until every rank of the group has called them, or fail after the timeout
    the process group was created with. gloo and NCCL both reduce float32 and bfloat16.
    ``startup_pg`` (default: ``pg``) is the same ranks with the longer start-up timeout, which
    only ``wait_for_all`` uses.
    """

    def __init__(self, pg: dist.ProcessGroup | None = None, startup_pg: dist.ProcessGroup | None = None) -> None:
        self.pg = pg
        self.startup_pg = startup_pg if startup_pg is not None else pg
        self._rank = dist.get_rank(pg)
        self._world_size = dist.get_world_size(pg)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=self.pg)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x, group=self.pg)
        return torch.cat(parts, dim=dim)

    def gather(self, x: torch.Tensor, dim: int = -1, dst: int = 0) -> torch.Tensor | None:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)] if self.rank == dst else None
        dist.gather(x, parts, group=self.pg, group_dst=dst)
        return torch.cat(parts, dim=dim) if parts is not None else None

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        x = x.contiguous()
        dist.broadcast(x, group=self.pg, group_src=src)
        return x

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, group=self.pg, group_src=src)
        return box[0]

    def wait_for_all(self) -> None:
        dist.barrier(group=self.startup_pg)

    def split(self, size: int) -> DistGroup:
        """This rank's block of ``size`` consecutive ranks: the world cut into ``world/size``
        groups. Every rank of this group must call it (creating a group is itself collective)."""
        if size < 1 or self.world_size % size:
            raise ValueError(f"cannot split {self.world_size} ranks into groups of {size}")
        if size == self.world_size:
            return self
        ranks = dist.get_process_group_ranks(self.pg) if self.pg is not None else list(range(self.world_size))
        mine: DistGroup | None = None
        for start in range(0, len(ranks), size):
            pg = dist.new_group(ranks[start:start + size])
            if start <= self.rank < start + size:
                mine = DistGroup(pg)
        assert mine is not None
        return mine


def default_backend(device: torch.device | str) -> str:
    """NCCL for CUDA tensors, gloo for CPU ones."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_distributed(rank: int, world_size: int, init_method: str, device: torch.device | str = "cpu",
                     timeout_s: float = DEFAULT_TIMEOUT_S,
                     startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> DistGroup:
    """Join ``world_size`` ranks at ``init_method`` (``tcp://host:port``, ``env://``, ``file://``)
    and return the whole world as a group. Two process groups over the same ranks: the default
    one, for joining and ``wait_for_all`` after loading, fails after ``startup_timeout_s`` (a
    rank that never arrives or never finishes loading); the one every later collective runs on
    fails after ``timeout_s`` (a rank that died or stalls mid-step) instead of hanging."""
    startup = datetime.timedelta(seconds=max(startup_timeout_s, timeout_s))
    dist.init_process_group(default_backend(device), init_method=init_method, rank=rank,
                            world_size=world_size, timeout=startup)
    steps = dist.new_group(timeout=datetime.timedelta(seconds=timeout_s))
    return DistGroup(steps, startup_pg=dist.GroupMember.WORLD)
