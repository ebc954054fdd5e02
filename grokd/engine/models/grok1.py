"""Grok-1 (xai-org/grok-1) as a plain torch module, exactly per docs/GROK1.md.

Sandwich RMSNorms in fp32 (``scale * x``, not ``1 + w``), half-split RoPE, QK logits scaled by
``attn_output_multiplier`` then soft-capped at ``max_attn_value``, GQA in contiguous groups, an
fp32 router with top-2 gates not renormalised, tanh-GELU gated experts, tied embeddings with the
embedding/output multipliers rounded to the activation dtype as the JAX reference does.

Linear weights are held either as plain ``[out, in]`` tensors or, for int8 checkpoints, as int8
``[in, out]`` plus bf16 scales (dequantised inside the matmul to ``bf16(int8 * scale)``); with
``weights_dtype="fp8"`` as float8 e4m3 in that same layout (lossy, ``kernels.quant``).

Sharded over ``TensorParallel`` ranks (``engine.parallel.shard``), each rank builds the layers at
its own sizes: its query and KV heads, its slice of every expert's intermediate dimension or its
whole experts, its rows of the vocabulary; router and norms are replicated. The o-projection, the
MoE and the embedding then produce partial sums, added across ranks in ``reduce_dtype`` (float32
by default) and rounded once to the activation dtype; each rank's GEMM rounds its own partial to
the activation dtype first, as the reference's own 8-way layout does. The output head computes
each rank's columns of logits and gathers them. On one rank every such step is the identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from grokd.engine.parallel.shard import ModelShard, TensorParallel, head_rows, slice_weight, vocab_rows
from grokd.kernels.dispatch import Kernels, select_kernels
from grokd.kernels.dtypes import DTYPES
from grokd.kernels.quant import quantize_grouped_fp8
from grokd.kernels.types import AttentionMetadata, ExpertWeights, GroupedInt8Weight
from grokd.weights.checkpoint import Checkpoint, CheckpointError, QuantizedWeight
from grokd.weights.lazy import LazyQuantized, LazyTensor

WEIGHTS_DTYPES = ("auto", "int8", "fp8", "bfloat16", "float32")


@dataclass
class Grok1Config:
    """Hyperparameters in the HF port's key names (defaults: the released Grok-1)."""

    vocab_size: int = 131072
    hidden_size: int = 6144
    intermediate_size: int = 32768
    num_hidden_layers: int = 64
    num_attention_heads: int = 48
    num_key_value_heads: int = 8
    head_dim: int = 128
    attn_output_multiplier: float = 0.08838834764831845
    embedding_multiplier_scale: float = 78.38367176906169
    output_multiplier_scale: float = 0.5773502691896257
    max_attn_value: float = 30.0
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    num_experts: int = 8
    num_experts_per_tok: int = 2
    rope_theta: float = 10000.0

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> Grok1Config:
        known = {f.name for f in fields(cls)}
        out = cls(**{k: v for k, v in cfg.items() if k in known and v is not None})
        if "head_dim" not in cfg:
            out.head_dim = out.hidden_size // out.num_attention_heads
        if "num_local_experts" in cfg and "num_experts" not in cfg:
            out.num_experts = cfg["num_local_experts"]
        return out


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def _to_storage(
    value: torch.Tensor | QuantizedWeight, weights_dtype: str, device: torch.device, kernels: Kernels
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, scales)`` as stored: int8 (or fp8 e4m3) ``[in, out]`` + scales, or plain
    ``[out, in]``. fp8 re-quantises the release's effective int8 weight with its own scale groups,
    a dense weight with one group (``quant.quantize_grouped_fp8``)."""
    if isinstance(value, QuantizedWeight):
        if weights_dtype in ("auto", "int8"):
            return value.weight.to(device), value.scales.to(device, torch.bfloat16)
        if weights_dtype == "fp8":
            effective = GroupedInt8Weight(value.weight, value.scales.to(torch.bfloat16)).dequantize()
            f8 = quantize_grouped_fp8(effective, groups=value.scales.shape[-2])
            return f8.qweight.to(device), f8.scales.to(device)
        w = GroupedInt8Weight(value.weight, value.scales).dequantize().transpose(-1, -2)
        return w.to(device, DTYPES[weights_dtype]).contiguous(), None
    if weights_dtype == "int8":
        q = kernels.quantize_grouped_int8(value.transpose(-1, -2))
        return q.qweight.to(device), q.scales.to(device)
    if weights_dtype == "fp8":
        f8 = quantize_grouped_fp8(value.transpose(-1, -2))
        return f8.qweight.to(device), f8.scales.to(device)
    dtype = value.dtype if weights_dtype == "auto" else DTYPES[weights_dtype]
    return value.to(device, dtype), None


def _storage_shape(shape: tuple[int, ...], quantized: bool) -> tuple[int, ...]:
    return (shape[1], shape[0]) if quantized else shape


class RMSNorm(nn.Module):
    """fp32 RMSNorm ``cast(scale * x * rsqrt(mean(x^2) + eps))`` with one rounding at the end."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.scale = _param(torch.ones(dim, dtype=torch.float32))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.scale * y).to(x.dtype)


