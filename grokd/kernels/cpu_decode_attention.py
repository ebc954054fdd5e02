"""Decode attention on the CPU, reading the paged KV pool in place (C, ``kernels/csrc``).

Why: the batched PyTorch path (``kernels.batched_attention``) first copies every decode row's
context out of the pool with ``index_select``, then runs two oneDNN batched matmuls and a softmax
over the padded copy. This kernel reads each row's blocks where they lie, widens bf16 to float32 in
registers and splits long contexts across torch's own OpenMP threads (``kernels.cpu_build``): several
times faster from one row of 128 tokens to 32 rows of 1,000 (benchmarks/RESULTS.md#cpu-decode-kernels),
so it takes every decode step, whatever the context.

The numerics are the reference's (``kernels.attention.paged_attention``, its twin in the tests):

- q·k is accumulated in float32 and, in bf16 mode, rounded to bf16, which is what a bf16 matmul
  returns;
- the scores are then scaled, soft-capped, multiplied by the row's length temperature (Grok-2:
  ``kernels.attention.length_temperature`` of the query's position ``seq_len - 1``) and softmaxed
  in float32;
- the probabilities are rounded to bf16 before the weighted sum, which accumulates in float32.

With bf16 q and a bf16 pool on a CPU with AVX512-BF16, q·k and the weighted sum multiply bf16 pairs
with ``vdpbf16ps`` instead of widening them, with the same float32 additions in the same order: the
same bits (except denormal inputs, which that instruction reads as zero), in less time. At SmolLM2's
shape, one row of 2,048 tokens per layer on two threads: about 46 -> 37 µs in cache, 0.85-0.94x the
time with the pools cold (``kernels/csrc/decode_attention.c``).

An int8 pool (``kernels.attention.quantize_kv``: each row ``head_dim`` int8 values, then their
float32 scale) is read as it lies, with q in bf16 or float32: the int8 values are widened to float32
in registers, a score is ``scale_k * Σ q_d k_d`` accumulated in float32 (then rounded to bf16 in bf16
mode, as above), and the weighted sum is ``Σ p_t scale_v(t) v_t`` in float32, narrowed to q's dtype.
The reference instead rounds ``int8 * scale`` to q's dtype before its matmuls, so in bf16 mode the
two agree to bf16 precision rather than to the bit (float32: to float32 rounding). It reads about
half the bytes of a bf16 pool: at SmolLM2's shape, one row of 2,048 tokens with the pools cold (30
layers in turn, two threads) took about 60-69 µs per layer against 70-88 for a bf16 pool, both
then close to their in-cache compute time (about 47 µs, the same for both, before the bf16 pool's
``vdpbf16ps`` path).

With bf16 q over an int8 pool on a CPU with AVX512-VNNI, q itself is quantized per head as the keys
are (int8 with scale ``max|q| / 127``, as llama.cpp quantizes q against a q8_0 cache), q·k is summed
exactly in int32, and the weighted sum takes each head's ``p_t scale_v(t)`` as int16 with one scale
per 256-token chunk; each chunk is done in one pass (scores, a softmax against its own maximum, the
weighted sum while its values are in cache) and the chunks merged by their maxima. Against the
float32 reference it stays within bf16 precision (the tests' bound); in a real SmolLM2 decode step
at 2,048 tokens the 30 layers' attention took 1.57 ms instead of 1.88.
"""

from __future__ import annotations

import torch

from grokd.kernels import c_abi, cpu_build
from grokd.kernels.attention import kv_head_dim
from grokd.kernels.batched_attention import batched_decode_attention
from grokd.kernels.metadata import DecodeRows

_FUNCTIONS = {  # (q dtype, pool dtype) -> the C function
    (torch.bfloat16, torch.bfloat16): "grokd_decode_attention_bf16",
    (torch.float32, torch.float32): "grokd_decode_attention_f32",
    (torch.bfloat16, torch.int8): "grokd_decode_attention_bf16_i8",
    (torch.float32, torch.int8): "grokd_decode_attention_f32_i8",
}


def supports(q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows) -> bool:
    """Whether this kernel takes the step: CPU tensors it reads (q and pool both bf16 or both
    float32, or q in either with an int8 pool), a head dimension and table rows of unit stride, and
    the library built."""
    return (
        q.device.type == "cpu"
        and (q.dtype, kv_cache.dtype) in _FUNCTIONS
        and q.stride(-1) == 1
        and kv_cache.is_contiguous()
        and rows.block_tables.dtype == rows.seq_lens.dtype == torch.int64
        and rows.block_tables.stride(-1) == 1
        and cpu_build.available()
    )


def decode_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows, scale: float, softcap: float | None,
    temperature_len: int = 0,
) -> torch.Tensor:
    """``batched_decode_attention``'s contract: ``q [rows, q_heads, head_dim]`` against each row's
    context in ``kv_cache [2, blocks, kv_heads, block_size, width]`` (``width`` is ``head_dim``, or
    ``head_dim + 4`` for an int8 pool) -> ``[rows, q_heads, head_dim]`` in ``q``'s dtype."""
    library = cpu_build.library()
    assert library is not None, "callers check `supports`, which needs the library built"
    out = torch.empty(q.shape, dtype=q.dtype)
    tables, lens = rows.block_tables, rows.seq_lens
    shape = c_abi.Shape(
        q.shape[0], q.shape[1], kv_cache.shape[2], kv_cache.shape[3], kv_head_dim(kv_cache), kv_cache.shape[1],
        q.stride(0), q.stride(1), tables.stride(0), lens.stride(0),
        float(scale), float(softcap or 0.0), q.dtype == torch.bfloat16, int(temperature_len),
    )
    status = getattr(library.lib, _FUNCTIONS[q.dtype, kv_cache.dtype])(
        q.data_ptr(), kv_cache.data_ptr(), tables.data_ptr(), lens.data_ptr(), shape, out.data_ptr(),
        library.threads(),
    )
    if status != 0:
        raise MemoryError("decode attention: could not allocate its scratch memory")
    return out


def decode_attention_or_batched(
    q: torch.Tensor, kv_cache: torch.Tensor, rows: DecodeRows, scale: float, softcap: float | None,
    temperature_len: int = 0,
) -> torch.Tensor:
    """This kernel when ``supports`` says so, else the batched PyTorch path. A length temperature
    (Grok-2) is applied by the C kernel too: each row's multiplier of its position
    ``seq_len - 1``, after the cap."""
    if supports(q, kv_cache, rows):
        return decode_attention(q, kv_cache, rows, scale, softcap, temperature_len)
    return batched_decode_attention(q, kv_cache, rows, scale, softcap, temperature_len)
