"""GPU memory plan for Grok-1 and Grok-2 under tensor (and expert) parallelism: bytes per GPU, no GPU needed.

Every rank holds the same shapes, so the plan is one GPU's bill, computed parameter by parameter
the way the tensor-parallel Grok-1 model shards (the max over ranks, where a scale row is shared):

* attention by heads: each rank has ``num_q_heads / TP`` query heads and ``max(1, num_kv_heads / TP)``
  KV heads (above TP = num_kv_heads each KV head is replicated on ``TP / num_kv_heads`` ranks);
  q/k/v projections are split by output columns, the o-projection by input rows;
* experts on the intermediate dimension (each rank ``I / TP`` of every expert: gate/up columns,
  down rows), or with expert parallelism whole experts (``num_experts / TP`` per rank);
* the tied embedding vocabulary-parallel (``ceil(V / TP)`` rows per rank) in the checkpoint's dtype,
  as the single-device model keeps it (float32 in the release), plus the output head's copy of the
  same rows in the activation dtype when that dtype differs;
* router and RMSNorm scales replicated, in float32;
* Grok-2 only: the residual MoE's dense MLP split on its intermediate dimension like the experts
  (it is not an expert: expert parallelism still splits it), and its untied ``lm_head``, whose
  rows are vocabulary-parallel like the embedding's and held in the activation dtype.

``fp8`` (``--weights-dtype fp8``: e4m3 values in the grouped layout, ``kernels.quant``) plans what
int8 does: one byte per linear weight plus the same bf16 scale rows.

int8 weights cost one byte per parameter plus their bf16 scales ``[G, N]`` per projection, ``G``
scale rows over the input dimension: the release's rule (GROK1.md §3.1) is ``G = 8`` for the
o-projection and the expert down projection and ``G = 1`` for query/key/value and the expert
gate/up; a bf16 checkpoint quantised at load (``kernels.quant.quantize_grouped_int8``) has ``G = 1``
everywhere. A rank splitting the input rows holds the scale rows of the groups its rows fall in.

KV per token per GPU is ``layers × 2 × kv_heads_per_rank × row_bytes``: ``head_dim × 2`` for
bfloat16, ``head_dim + 4`` for int8 (``kernels.attention.quantize_kv``: int8 values then a float32
scale per (token, head)). The pool is allocated in blocks of ``block_size`` tokens.

The budget follows vLLM's ``--gpu-memory-utilization``: this instance may use ``utilization × total``
of each GPU; the KV cache gets what the weights, the activation peak of one step and a fixed
runtime reserve leave of it (``activation_bytes`` and ``RUNTIME_RESERVE_BYTES`` say what those hold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from grokd.kernels.attention import KV_SCALE_BYTES

GiB = 1 << 30

# CUDA context, cuBLAS/cuBLASLt workspaces, NCCL communicators and buffers, and caching-allocator
# fragmentation: memory a process holds outside its tensors. vLLM measures it at start-up (typically
# 0.5-1.5 GiB per GPU with NCCL); a plan made without a GPU reserves the upper end.
RUNTIME_RESERVE_BYTES = GiB

WEIGHTS_DTYPES = ("auto", "int8", "fp8", "bfloat16", "float32")
KV_CACHE_DTYPES = ("auto", "bfloat16", "int8")
_ELEMENT_BYTES = {"fp8": 1, "bfloat16": 2, "float16": 2, "float32": 4}
SCALE_BYTES = 2  # int8 weights carry bf16 scales
FP32_BYTES = 4
RELEASE_SCALE_GROUPS = 8  # o-projection and expert down projection in the release (GROK1.md §3.1)


class PlanError(ValueError):
    """A model or layout that cannot be planned (indivisible head counts, unknown dtype, ...)."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a Grok-1 checkpoint: its dimensions and how it stores its weights.

    ``int8_stored``: linear weights are int8 + bf16 scales on disk (the release, or grokd's int8
    conversion), so their scales have the release's groups. ``embedding_dtype`` is the embedding
    table's dtype on disk (the release stores it in float32); the model keeps it as it is.
    """

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    experts_per_token: int
    max_position_embeddings: int
    int8_stored: bool = True
    embedding_dtype: str = "float32"
    linear_dtype: str = "bfloat16"  # dtype of the linear weights of a checkpoint not stored in int8
    dense_intermediate_size: int = 0  # Grok-2's residual dense MLP (0: none, Grok-1)
    tied_embeddings: bool = True  # Grok-1 ties the output head to the embeddings; Grok-2 does not

    @classmethod
    def from_config(cls, name: str, cfg: dict[str, Any], *, int8_stored: bool, embedding_dtype: str,
                    linear_dtype: str = "bfloat16") -> ModelShape:
        """From an HF-style Grok-1 config (the keys ``weights.release.GROK1_RELEASE_CONFIG`` uses) or
        Grok-2's (``residual_moe``: experts of ``moe_intermediate_size`` beside a dense MLP of
        ``intermediate_size``, untied embeddings; ``weights.tp_release.GROK2_RELEASE_CONFIG``)."""
        heads = int(cfg["num_attention_heads"])
        residual = bool(cfg.get("residual_moe"))
        if residual and "moe_intermediate_size" not in cfg:
            raise PlanError("config: residual_moe without moe_intermediate_size")
        return cls(
            name=name,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["moe_intermediate_size" if residual else "intermediate_size"]),
            dense_intermediate_size=int(cfg["intermediate_size"]) if residual else 0,
            tied_embeddings=not residual and bool(cfg.get("tie_word_embeddings", True)),
            num_layers=int(cfg["num_hidden_layers"]),
            num_q_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            num_experts=int(cfg.get("num_experts") or cfg.get("num_local_experts") or 8),
            experts_per_token=int(cfg.get("num_experts_per_tok") or 2),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 8192),
            int8_stored=int8_stored,
            embedding_dtype=embedding_dtype,
            linear_dtype=linear_dtype,
        )


@dataclass(frozen=True)
class PlanRequest:
    """The layout and limits to plan for (CLI flags, one to one)."""

    tensor_parallel_size: int
    gpu_memory_bytes: int
    weights_dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enable_expert_parallel: bool = False
    activation_dtype: str = "bfloat16"
    block_size: int = 16
    max_num_batched_tokens: int = 2048  # engine.config.default_token_budget on a GPU
    max_num_seqs: int = 64  # engine.config.SchedulerConfig.max_num_seqs


@dataclass(frozen=True)
class WeightBytes:
    """One GPU's weights by part; ``total`` is what the GPU holds."""

    attention: int
    experts: int
    embedding: int  # embedding rows plus the output head's rows (its copy, or Grok-2's own lm_head)
    replicated: int  # router and RMSNorm scales (float32 on every rank)
    dense: int = 0  # Grok-2's dense MLP beside the experts

    @property
    def total(self) -> int:
        return self.attention + self.experts + self.embedding + self.replicated + self.dense


