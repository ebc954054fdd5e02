"""Decode attention on the CPU, reading the paged KV pool in place (compiled with numba).

Why: for a step's few decode rows with short contexts, per-op overhead dominates the batched PyTorch
path (``kernels.batched_attention``). It does one gather, two bf16 oneDNN batched matmuls and a
softmax, about 110 µs per layer at batch 1 with 128 tokens of context: 3.3 ms of a 30 ms SmolLM2
step. This kernel does all of softmax(q·k)·v in one call. It reads each row's blocks where they lie
and widens bf16 to float32 in registers, in about 25 µs (benchmarks/RESULTS.md, session 3). It runs
on one thread, so when a step's total context exceeds ``MAX_CONTEXT_TOKENS``, the two-thread
PyTorch path wins again and is used instead.

The numerics are the reference's (``kernels.attention.paged_attention``, its twin in the tests):

- q·k is accumulated in float32 and, in bf16 mode, rounded to bf16, which is what a bf16 matmul
  returns;
- the scores are then scaled, soft-capped, masked and softmaxed in float32;
- the probabilities are rounded to bf16 before the weighted sum, which accumulates in float32.

The kernel itself is in ``kernels._numba_cpu``, loaded through ``kernels.numba_cpu``.
"""

from __future__ import annotations

import torch

from kernels import numba_cpu
from kernels.batched_attention import batched_decode_attention
from kernels.metadata import DecodeRows

# Above this many context tokens summed over a step's decode rows, the two-thread PyTorch path is
# faster on the 2-core machine it was measured on (crossover near 1,700; benchmarks/RESULTS.md,
# session 3, results/session3/scripts/decode_attention_crossover.py).
MAX_CONTEXT_TOKENS = 1280
_STORAGE = {torch.bfloat16: torch.uint16, torch.float32: torch.float32}


def supports(q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows) -> bool:
    """Whether this kernel takes the step: CPU tensors of one dtype it reads (bf16, float32), and
    short enough contexts that one thread beats the batched path."""
    return (
        q.device.type == "cpu"
        and q.dtype == kv_cache.dtype
        and q.dtype in _STORAGE
        and rows.context_tokens <= MAX_CONTEXT_TOKENS
        and numba_cpu.available()
    )


def decode_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows, scale: float, softcap: float | None
) -> torch.Tensor:
    """``batched_decode_attention``'s contract: ``q [rows, q_heads, head_dim]`` against each row's
    context in ``kv_cache [2, blocks, kv_heads, block_size, head_dim]`` -> ``[rows, q_heads,
    head_dim]`` in ``q``'s dtype."""
    storage = _STORAGE[q.dtype]
    out = torch.empty(q.shape, dtype=torch.float32)
    tables, seq_lens = rows.host_arrays
    numba_cpu.compiled().decode_attention_kernel(
        q.view(storage).numpy(),
        kv_cache.view(storage).numpy(),
        tables,
        seq_lens,
        float(scale),
        float(softcap or 0.0),
        q.dtype == torch.bfloat16,
        out.numpy(),
    )
    return out.to(q.dtype)


def decode_attention_or_batched(
    q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows, scale: float, softcap: float | None
) -> torch.Tensor:
    """This kernel when ``supports`` says so, else the batched PyTorch path."""
    if supports(q, kv_cache, rows):
        return decode_attention(q, kv_cache, rows, scale, softcap)
    return batched_decode_attention(q, kv_cache, rows, scale, softcap)