class QLinear(nn.Module):
    """A bias-free linear layer over a plain ``[out, in]`` weight or int8 ``[in, out]`` + scales."""

    def __init__(self, in_features: int, out_features: int, kernels: Kernels) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kernels = kernels
        self.weight: nn.Parameter | None = None
        self.scales: nn.Parameter | None = None

    def load(self, name: str, value: torch.Tensor | QuantizedWeight, weights_dtype: str, device: torch.device) -> None:
        quantized = isinstance(value, QuantizedWeight)
        expect = _storage_shape((self.out_features, self.in_features), quantized)
        if tuple(value.shape) != expect:
            raise CheckpointError(f"{name}: shape {tuple(value.shape)} does not match config {expect}")
        w, s = _to_storage(value, weights_dtype, device, self.kernels)
        self.weight = _param(w)
        self.scales = _param(s) if s is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.weight is not None, "QLinear: weights not loaded"
        if self.scales is not None:
            return self.kernels.linear(x, GroupedInt8Weight(self.weight, self.scales))
        return self.kernels.linear(x, self.weight.to(x.dtype))  # computed in the activation dtype


class Experts(nn.Module):
    """All experts of one layer, stacked per projection (``gate`` = linear, ``up`` = linear_v,
    ``down`` = linear_1) so the MoE kernel can group tokens by expert."""

    KINDS = {"linear": "gate", "linear_v": "up", "linear_1": "down"}

    def __init__(self, cfg: Grok1Config, kernels: Kernels, shard: ModelShard) -> None:
        super().__init__()
        d, f = cfg.hidden_size, len(shard.ffn)
        self.kernels = kernels
        self.first = shard.experts.start  # global index of the first expert held
        self.num_experts = len(shard.experts)
        self.shapes = {"gate": (f, d), "up": (f, d), "down": (d, f)}  # torch [out, in]
        self.loaded: dict[str, set[int]] = {k: set() for k in self.shapes}
        for kind in self.shapes:
            setattr(self, f"{kind}_weight", None)
            setattr(self, f"{kind}_scales", None)

    def load(self, name: str, kind: str, expert: int, value: torch.Tensor | QuantizedWeight,
             weights_dtype: str, device: torch.device) -> None:
        """Store global expert ``expert`` (one this rank holds)."""
        expert -= self.first
        if not 0 <= expert < self.num_experts:
            raise CheckpointError(f"{name}: expert {expert} out of range (num_experts={self.num_experts})")
        quantized = isinstance(value, QuantizedWeight)
        expect = _storage_shape(self.shapes[kind], quantized)
        if tuple(value.shape) != expect:
            raise CheckpointError(f"{name}: shape {tuple(value.shape)} does not match config {expect}")
        w, s = _to_storage(value, weights_dtype, device, self.kernels)
        stacked: nn.Parameter | None = getattr(self, f"{kind}_weight")
        stacked_s: nn.Parameter | None = getattr(self, f"{kind}_scales")
        if stacked is None:
            stacked = _param(torch.empty((self.num_experts, *w.shape), dtype=w.dtype, device=device))
            setattr(self, f"{kind}_weight", stacked)
            if s is not None:
                stacked_s = _param(torch.empty((self.num_experts, *s.shape), dtype=s.dtype, device=device))
                setattr(self, f"{kind}_scales", stacked_s)
        same = stacked.shape[1:] == w.shape and stacked.dtype == w.dtype
        if s is None or stacked_s is None:
            same = same and s is None and stacked_s is None
        else:
            same = same and stacked_s.shape[1:] == s.shape
        if not same:
            raise CheckpointError(f"{name}: storage differs from the layer's other experts")
        stacked.data[expert].copy_(w)
        if s is not None and stacked_s is not None:
            stacked_s.data[expert].copy_(s)
        self.loaded[kind].add(expert)

    def missing(self) -> list[str]:
        inv = {v: k for k, v in self.KINDS.items()}
        return [f"experts.{self.first + e}.{inv[k]}" for k, done in self.loaded.items()
                for e in range(self.num_experts) if e not in done]

    def weights(self, kind: str) -> ExpertWeights:
        return ExpertWeights(getattr(self, f"{kind}_weight"), getattr(self, f"{kind}_scales"))


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``cos, sin [T, head_dim]`` for half-split (NeoX) rotary embedding."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim))
    phase = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    phase = torch.cat([phase, phase], dim=-1)
    return torch.cos(phase), torch.sin(phase)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [T, heads, head_dim]`` in fp32, pairing dim ``i`` with ``i + head_dim/2``."""
    x32 = x.float()
    half = x.shape[-1] // 2
    rot = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos[:, None, :] + rot * sin[:, None, :]).to(x.dtype)


class Attention(nn.Module):
    """This rank's query heads and the KV heads they read; o-proj over those heads, summed across ranks.
    ``temperature_len`` is the kernels' length temperature (0 here; Grok-2 sets it)."""

    temperature_len = 0

    def __init__(self, cfg: Grok1Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = len(shard.q_heads), len(shard.kv_heads), hd
        self.tp = tp
        self.q_proj = QLinear(d, self.num_heads * hd, kernels)
        self.k_proj = QLinear(d, self.num_kv_heads * hd, kernels)
        self.v_proj = QLinear(d, self.num_kv_heads * hd, kernels)
        self.o_proj = QLinear(self.num_heads * hd, d, kernels)
        self.scale = cfg.attn_output_multiplier
        self.softcap = cfg.max_attn_value
        self.kernels = kernels

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        t = x.shape[0]
        q = apply_rope(self.q_proj(x).view(t, self.num_heads, self.head_dim), cos, sin)
        k = apply_rope(self.k_proj(x).view(t, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).view(t, self.num_kv_heads, self.head_dim)
        self.kernels.write_kv(kv_cache, k, v, meta)
        o = self.kernels.attention(q, kv_cache, meta, scale=self.scale, softcap=self.softcap,
                                   temperature_len=self.temperature_len)
        return self.tp.reduce(self.o_proj(o.reshape(t, self.num_heads * self.head_dim)), x.dtype)


class MoEBlock(nn.Module):
    """The replicated fp32 router over all experts, and this rank's experts (or slices of them)."""

    def __init__(self, cfg: Grok1Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel) -> None:
        super().__init__()
        self.gate = _param(torch.zeros(cfg.num_experts, cfg.hidden_size, dtype=torch.float32))
        self.experts = Experts(cfg, kernels, shard)
        self.top_k = cfg.num_experts_per_tok
        self.kernels = kernels
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.experts
        if self.tp.world_size == 1:
            return self.kernels.moe(x, self.gate, e.weights("gate"), e.weights("up"), e.weights("down"), self.top_k)
        partial = self.kernels.moe(x, self.gate, e.weights("gate"), e.weights("up"), e.weights("down"), self.top_k,
                                   first_expert=e.first, out_dtype=torch.float32)
        return self.tp.reduce(partial, x.dtype)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Grok1Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel) -> None:
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.attn = Attention(cfg, kernels, shard, tp)
        self.moe_block = MoEBlock(cfg, kernels, shard, tp)
        self.pre_attn_norm, self.post_attn_norm = RMSNorm(d, eps), RMSNorm(d, eps)
        self.pre_moe_norm, self.post_moe_norm = RMSNorm(d, eps), RMSNorm(d, eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        h = h + self.post_attn_norm(self.attn(self.pre_attn_norm(h), cos, sin, kv_cache, meta))
        return h + self.post_moe_norm(self.moe_block(self.pre_moe_norm(h)))


# Accept the SGLang / Mixtral-style names too (GROK1.md §3.2b) by rewriting them to hpcai names.
_ALIASES = [
    (re.compile(r"\.self_attn\."), ".attn."),
    (re.compile(r"\.block_sparse_moe\."), ".moe_block."),
    (re.compile(r"\.experts\.(\d+)\.w1\."), r".experts.\1.linear."),
    (re.compile(r"\.experts\.(\d+)\.w3\."), r".experts.\1.linear_v."),
    (re.compile(r"\.experts\.(\d+)\.w2\."), r".experts.\1.linear_1."),
    (re.compile(r"(norm)\.weight$"), r"\1.scale"),
]
_EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.moe_block\.experts\.(\d+)\.(linear|linear_v|linear_1)\.weight$")
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_PROJ_RE = re.compile(r"\.attn\.([qkvo])_proj\.weight$")


class Grok1ForCausalLM(nn.Module):
    """Step interface: ``forward(input_ids [T], positions [T], kv_caches, meta) -> hidden [T, D]``,
    ``compute_logits(hidden) -> float32 [n, V]``. No request or sampling logic.

    With ``tp`` over several ranks this is one rank's shard: every rank runs the same steps on the
    same inputs, ``num_kv_heads`` is this rank's (what its KV pool holds), and ``compute_logits``
    returns the full ``[n, V]`` logits on every rank."""

    ARCHITECTURE = "grok-1"  # the ``Checkpoint.architecture`` this class loads

    def __init__(self, cfg: Grok1Config, dtype: torch.dtype = torch.bfloat16, weights_dtype: str = "auto",
                 kernels: Kernels | None = None, tp: TensorParallel | None = None) -> None:
        super().__init__()
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype must be one of {WEIGHTS_DTYPES}, not {weights_dtype!r}")
        self.config, self.dtype, self.weights_dtype = cfg, dtype, weights_dtype
        self.kernels = kernels or select_kernels("cpu")
        self.tp = tp = tp or TensorParallel()
        self.shard = ModelShard.build(
            rank=tp.rank, world_size=tp.world_size, num_q_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads, intermediate_size=cfg.intermediate_size,
            vocab_size=cfg.vocab_size, num_experts=cfg.num_experts,
            expert_parallel=tp.config.enable_expert_parallel)
        self.num_layers = cfg.num_hidden_layers
        self.num_kv_heads = len(self.shard.kv_heads)
        self.head_dim = cfg.head_dim
        self.vocab_size = cfg.vocab_size
        self.max_position_embeddings = cfg.max_position_embeddings
        # JAX rounds weakly typed python constants to the activation dtype (GROK1.md §2.1)
        self.embedding_multiplier = torch.tensor(cfg.embedding_multiplier_scale, dtype=dtype).item()
        self.output_multiplier = torch.tensor(cfg.output_multiplier_scale, dtype=dtype).item()
        self.embed_tokens: nn.Parameter | None = None
        # the tied embeddings in the activation dtype (the same tensor when that is the stored dtype)
        self.register_buffer("lm_head", None, persistent=False)
        # registered as a ModuleList (parameters, .to()); read through the typed list
        self.decoder_layers = [self.make_layer(cfg) for _ in range(cfg.num_hidden_layers)]
        self.layers = nn.ModuleList(self.decoder_layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    @property
    def supports_cuda_graphs(self) -> bool:
        """Decode steps can be captured (``engine.decode_graphs``) when no kernel reads device values
        on the host: the Triton MoE sorts tokens by expert on the device, the PyTorch one counts
        them on the host (``Kernels.sync_free``)."""
        return self.kernels.sync_free

    def make_layer(self, cfg: Grok1Config) -> DecoderLayer:
        """One decoder layer of this rank's shard (a subclass builds its own kind)."""
        return DecoderLayer(cfg, self.kernels, self.shard, self.tp)

    @classmethod
    def config_from(cls, cfg: dict[str, Any]) -> Grok1Config:
        return Grok1Config.from_dict(cfg)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, dtype: torch.dtype = torch.bfloat16, weights_dtype: str = "auto",
                        device: torch.device | str = "cpu", tp: TensorParallel | None = None,
                        kernel_backend: str = "auto") -> Grok1ForCausalLM:
        """Build from a checkpoint, streaming its tensors straight into place on ``device``, with the
        kernels ``kernel_backend`` names (``kernels.dispatch.select_kernels``). A rank of a sharded
        model reads only its own slices (``Checkpoint.lazy_tensors``)."""
        if ckpt.architecture != cls.ARCHITECTURE:
            raise CheckpointError(f"{ckpt.path}: architecture {ckpt.architecture!r} is not {cls.ARCHITECTURE}")
        device = torch.device(device)
        model = cls(cls.config_from(ckpt.config), dtype, weights_dtype, select_kernels(device, kernel_backend), tp)
        model.to(device)
        if model.tp.world_size == 1:
            model.load_weights(ckpt.tensors(), device)
        elif ckpt.lazy_tensors is None:
            raise CheckpointError(f"{ckpt.path}: a {ckpt.format} checkpoint cannot be read by slices; "
                                  "tensor parallelism needs the release or a safetensors checkpoint")
        else:
            model.load_weights(ckpt.lazy_tensors(), device)
        return model

    def load_weights(self, named: Iterable[tuple[str, Any]], device: torch.device | str = "cpu") -> None:
        """Consume ``Checkpoint.tensors()`` or ``lazy_tensors()``; every tensor is cut to this
        rank's shard (``_take``: a lazy one reads just that) and shape-checked against it."""
        device = torch.device(device)
        seen: set[str] = set()
        for raw_name, value in named:
            name = raw_name
            for pattern, repl in _ALIASES:
                name = pattern.sub(repl, name)
            seen.add(name)
            taken = self._take(name, value)
            if taken is not None:
                self._load_one(name, taken, device)
        missing = self._missing(seen)
        if missing:
            raise CheckpointError(f"checkpoint is missing tensors: {', '.join(missing[:5])}"
                                  + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
        self.finish_output_head()

    def finish_output_head(self) -> None:
        """Tie the output head to the embeddings, in the activation dtype."""
        assert self.embed_tokens is not None  # _missing names it otherwise
        self.lm_head = self.embed_tokens.data.to(self.dtype)

    def _take(self, name: str, value: Any) -> torch.Tensor | QuantizedWeight | None:
        """This rank's part of tensor ``name`` (``None``: an expert another rank holds)."""
        sh, cfg, hd = self.shard, self.config, self.head_dim
        if sh.world_size > 1:
            m = _EXPERT_RE.match(name)
            full_ffn = len(sh.ffn) == cfg.intermediate_size
            if m and int(m.group(2)) not in sh.experts:
                return None
            if m and not full_ffn:
                kind = m.group(3)
                return slice_weight(value, name, out=sh.ffn if kind != "linear_1" else None,
                                    inp=sh.ffn if kind == "linear_1" else None)
            if name == "model.embed_tokens.weight" and not hasattr(value, "scales"):
                return slice_weight(value, name, out=sh.vocab)
            proj = _PROJ_RE.search(name)
            if proj:
                p = proj.group(1)
                heads = head_rows(sh.q_heads if p in "qo" else sh.kv_heads, hd)
                return slice_weight(value, name, out=None if p == "o" else heads, inp=heads if p == "o" else None)
        if isinstance(value, LazyTensor):
            return value[()]
        if isinstance(value, LazyQuantized):
            return QuantizedWeight(value.weight[()], value.scales[()])
        return value

    def _load_one(self, name: str, value: torch.Tensor | QuantizedWeight, device: torch.device) -> None:
        cfg = self.config
        if name == "lm_head.weight":
            return  # tied to the embeddings
        if name == "model.embed_tokens.weight":
            self.embed_tokens = _param(self._plain(name, value, (len(self.shard.vocab), cfg.hidden_size)).to(device))
            return
        if name == "model.norm.scale":
            self.norm.scale.data.copy_(self._plain(name, value, (cfg.hidden_size,)).float())
            return
        m = _EXPERT_RE.match(name)
        if m:
            layer = self._layer(name, int(m.group(1)))
            layer.moe_block.experts.load(name, Experts.KINDS[m.group(3)], int(m.group(2)), value,
                                         self.weights_dtype, device)
            return
        m = _LAYER_RE.match(name)
        if not m:
            raise CheckpointError(f"{name}: unexpected tensor for grok-1")
        layer, rest = self._layer(name, int(m.group(1))), m.group(2)
        if rest.startswith("attn.") and rest.endswith("_proj.weight"):
            proj = getattr(layer.attn, rest[len("attn."):-len(".weight")], None)
            if isinstance(proj, QLinear):
                proj.load(name, value, self.weights_dtype, device)
                return
        elif rest == "moe_block.gate.weight":
            layer.moe_block.gate.data.copy_(self._plain(name, value, (cfg.num_experts, cfg.hidden_size)).float())
            return
        elif rest.endswith("_norm.scale"):
            norm = getattr(layer, rest[: -len(".scale")], None)
            if isinstance(norm, RMSNorm):
                norm.scale.data.copy_(self._plain(name, value, (cfg.hidden_size,)).float())
                return
        raise CheckpointError(f"{name}: unexpected tensor for grok-1")

    @staticmethod
    def _plain(name: str, value: torch.Tensor | QuantizedWeight, shape: tuple[int, ...]) -> torch.Tensor:
        """``value`` checked to be a plain tensor of ``shape``."""
        if isinstance(value, QuantizedWeight):
            raise CheckpointError(f"{name}: expected a plain tensor, found an int8 weight")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{name}: shape {tuple(value.shape)} does not match config {shape}")
        return value

    def _layer(self, name: str, index: int) -> DecoderLayer:
        if index >= self.num_layers:
            raise CheckpointError(f"{name}: layer {index} out of range (num_hidden_layers={self.num_layers})")
        return self.decoder_layers[index]

    def _missing(self, seen: set[str]) -> list[str]:
        missing = [] if self.embed_tokens is not None else ["model.embed_tokens.weight"]
        if "model.norm.scale" not in seen:
            missing.append("model.norm.scale")
        for i, layer in enumerate(self.decoder_layers):
            p = f"model.layers.{i}."
            for n in ("pre_attn_norm", "post_attn_norm", "pre_moe_norm", "post_moe_norm"):
                if p + n + ".scale" not in seen:
                    missing.append(p + n + ".scale")
            if p + "moe_block.gate.weight" not in seen:
                missing.append(p + "moe_block.gate.weight")
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                if getattr(layer.attn, n).weight is None:
                    missing.append(f"{p}attn.{n}.weight")
            missing += [f"{p}moe_block.{x}.weight" for x in layer.moe_block.experts.missing()]
        return missing

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``bf16(E_f32[tok] * c_emb)``: one rounding, as XLA fuses the convert with the multiply.
        Sharded: each rank looks up the ids in its vocabulary rows (zeros for the others), and the
        one nonzero row per token is what the cross-rank sum yields."""
        assert self.embed_tokens is not None, "grok-1: weights not loaded"
        if self.tp.world_size == 1:
            return (self.embed_tokens[input_ids].float() * self.embedding_multiplier).to(self.dtype)
        h = vocab_rows(self.embed_tokens, input_ids, self.shard.vocab).float() * self.embedding_multiplier
        return self.tp.reduce(h, self.dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                meta: AttentionMetadata) -> torch.Tensor:
        h = self.embed(input_ids)
        cos, sin = rope_tables(positions, self.head_dim, self.config.rope_theta)
        for layer, kv_cache in zip(self.decoder_layers, kv_caches, strict=True):
            h = layer(h, cos, sin, kv_cache, meta)
        return self.norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied output projection times the output multiplier, in the activation dtype, as float32
        (sharded: this rank's vocabulary columns, gathered from all ranks)."""
        logits = hidden.to(self.dtype) @ self.lm_head.t()
        return self.tp.gather_logits((logits * self.output_multiplier).float(), self.vocab_size)
