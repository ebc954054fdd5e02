"""Starting the ranks of a tensor-parallel engine: spawned by rank 0, or started by torchrun.

``spawn_world`` is what ``grokd serve --tensor-parallel-size N`` does on one machine: it starts
ranks 1..N-1 as fresh processes (``multiprocessing`` spawn: CUDA cannot be forked), which meet
rank 0 on a free TCP port of 127.0.0.1, and returns rank 0's ``World``. ``join_world`` is the
torchrun case: ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` are in the environment (``torchrun_env``),
every rank is already running, and they rendezvous through ``env://``.

Only rank 0 decides when the world stops: workers ignore SIGINT and SIGTERM (Ctrl-C reaches
the whole process group, torchrun forwards SIGTERM to every rank) while rank 0 drains its
requests and then broadcasts the stop they exit on. Spawned workers die with rank 0 all the
same: each watches the process that spawned it and exits once that process is gone (not
``PR_SET_PDEATHSIG``, which fires when the spawning *thread* ends: rank 0 spawns from a loader
thread that ends at shutdown, before the workers have stopped cleanly), and every collective has
the group's timeout. Rank 0 watches its spawned workers (``World.watch``): a worker that exits
before rank 0 stopped it is reported with its rank and exit code at once, without waiting for a
collective to time out.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from grokd.engine.config import EngineConfig
from grokd.engine.parallel.group import DistGroup, init_distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankEnv:
    """Where a rank stands in its world and how the world meets."""

    rank: int
    world_size: int
    local_rank: int
    init_method: str


def torchrun_env(environ: Mapping[str, str]) -> RankEnv | None:
    """The rank torchrun (or any launcher using its variables) started, or ``None``."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in environ]
    if missing:
        raise ValueError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not: start the ranks "
                         "with torchrun, or unset RANK/WORLD_SIZE to let grokd serve spawn them")
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is out of range for WORLD_SIZE {world}")
    return RankEnv(rank, world, local, "env://")


def rank_config(config: EngineConfig, world_size: int, local_rank: int) -> EngineConfig:
    """``config`` for one rank: ``tensor_parallel_size`` checked against the world, and on CUDA the
    rank's own GPU (``cuda:LOCAL_RANK``)."""
    tp = config.parallel.tensor_parallel_size
    if tp != world_size:
        raise ValueError(f"tensor_parallel_size is {tp} but the world has {world_size} ranks "
                         f"(pass --tensor-parallel-size {world_size})")
    model = config.model
    if model.device == "cuda":
        model = dataclasses.replace(model, device=f"cuda:{local_rank}")
    return dataclasses.replace(config, model=model)


def cpu_threads_per_rank(world_size: int) -> int:
    """CPU ranks on one machine share its cores: each gets an equal part (at least one)."""
    return max(1, (os.cpu_count() or 1) // world_size)


def _prepare_rank(config: EngineConfig, world_size: int) -> None:
    device = torch.device(config.model.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(cpu_threads_per_rank(world_size))


def join_world(env: RankEnv, config: EngineConfig) -> tuple[DistGroup, EngineConfig]:
    """Join the world as ``env.rank``; returns the group and this rank's config. A config left at
    one rank takes the world's size (torchrun without ``--tensor-parallel-size``)."""
    if config.parallel.tensor_parallel_size == 1:
        config = dataclasses.replace(config, parallel=dataclasses.replace(config.parallel,
                                                                          tensor_parallel_size=env.world_size))
    config = rank_config(config, env.world_size, env.local_rank)
    _prepare_rank(config, env.world_size)
    group = init_distributed(env.rank, env.world_size, env.init_method, config.model.device,
                             timeout_s=config.parallel.timeout_s,
                             startup_timeout_s=config.parallel.startup_timeout_s)
    return group, config


def leave_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def worker_main(env: RankEnv, config: EngineConfig) -> int:
    """A rank other than 0, until rank 0 stops it: 0 on a clean stop, 1 (logged) on any failure."""
    from grokd.engine.parallel.worker import run_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        group, config = join_world(env, config)
        run_worker(config, group)
        return 0
    except Exception:
        log.exception("rank %d failed", env.rank)
        return 1
    finally:
        leave_world()


PARENT_POLL_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Exit this worker (status 1) once ``parent_pid`` is no longer its parent: rank 0 is gone, so
    nothing will ever stop it. A daemon thread polls ``os.getppid``."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        log.error("rank 0 (pid %d) exited; this rank exits too", parent_pid)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="grokd-parent-watch", daemon=True).start()


def _spawned_main(env: RankEnv, config: EngineConfig, log_level: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s rank{env.rank} %(name)s: %(message)s")
    sys.exit(worker_main(env, config))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Workers:
    """The worker processes rank 0 spawned, by rank."""

    procs: dict[int, BaseProcess] = field(default_factory=dict)
    _closing: threading.Event = field(default_factory=threading.Event)

    def watch(self, on_exit: Callable[[int, int | None], None]) -> None:
        """Call ``on_exit(rank, exitcode)`` (on a daemon thread) when a worker exits before ``close``."""
        if not self.procs:
            return

        def run() -> None:
            by_sentinel = {p.sentinel: (r, p) for r, p in self.procs.items()}
            ready = multiprocessing.connection.wait(list(by_sentinel))
            if self._closing.is_set():
                return
            rank, proc = next(by_sentinel[s] for s in by_sentinel if s in ready)
            proc.join(1)
            on_exit(rank, proc.exitcode)

        threading.Thread(target=run, name="grokd-rank-watch", daemon=True).start()

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` for each worker, terminate any left."""
        self._closing.set()
        for rank, proc in self.procs.items():
            proc.join(timeout)
            if proc.is_alive():
                log.warning("rank %d did not exit; terminating it", rank)
                proc.terminate()
                proc.join(5)


@dataclass
class World:
    """Rank 0's handle on a world: its group, its config, and the workers it spawned (none under
    torchrun, which owns them)."""

    group: DistGroup
    config: EngineConfig
    workers: Workers = field(default_factory=Workers)

    def close(self, timeout: float = 30.0) -> None:
        """After the stop was broadcast: wait for the workers, then leave the group."""
        self.workers.close(timeout)
        leave_world()


def spawn_world(config: EngineConfig, on_exit: Callable[[int, int | None], None] | None = None) -> World:
    """Start ranks 1..N-1 of ``config.parallel.tensor_parallel_size`` and join them as rank 0.
    ``on_exit`` is watched from before the rendezvous, so a worker that fails to load is reported
    instead of rank 0 waiting out the timeout."""
    n = config.parallel.tensor_parallel_size
    init = f"tcp://127.0.0.1:{free_port()}"
    ctx = mp.get_context("spawn")
    workers = Workers()
    for rank in range(1, n):
        env = RankEnv(rank, n, rank, init)
        proc = ctx.Process(target=_spawned_main, args=(env, config, logging.getLogger().level, os.getpid()),
                           name=f"grokd-rank{rank}", daemon=True)
        proc.start()
        workers.procs[rank] = proc
    if on_exit is not None:
        workers.watch(on_exit)
    try:
        group, rank0 = join_world(RankEnv(0, n, 0, init), config)
    except BaseException:
        workers.close(timeout=1)
        raise
    return World(group, rank0, workers)