@dataclass(frozen=True)
class MemoryPlan:
    """One GPU's bill. ``fits``: the weights, the activation peak and the reserve leave room in the
    budget for at least one ``max_model_len`` context of KV; ``reason`` says why not otherwise."""

    model: ModelShape
    request: PlanRequest
    weights_dtype: str
    kv_cache_dtype: str
    max_model_len: int
    q_heads_per_rank: int
    kv_heads_per_rank: int
    experts_per_rank: int
    weights: WeightBytes
    weights_all_ranks: int
    budget_bytes: int
    activation_bytes: int
    reserve_bytes: int
    kv_bytes_per_token: int
    kv_free_bytes: int
    kv_blocks: int
    kv_tokens: int
    full_contexts: int
    fits: bool
    reason: str


def _check_divides(what: str, n: int, tp: int) -> None:
    if n % tp:
        raise PlanError(f"--tensor-parallel-size {tp} does not divide {what} ({n})")


def _kv_heads_per_rank(kv_heads: int, tp: int) -> int:
    """``kv_heads / TP``, or 1 when TP exceeds the KV heads (each then replicated ``TP / kv_heads`` times)."""
    if tp <= kv_heads:
        _check_divides("the KV heads", kv_heads, tp)
        return kv_heads // tp
    if tp % kv_heads:
        raise PlanError(f"--tensor-parallel-size {tp} is neither a divisor nor a multiple of the "
                        f"{kv_heads} KV heads")
    return 1


def _groups_touched(rows: int, groups: int, start: int, stop: int) -> int:
    """Scale rows a rank holding input rows ``[start, stop)`` of ``rows`` needs (``groups`` blocks)."""
    size = rows // groups
    return (stop - 1) // size - start // size + 1


def _linear_bytes(k: int, n: int, wdtype: str, groups: int, k_range: tuple[int, int] | None = None,
                  n_cols: int | None = None) -> int:
    """Bytes of one ``[K, N]`` projection shard: the input rows in ``k_range`` (all when None) and
    ``n_cols`` output columns (all when None). int8 and fp8: one byte each plus the bf16 scale rows
    of the groups the rows fall in, over the held columns."""
    start, stop = k_range or (0, k)
    cols = n if n_cols is None else n_cols
    rows = stop - start
    if wdtype not in ("int8", "fp8"):
        return rows * cols * _ELEMENT_BYTES[wdtype]
    if k % groups:
        raise PlanError(f"input dimension {k} is not a multiple of its {groups} scale groups")
    return rows * cols + _groups_touched(k, groups, start, stop) * cols * SCALE_BYTES


