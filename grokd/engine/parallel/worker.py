"""A rank other than 0 of a tensor-parallel engine: load this rank's shard, size the KV pool with
the others, then run every step rank 0 sends until it sends a stop (``ModelRunner.follow``).

It schedules nothing and samples nothing: the block tables, positions and rows to project all
come from rank 0, so its KV pool holds exactly what rank 0's block manager believes it holds.
"""

from __future__ import annotations

import logging

from grokd.engine.config import EngineConfig
from grokd.engine.parallel.group import ParallelGroup
from grokd.engine.parallel.report import shard_loaded
from grokd.engine.parallel.shard import TensorParallel

log = logging.getLogger(__name__)


def run_worker(config: EngineConfig, group: ParallelGroup) -> int:
    """Serve rank ``group.rank`` (> 0) until rank 0 stops the group; returns the steps run."""
    from grokd.engine.llm_engine import build_runner
    from grokd.engine.loader import load_model_and_tokenizer

    if group.rank == 0:
        raise ValueError("run_worker runs the ranks other than 0; rank 0 runs the engine")
    model, _, _ = load_model_and_tokenizer(config.model, TensorParallel(group, config.parallel))
    log.info("%s", shard_loaded(group.rank, group.world_size, model))
    runner = build_runner(config, model, group)
    log.info("rank %d: %d KV blocks; following rank 0", group.rank, runner.num_blocks)
    steps = runner.follow()
    log.info("rank %d: stopped by rank 0 after %d steps", group.rank, steps)
    return steps
