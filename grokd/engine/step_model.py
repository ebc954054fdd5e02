"""The step interface the engine drives a model through (``engine.models``): every architecture is a
``torch.nn.Module`` with these members, so the engine sizes its KV pool and runs a batch without
knowing which architecture it holds."""

from __future__ import annotations

from typing import Protocol

import torch

from grokd.kernels.metadata import AttentionMetadata


class StepModel(Protocol):
    """``model(input_ids [T], positions [T], kv_caches, meta) -> hidden [T, D]``;
    ``compute_logits(hidden [n, D]) -> float32 logits [n, V]``; and the sizes the KV pool needs."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                 meta: AttentionMetadata) -> torch.Tensor: ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...