def resolve_weights_dtype(model: ModelShape, weights_dtype: str) -> str:
    """``auto`` keeps what the checkpoint stores (int8 for the release), as ``serve`` does."""
    if weights_dtype not in WEIGHTS_DTYPES:
        raise PlanError(f"--weights-dtype: expected one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    if weights_dtype != "auto":
        return weights_dtype
    return "int8" if model.int8_stored else model.linear_dtype


def rank_weight_bytes(model: ModelShape, tp: int, expert_parallel: bool, weights_dtype: str,
                      activation_dtype: str = "bfloat16", rank: int = 0) -> WeightBytes:
    """The weights rank ``rank`` of ``tp`` holds (``weights_dtype`` resolved: int8|fp8|bfloat16|float32)."""
    d, hd, f, e, layers = (model.hidden_size, model.head_dim, model.intermediate_size, model.num_experts,
                           model.num_layers)
    _check_divides("the query heads", model.num_q_heads, tp)
    kv_rank = _kv_heads_per_rank(model.num_kv_heads, tp)
    q_rank = model.num_q_heads // tp
    # release groups when the int8 comes from the checkpoint; quantize_grouped_int8's one group otherwise
    row_groups = RELEASE_SCALE_GROUPS if model.int8_stored else 1

    q_cols, kv_cols = q_rank * hd, kv_rank * hd
    q_dim = model.num_q_heads * hd
    o_rows = (rank * q_cols, (rank + 1) * q_cols)
    attention = (_linear_bytes(d, q_dim, weights_dtype, 1, n_cols=q_cols)
                 + 2 * _linear_bytes(d, model.num_kv_heads * hd, weights_dtype, 1, n_cols=kv_cols)
                 + _linear_bytes(q_dim, d, weights_dtype, row_groups, k_range=o_rows))

    if expert_parallel:
        _check_divides("the experts", e, tp)
        local, f_cols, f_rows = e // tp, f, (0, f)
    else:
        _check_divides("the expert intermediate size", f, tp)
        local, f_cols = e, f // tp
        f_rows = (rank * f_cols, (rank + 1) * f_cols)
    expert = (2 * _linear_bytes(d, f, weights_dtype, 1, n_cols=f_cols)
              + _linear_bytes(f, d, weights_dtype, row_groups, k_range=f_rows))

    dense = 0
    if model.dense_intermediate_size:
        fd = model.dense_intermediate_size
        _check_divides("the dense intermediate size", fd, tp)
        d_rows = (rank * fd // tp, (rank + 1) * fd // tp)
        dense = (2 * _linear_bytes(d, fd, weights_dtype, 1, n_cols=fd // tp)
                 + _linear_bytes(fd, d, weights_dtype, row_groups, k_range=d_rows))

    vocab_rows = math.ceil(model.vocab_size / tp)
    embedding = vocab_rows * d * _ELEMENT_BYTES[model.embedding_dtype]
    if not model.tied_embeddings or model.embedding_dtype != activation_dtype:
        embedding += vocab_rows * d * _ELEMENT_BYTES[activation_dtype]  # the output head's rows
    replicated = layers * (e * d + 4 * d) * FP32_BYTES + d * FP32_BYTES  # router, 4 norms; final norm
    return WeightBytes(attention=layers * attention, experts=layers * local * expert, embedding=embedding,
                       replicated=replicated, dense=layers * dense)


def kv_bytes_per_token(model: ModelShape, tp: int, kv_cache_dtype: str) -> int:
    """Keys and values of one token on one GPU, all layers (``kv_cache_dtype`` resolved)."""
    row = model.head_dim + KV_SCALE_BYTES if kv_cache_dtype == "int8" else model.head_dim * _ELEMENT_BYTES[
        kv_cache_dtype]
    return model.num_layers * 2 * _kv_heads_per_rank(model.num_kv_heads, tp) * row


def activation_bytes(model: ModelShape, req: PlanRequest) -> int:
    """Peak activations of one step on one GPU, an upper estimate for ``max_num_batched_tokens`` (T)
    tokens in the activation dtype (``a`` bytes); a layer's buffers are freed before the next runs:

    * hidden states: residual, normed input, branch output and the all-reduce buffer, ``4·T·D·a``;
    * attention: the rank's q/k/v and the attention output, ``T·(2·q_rank + 2·kv_rank)·head_dim·a``
      (prefill attention is fused, no ``T×T`` scores);
    * MoE: the routed token copies with their gathered input, gate, up, product and output,
      ``C·(2·D + 3·I_rank)·a``, where TP gives ``C = T·top_k`` copies of ``I / TP`` columns and EP
      at worst ``C = T·min(top_k, experts_per_rank)`` copies (every token to this rank) of all ``I``;
      Grok-2's dense MLP adds its gate, up and product, ``3·T·I_dense / TP·a``;
    * logits: ``max_num_seqs`` rows of the rank's vocabulary slice and of the gathered vocabulary,
      float32.
    """
    tp, t = req.tensor_parallel_size, req.max_num_batched_tokens
    a = _ELEMENT_BYTES[req.activation_dtype]
    d, hd = model.hidden_size, model.head_dim
    q_rank, kv_rank = model.num_q_heads // tp, _kv_heads_per_rank(model.num_kv_heads, tp)
    if req.enable_expert_parallel:
        copies, f_rank = t * min(model.experts_per_token, model.num_experts // tp), model.intermediate_size
    else:
        copies, f_rank = t * model.experts_per_token, model.intermediate_size // tp
    hidden = 4 * t * d * a
    attention = t * (2 * q_rank + 2 * kv_rank) * hd * a
    moe = copies * (2 * d + 3 * f_rank) * a + t * 3 * (model.dense_intermediate_size // tp) * a
    logits = req.max_num_seqs * (math.ceil(model.vocab_size / tp) + model.vocab_size) * FP32_BYTES
    return hidden + max(attention, moe) + logits


def plan(model: ModelShape, req: PlanRequest) -> MemoryPlan:
    """One GPU's memory bill for ``model`` under ``req``; raises PlanError for impossible layouts."""
    tp = req.tensor_parallel_size
    if tp < 1:
        raise PlanError(f"--tensor-parallel-size must be at least 1, got {tp}")
    if not 0 < req.gpu_memory_utilization <= 1:
        raise PlanError(f"--gpu-memory-utilization must be in (0, 1], got {req.gpu_memory_utilization}")
    if req.kv_cache_dtype not in KV_CACHE_DTYPES:
        raise PlanError(f"--kv-cache-dtype: expected one of {', '.join(KV_CACHE_DTYPES)}, got {req.kv_cache_dtype!r}")
    max_len = req.max_model_len or model.max_position_embeddings
    if not 0 < max_len <= model.max_position_embeddings:
        raise PlanError(f"--max-model-len {max_len} is outside 1..{model.max_position_embeddings} "
                        f"(the model's max_position_embeddings)")
    wdtype = resolve_weights_dtype(model, req.weights_dtype)
    kv_dtype = req.activation_dtype if req.kv_cache_dtype == "auto" else req.kv_cache_dtype
    per_rank = [rank_weight_bytes(model, tp, req.enable_expert_parallel, wdtype, req.activation_dtype, r)
                for r in range(tp)]
    weights = max(per_rank, key=lambda w: w.total)
    budget = int(req.gpu_memory_bytes * req.gpu_memory_utilization)
    act = activation_bytes(model, req)
    kv_token = kv_bytes_per_token(model, tp, kv_dtype)
    free = budget - weights.total - act - RUNTIME_RESERVE_BYTES
    blocks = max(free, 0) // (kv_token * req.block_size)
    tokens = blocks * req.block_size
    contexts = blocks // math.ceil(max_len / req.block_size)
    if free <= 0:
        reason = (f"weights {weights.total / GiB:.2f} GiB + activations {act / GiB:.2f} GiB + reserve "
                  f"{RUNTIME_RESERVE_BYTES / GiB:.2f} GiB exceed the {budget / GiB:.2f} GiB budget per GPU "
                  f"by {-free / GiB:.2f} GiB")
    elif contexts < 1:
        reason = (f"the KV cache holds {tokens} tokens per GPU, less than one {max_len}-token context "
                  f"(lower --max-model-len, or use --kv-cache-dtype int8 or more GPUs)")
    else:
        reason = ""
    return MemoryPlan(
        model=model, request=req, weights_dtype=wdtype, kv_cache_dtype=kv_dtype, max_model_len=max_len,
        q_heads_per_rank=model.num_q_heads // tp, kv_heads_per_rank=_kv_heads_per_rank(model.num_kv_heads, tp),
        experts_per_rank=model.num_experts // tp if req.enable_expert_parallel else model.num_experts,
        weights=weights, weights_all_ranks=sum(w.total for w in per_rank), budget_bytes=budget,
        activation_bytes=act, reserve_bytes=RUNTIME_RESERVE_BYTES, kv_bytes_per_token=kv_token,
        kv_free_bytes=max(free, 0), kv_blocks=blocks, kv_tokens=tokens, full_contexts=contexts,
        fits=not reason, reason=reason,
    )
