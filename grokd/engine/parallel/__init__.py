"""Tensor and expert parallelism: process groups (``group``) and how a model is cut into one
rank's shard (``shard``). Single-device code runs on ``SingleGroup``, whose collectives return
their input, so the same model code serves one rank or many."""

from grokd.engine.parallel.group import DistGroup, ParallelGroup, SingleGroup, init_distributed
from grokd.engine.parallel.shard import ModelShard, TensorParallel

__all__ = ["DistGroup", "ModelShard", "ParallelGroup", "SingleGroup", "TensorParallel", "init_distributed"]
