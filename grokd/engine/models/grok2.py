"""Grok-2 (xai-org/grok-2) as a plain torch module: Grok-1's skeleton with a residual MoE, per
docs/GROK2.md.

What is Grok-1's (``engine.models.grok1``, reused as is): the four fp32 RMSNorms per layer, the
sharded attention with grouped-query heads and the 30 soft cap, the half-split (NeoX) RoPE, the
stacked experts and the fp32 top-2 router whose gates are not renormalised, the loading of every
tensor into this rank's shard. What Grok-2 changes:

- attention scale ``head_dim ** -0.5``, and the length temperature: a query at 0-based position
  ``p > attn_temperature_len`` has its capped scores multiplied by ``log2(p) /
  log2(attn_temperature_len)`` (``kernels.attention.length_temperature``, in every attention path);
- RoPE base 208,533,496 without scaling (``rope_type: "original"``; any other is refused);
- the router's fp32 logits are soft-capped at ``router_logit_softcapping`` before the softmax;
- GELU is the exact erf form, in the experts and in the dense branch;
- the residual MoE: a dense GeGLU MLP (``intermediate_size``) beside the experts
  (``moe_intermediate_size``), their outputs combined as ``(dense + moe) / sqrt(2)`` before the
  post-MoE norm. Both branches are summed in float32 and rounded once to the activation dtype;
  sharded, each rank's dense slice and experts' slices make one float32 partial and the ranks'
  partials are added in one all-reduce;
- untied ``lm_head`` (sharded by vocabulary rows like the embedding) and final logits
  ``final_logit_softcapping * tanh(output_multiplier_scale * z / final_logit_softcapping)`` in
  float32;
- the embedding multiplier ``sqrt(hidden_size)`` is applied in float32 (not rounded to the
  activation dtype first, as Grok-1's JAX reference does).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grokd.engine.models.grok1 import (
    Attention,
    DecoderLayer,
    Grok1Config,
    Grok1ForCausalLM,
    MoEBlock,
    QLinear,
    RMSNorm,
)
from grokd.engine.parallel.shard import ModelShard, TensorParallel, even_part, slice_weight
from grokd.kernels.dispatch import Kernels
from grokd.weights.checkpoint import CheckpointError, QuantizedWeight

ROPE_TYPES = (None, "original", "default")  # plain RoPE; a scaled one would change the model
_MLP_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$")


@dataclass
class Grok2Config(Grok1Config):
    """Grok-2's hyperparameters (defaults: the released model). ``intermediate_size`` is inherited
    as the experts' (the release's ``moe_intermediate_size``), ``dense_intermediate_size`` is the
    dense branch's (the release's ``intermediate_size``)."""

    vocab_size: int = 131072
    hidden_size: int = 8192
    intermediate_size: int = 16384
    dense_intermediate_size: int = 32768
    num_hidden_layers: int = 64
    num_attention_heads: int = 64
    num_key_value_heads: int = 8
    head_dim: int = 128
    attn_output_multiplier: float = 128 ** -0.5
    embedding_multiplier_scale: float = 90.50966799187809
    output_multiplier_scale: float = 0.5
    max_attn_value: float = 30.0
    router_logit_softcapping: float = 30.0
    final_logit_softcapping: float = 50.0
    attn_temperature_len: int = 1024
    max_position_embeddings: int = 131072
    rope_theta: float = 208533496.0

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> Grok2Config:
        """From the release's ``config.json`` (its key names: ``moe_intermediate_size``,
        ``attn_logit_softcapping``, ``num_local_experts`` ...)."""
        if not cfg.get("residual_moe", False):
            raise CheckpointError("config.json: Grok-2 needs residual_moe: true")
        if cfg.get("rope_type") not in ROPE_TYPES:
            raise CheckpointError(f"config.json: rope_type {cfg.get('rope_type')!r} is not supported "
                                  "(Grok-2 uses plain RoPE, rope_type 'original')")
        if "moe_intermediate_size" not in cfg or "intermediate_size" not in cfg:
            raise CheckpointError("config.json: Grok-2 needs intermediate_size (dense) and moe_intermediate_size")
        renamed = {k: v for k, v in cfg.items() if k not in ("intermediate_size", "moe_intermediate_size")}
        renamed["intermediate_size"] = cfg["moe_intermediate_size"]
        renamed["dense_intermediate_size"] = cfg["intermediate_size"]
        if cfg.get("attn_logit_softcapping") is not None:
            renamed["max_attn_value"] = cfg["attn_logit_softcapping"]
        out = super().from_dict(renamed)
        assert isinstance(out, Grok2Config)
        if "attn_output_multiplier" not in cfg:
            out.attn_output_multiplier = out.head_dim ** -0.5
        return out


class DenseMLP(nn.Module):
    """The residual branch: ``down(gelu(gate(x)) * up(x))`` with the erf GELU, over this rank's
    ``rows`` of the intermediate dimension (a partial sum when sharded)."""

    def __init__(self, hidden: int, rows: range, kernels: Kernels) -> None:
        super().__init__()
        self.gate_proj = QLinear(hidden, len(rows), kernels)
        self.up_proj = QLinear(hidden, len(rows), kernels)
        self.down_proj = QLinear(len(rows), hidden, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x)) * self.up_proj(x))


class ResidualMoE(MoEBlock):
    """Grok-1's router and experts (router capped, erf GELU) plus the dense MLP, combined as
    ``(dense + moe) / sqrt(2)``: summed in float32 (across ranks in one all-reduce), rounded once."""

    def __init__(self, cfg: Grok2Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel,
                 dense_rows: range) -> None:
        super().__init__(cfg, kernels, shard, tp)
        self.mlp = DenseMLP(cfg.hidden_size, dense_rows, kernels)
        self.router_softcap = cfg.router_logit_softcapping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.experts
        moe = self.kernels.moe(x, self.gate, e.weights("gate"), e.weights("up"), e.weights("down"), self.top_k,
                               activation=F.gelu, first_expert=e.first, out_dtype=torch.float32,
                               router_softcap=self.router_softcap)
        return self.tp.reduce((self.mlp(x).float() + moe) / math.sqrt(2.0), x.dtype)


class Grok2Attention(Attention):
    """Grok-1's attention with Grok-2's scale (set in the config) and length temperature."""

    def __init__(self, cfg: Grok2Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel) -> None:
        super().__init__(cfg, kernels, shard, tp)
        self.temperature_len = cfg.attn_temperature_len


class Grok2DecoderLayer(DecoderLayer):
    """Grok-1's sandwich-norm layer (its ``forward``) over Grok-2's attention and residual MoE."""

    def __init__(self, cfg: Grok2Config, kernels: Kernels, shard: ModelShard, tp: TensorParallel,
                 dense_rows: range) -> None:
        nn.Module.__init__(self)
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.attn = Grok2Attention(cfg, kernels, shard, tp)
        self.moe_block = ResidualMoE(cfg, kernels, shard, tp, dense_rows)
        self.pre_attn_norm, self.post_attn_norm = RMSNorm(d, eps), RMSNorm(d, eps)
        self.pre_moe_norm, self.post_moe_norm = RMSNorm(d, eps), RMSNorm(d, eps)


class Grok2ForCausalLM(Grok1ForCausalLM):
    """Grok-1's step interface and loading, with the layers, output head and logits of Grok-2.
    Loads the release's names (``weights.tp_release``) as Grok-1 loads the SGLang-style ones."""

    ARCHITECTURE = "grok-2"
    config: Grok2Config

    def __init__(self, cfg: Grok1Config, dtype: torch.dtype = torch.bfloat16, weights_dtype: str = "auto",
                 kernels: Kernels | None = None, tp: TensorParallel | None = None) -> None:
        if not isinstance(cfg, Grok2Config):
            raise TypeError("Grok2ForCausalLM needs a Grok2Config")
        super().__init__(cfg, dtype, weights_dtype, kernels, tp)
        self.embedding_multiplier = float(cfg.embedding_multiplier_scale)
        self.final_softcap = float(cfg.final_logit_softcapping)
        self.output_scale = float(cfg.output_multiplier_scale)

    @property
    def dense_rows(self) -> range:
        """This rank's rows of the dense MLP's intermediate dimension."""
        cfg = self.config
        return even_part(cfg.dense_intermediate_size, self.tp.world_size, self.tp.rank, "intermediate_size")

    def make_layer(self, cfg: Grok1Config) -> DecoderLayer:
        assert isinstance(cfg, Grok2Config)
        return Grok2DecoderLayer(cfg, self.kernels, self.shard, self.tp, self.dense_rows)

    @classmethod
    def config_from(cls, cfg: dict[str, Any]) -> Grok2Config:
        return Grok2Config.from_dict(cfg)

    def _take(self, name: str, value: Any) -> torch.Tensor | QuantizedWeight | None:
        if self.tp.world_size > 1:
            if name == "lm_head.weight":
                return slice_weight(value, name, out=self.shard.vocab)
            m = _MLP_RE.match(name)
            if m:
                rows = self.dense_rows
                down = m.group(2) == "down"
                return slice_weight(value, name, out=None if down else rows, inp=rows if down else None)
        return super()._take(name, value)

    def _load_one(self, name: str, value: torch.Tensor | QuantizedWeight, device: torch.device) -> None:
        if name == "lm_head.weight":
            shape = (len(self.shard.vocab), self.config.hidden_size)
            self.lm_head = self._plain(name, value, shape).to(device, self.dtype)
            return
        m = _MLP_RE.match(name)
        if m:
            layer = self._layer(name, int(m.group(1)))
            assert isinstance(layer.moe_block, ResidualMoE)
            proj = getattr(layer.moe_block.mlp, f"{m.group(2)}_proj")
            proj.load(name, value, self.weights_dtype, device)
            return
        super()._load_one(name, value, device)

    def _missing(self, seen: set[str]) -> list[str]:
        missing = super()._missing(seen)
        if self.lm_head is None:
            missing.append("lm_head.weight")
        for i, layer in enumerate(self.decoder_layers):
            assert isinstance(layer.moe_block, ResidualMoE)
            for n in ("gate_proj", "up_proj", "down_proj"):
                if getattr(layer.moe_block.mlp, n).weight is None:
                    missing.append(f"model.layers.{i}.mlp.{n}.weight")
        return missing

    def finish_output_head(self) -> None:
        """The head is Grok-2's own ``lm_head`` (untied), loaded by ``_load_one``."""
        assert self.lm_head is not None, "lm_head.weight: _missing names it otherwise"

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``cap * tanh(output_multiplier * z / cap)`` in float32 over ``z = hidden @ lm_head^T``
        (the matmul in the activation dtype; sharded: this rank's vocabulary columns, gathered)."""
        z = (hidden.to(self.dtype) @ self.lm_head.t()).float()
        cap = self.final_softcap
        return self.tp.gather_logits(cap * torch.tanh(z * self.output_scale / cap), self.vocab_size)
