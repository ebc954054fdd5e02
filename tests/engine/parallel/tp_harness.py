"""Runs a function on several local ranks joined by a real gloo process group.

Ranks are forked from the test process (torch is already imported there, so a rank starts in
milliseconds instead of re-importing torch), each with one intra-op thread, and meet on a free
TCP port of 127.0.0.1. Each rank's return value is pickled to ``out_dir/rank{r}.pt``; a rank
that raises fails the whole run with its traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from grokd.engine.parallel.group import DistGroup, init_distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn: Callable[[DistGroup], Any], out_dir: str,
               timeouts: tuple[float, float]) -> None:
    torch.set_num_threads(1)
    group = init_distributed(rank, world, f"tcp://127.0.0.1:{port}", timeout_s=timeouts[0],
                             startup_timeout_s=timeouts[1])
    try:
        torch.save(fn(group), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, fn: Callable[[DistGroup], Any], out_dir: Path, timeout_s: float = 120,
              startup_timeout_s: float = 120) -> list[Any]:
    """``fn(group)`` on ``world`` ranks; their results in rank order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world, free_port(), fn, str(out_dir), (timeout_s, startup_timeout_s)),
                       nprocs=world, start_method="fork")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]
