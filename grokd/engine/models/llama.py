"""Llama-family decoder (Llama 2/3, SmolLM2, ...) on the shared paged-attention step interface.

Pre-norm blocks: ``x + attn(rmsnorm(x))`` then ``x + mlp(rmsnorm(x))``; SwiGLU MLP; RoPE in the
Hugging Face half-split ("rotate_half") layout with base ``rope_theta``; grouped-query attention;
optionally tied input/output embeddings. Q/K/V and gate/up projections are fused into one matmul
each, since at small batch sizes the step cost is dominated by the number of kernel launches.

Sharded over ``TensorParallel`` ranks the cuts are Grok-1's (``engine.parallel.shard``): each rank
holds its query heads and the KV heads they read (fused q/k/v rows), the o-projection's columns of
those heads, its slice of the MLP's intermediate dimension (gate/up rows, down columns) and its
vocabulary rows of the embedding and output head; the o- and down-projections' partial sums and
the embedding lookup are reduced across ranks, the logits gathered. The fused per-layer and
whole-stack CPU kernels run one rank only (they have no place for the reduction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from grokd.engine.parallel.shard import ModelShard, TensorParallel, head_rows, slice_weight, vocab_rows
from grokd.kernels.dispatch import Kernels, select_kernels
from grokd.kernels.dtypes import DTYPES
from grokd.kernels.types import AttentionMetadata, DenseLayerWeights, PackedWeight
from grokd.weights.checkpoint import Checkpoint, QuantizedWeight
from grokd.weights.lazy import LazyQuantized, LazyTensor

# Name the GGUF reader gives llama.cpp's ``rope_freqs.weight`` (not an HF tensor).
ROPE_FREQS_NAME = "model.rope_freqs"

class RMSNorm(nn.Module):
    """``weight * x / rms(x)``, normalised in float32 and cast back before the weight (as HF);
    ``kernels.norm`` holds the reference and the CPU kernel."""

    def __init__(self, dim: int, eps: float, dtype: torch.dtype, kernels: Kernels) -> None:
        super().__init__()
        self.eps = eps
        self.kernels = kernels
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.rms_norm(x, self.weight, self.eps)


def rope_settings(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """``(theta, scaling)`` from either config style: transformers 4 (``rope_theta`` +
    ``rope_scaling``) or transformers 5 (``rope_parameters``). ``scaling`` is None for plain RoPE."""
    params = dict(config.get("rope_parameters") or {})
    theta = config.get("rope_theta") or params.get("rope_theta") or 10000.0
    scaling = config.get("rope_scaling") or params
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    return float(theta), (None if kind in (None, "default") else {**scaling, "rope_type": kind})


def _scaled_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any] | None, head_dim: int) -> torch.Tensor:
    if scaling is None:
        return inv_freq
    kind, factor = scaling["rope_type"], float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":  # Llama 3.1: slow wavelengths stretched, fast ones kept, smooth between
        old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        wavelen = 2 * math.pi / inv_freq
        smooth = ((old_ctx / wavelen - low) / (high - low)).clamp(0.0, 1.0)
        return (1 - smooth) * inv_freq / factor + smooth * inv_freq
    raise NotImplementedError(f"rope scaling {kind!r} is not supported by the llama model")


class RotaryEmbedding(nn.Module):
    """cos/sin tables indexed by absolute position, computed in float32 like HF's RoPE."""

    cos: torch.Tensor  # [max_positions, head_dim] buffers (set_inv_freq)
    sin: torch.Tensor

    def __init__(
        self, head_dim: int, base: float, max_positions: int, scaling: dict[str, Any] | None
    ) -> None:
        super().__init__()
        self.max_positions = max_positions
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.set_inv_freq(_scaled_inv_freq(inv_freq, scaling, head_dim))

    def set_inv_freq(self, inv_freq: torch.Tensor) -> None:
        """(Re)build the tables, e.g. after a GGUF's ``rope_freqs`` factors are applied."""
        self.inv_freq = inv_freq.float()
        freqs = torch.arange(self.max_positions, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        device = getattr(self, "cos", emb).device
        self.register_buffer("cos", emb.cos().to(device), persistent=False)
        self.register_buffer("sin", emb.sin().to(device), persistent=False)
        self._rounded: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin) [T, 1, head_dim]`` at ``positions`` in ``dtype``: built once per step and
        shared by every layer. Rounded to the activation dtype before use, as HF does: the whole
        tables once per dtype and device, so that a step only indexes them."""
        key = (dtype, self.cos.device)
        if key not in self._rounded:
            self._rounded[key] = (self.cos.to(dtype), self.sin.to(dtype))
        cos, sin = self._rounded[key]
        return cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: dict[str, Any], dtype: torch.dtype, kernels: Kernels, shard: ModelShard,
                 tp: TensorParallel) -> None:
        super().__init__()
        self.kernels = kernels
        self.tp = tp
        hidden = cfg["hidden_size"]
        self.num_heads = len(shard.q_heads)
        self.num_kv_heads = len(shard.kv_heads)
        self.head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        qkv_out = self.q_size + 2 * self.kv_size
        self.qkv_weight = nn.Parameter(torch.empty(qkv_out, hidden, dtype=dtype), requires_grad=False)
        self.qkv_bias: nn.Parameter | None = None
        if cfg.get("attention_bias"):
            self.qkv_bias = nn.Parameter(torch.zeros(qkv_out, dtype=dtype), requires_grad=False)
        self.o_weight = nn.Parameter(torch.empty(hidden, self.q_size, dtype=dtype), requires_grad=False)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        qkv = self.kernels.linear(x, self.qkv_weight)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias.to(qkv.dtype)
        q = self.kernels.rope_write_kv(qkv, self.num_heads, self.num_kv_heads, *rope, kv_cache, meta)
        out = self.kernels.attention(q, kv_cache, meta, scale=self.scale, softcap=None)
        return self.tp.reduce(self.kernels.linear(out.reshape(x.shape[0], self.q_size), self.o_weight), x.dtype)


class LlamaMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))`` with gate and up fused (``intermediate``: this
    rank's slice)."""

    def __init__(self, hidden: int, intermediate: int, dtype: torch.dtype, kernels: Kernels,
                 tp: TensorParallel) -> None:
        super().__init__()
        self.kernels = kernels
        self.tp = tp
        self.intermediate = intermediate
        self.gate_up_weight = nn.Parameter(
            torch.empty(2 * intermediate, hidden, dtype=dtype), requires_grad=False
        )
        self.down_weight = nn.Parameter(torch.empty(hidden, intermediate, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.kernels.linear(x, self.gate_up_weight).split(self.intermediate, dim=-1)
        return self.tp.reduce(self.kernels.linear(F.silu(gate).mul_(up), self.down_weight), x.dtype)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], dtype: torch.dtype, kernels: Kernels, shard: ModelShard,
                 tp: TensorParallel) -> None:
        super().__init__()
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.kernels = kernels
        self.fusable = tp.world_size == 1
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps, dtype, kernels)
        self.self_attn = LlamaAttention(cfg, dtype, kernels, shard, tp)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps, dtype, kernels)
        self.mlp = LlamaMLP(cfg["hidden_size"], len(shard.ffn), dtype, kernels, tp)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        if self.kernels.decoder_layer is not None and self.fusable and self.self_attn.qkv_bias is None:
            fused = self.kernels.decoder_layer(self.fused_weights(), x, *rope, kv_cache, meta)
            if fused is not None:
                return fused
        x = x + self.self_attn(self.input_layernorm(x), rope, kv_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))

    def fused_weights(self) -> DenseLayerWeights:
        """This layer's weights as ``Kernels.decoder_layer`` reads them."""
        attn, mlp = self.self_attn, self.mlp
        return DenseLayerWeights(
            self.input_layernorm.weight, self.post_attention_layernorm.weight, attn.qkv_weight, attn.o_weight,
            mlp.gate_up_weight, mlp.down_weight, attn.num_heads, attn.num_kv_heads, attn.head_dim,
            mlp.intermediate, self.input_layernorm.eps, attn.scale)


class LlamaForCausalLM(nn.Module):
    """The whole model. ``forward`` returns final-norm hidden states; ``compute_logits`` projects.
    With ``tp`` over several ranks this is one rank's shard (the module docstring)."""

    # forward never reads device values on the host, so decode steps can be captured as CUDA graphs
    supports_cuda_graphs = True

    def __init__(
        self, config: dict[str, Any], dtype: torch.dtype = torch.float32, kernels: Kernels | None = None,
        tp: TensorParallel | None = None,
    ) -> None:
        super().__init__()
        kernels = kernels or select_kernels("cpu")
        self.config = dict(config)
        self.dtype = dtype
        self.num_layers = int(config["num_hidden_layers"])
        num_heads = int(config["num_attention_heads"])
        self.head_dim = int(config.get("head_dim") or config["hidden_size"] // num_heads)
        self.hidden_size = int(config["hidden_size"])
        self.vocab_size = int(config["vocab_size"])
        self.tp = tp = tp or TensorParallel()
        self.shard = shard = ModelShard.build(
            rank=tp.rank, world_size=tp.world_size, num_q_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            intermediate_size=int(config["intermediate_size"]), vocab_size=self.vocab_size)
        self.num_heads = len(shard.q_heads)  # this rank's
        self.num_kv_heads = len(shard.kv_heads)
        self.max_position_embeddings = int(config.get("max_position_embeddings", 2048))
        self.tie_word_embeddings = bool(config.get("tie_word_embeddings", False))
        if config.get("mlp_bias"):
            raise NotImplementedError("llama: mlp_bias=True checkpoints are not supported")
        theta, scaling = rope_settings(config)
        rope = RotaryEmbedding(self.head_dim, theta, self.max_position_embeddings, scaling)
        rows = len(shard.vocab)
        self.embed_tokens = nn.Parameter(torch.empty(rows, self.hidden_size, dtype=dtype), requires_grad=False)
        # registered as a ModuleList (parameters, .to()); read through the typed list
        self.decoder_layers = [LlamaDecoderLayer(self.config, dtype, kernels, shard, tp)
                               for _ in range(self.num_layers)]
        self.layers = nn.ModuleList(self.decoder_layers)
        self.norm = RMSNorm(self.hidden_size, float(config.get("rms_norm_eps", 1e-6)), dtype, kernels)
        self.lm_head: nn.Parameter | None = None
        if not self.tie_word_embeddings:
            self.lm_head = nn.Parameter(torch.empty(rows, self.hidden_size, dtype=dtype), requires_grad=False)
        self.rope = rope
        self.kernels = kernels
        # the output head in its packed form (``pack_weights``); not a parameter, so weight
        # accounting still counts a shared embedding table once
        self.output_weight: torch.Tensor | PackedWeight | None = None
        # every layer as one kernel call per decode step (``Kernels.decoder_stack``), built by
        # ``pack_weights`` when the packed weights allow it
        self.decoder_stack: Callable | None = None

    # ---- step interface -------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        if self.tp.world_size == 1:
            x = F.embedding(input_ids, self.embed_tokens).to(self.dtype)
        else:
            x = self.tp.reduce(vocab_rows(self.embed_tokens, input_ids, self.shard.vocab), self.dtype)
        rope = self.rope.tables(positions, self.dtype)
        done = 0
        if self.decoder_stack is not None and self.kernels.decoder_stack is not None:
            ran = self.decoder_stack(x, *rope, kv_caches, meta)
            if ran is not None and ran.normed is not None:
                return ran.normed
            if ran is not None:
                x, done = ran.hidden, ran.done
        for layer, kv_cache in zip(self.decoder_layers[done:], kv_caches[done:], strict=True):
            x = layer(x, rope, kv_cache, meta)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.output_weight
        if weight is None:
            weight = self.embed_tokens if self.lm_head is None else self.lm_head
        return self.tp.gather_logits(self.kernels.linear(hidden, weight).float(), self.vocab_size)

    def pack_weights(self, int8: bool = False) -> None:
        """Put every projection once into the form the kernels run fastest on this device
        (``Kernels.weight_packer``: the C kernels' panels or oneDNN's blocked layout for bf16 on
        CPU, a no-op elsewhere), or weight-only int8 when ``int8``. The output
        head moves to ``output_weight``: a copy when it is tied to the embedding table (which the
        embedding lookup still reads densely), a replacement when untied. Packed weights (every
        form but a plain tensor) leave ``parameters()``."""
        # one packer for the model: the packed weights share huge pages, in the order a step reads them
        pack = self.kernels.weight_packer(int8=int8, dtype=self.dtype)
        for layer in self.decoder_layers:
            for module, name in (
                (layer.self_attn, "qkv_weight"),
                (layer.self_attn, "o_weight"),
                (layer.mlp, "gate_up_weight"),
                (layer.mlp, "down_weight"),
            ):
                weight = getattr(module, name)
                packed = pack(weight)
                if isinstance(packed, torch.Tensor):  # left dense: still a parameter
                    setattr(module, name, nn.Parameter(packed, requires_grad=False))
                else:  # packed forms: plain attributes, outside parameters()
                    delattr(module, name)
                    setattr(module, name, packed)
        head = self.embed_tokens if self.lm_head is None else self.lm_head
        packed = pack(head)
        if packed is not head:
            self.output_weight = packed
            self.lm_head = None  # an untied dense head is no longer read: free it
        self.decoder_stack = None
        if (self.kernels.decoder_stack is not None and self.tp.world_size == 1
                and all(layer.self_attn.qkv_bias is None for layer in self.decoder_layers)):
            self.decoder_stack = self.kernels.decoder_stack([layer.fused_weights() for layer in self.decoder_layers],
                                                            self.norm.weight, self.norm.eps)

    # ---- loading --------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint,
        dtype: torch.dtype = torch.float32,
        weights_dtype: str = "auto",
        device: torch.device | str = "cpu",
        tp: TensorParallel | None = None,
        kernel_backend: str = "auto",
    ) -> LlamaForCausalLM:
        """Build on ``meta``-free CPU memory, load ``ckpt.tensors()``, move to ``device``. A rank of
        a sharded model reads only its slices where the format allows it (``lazy_tensors``:
        safetensors); from a GGUF each tensor is read whole, one at a time, and cut.

        ``weights_dtype`` ``auto`` stores weights in ``dtype``; ``float32``/``bfloat16``/``float16``
        store the large matrices in that dtype (activations stay in ``dtype``); ``int8`` quantises
        the projections and output head to weight-only int8 with per-row scales.
        """
        if weights_dtype in ("auto", "int8"):
            wdtype = dtype
        elif weights_dtype in DTYPES:
            wdtype = DTYPES[weights_dtype]
        else:
            raise ValueError(f"unsupported weights_dtype {weights_dtype!r} for llama (auto, int8, "
                             f"{', '.join(DTYPES)}; fp8 is for the Grok models)")
        model = cls(ckpt.config, dtype=dtype, kernels=select_kernels(device, kernel_backend), tp=tp)
        lazy = model.tp.world_size > 1 and ckpt.lazy_tensors is not None
        model.load_weights(ckpt.lazy_tensors() if lazy and ckpt.lazy_tensors else ckpt.tensors(), weights_dtype=wdtype)
        model = model.to(device).eval()
        model.pack_weights(int8=weights_dtype == "int8")
        return model

    def load_weights(
        self,
        named_tensors: Iterable[tuple[str, torch.Tensor | QuantizedWeight]],
        weights_dtype: torch.dtype | None = None,
    ) -> None:
        """Consume HF-named tensors (or lazy views of them), each cut to this rank's shard; q/k/v
        and gate/up are copied into their fused slices."""
        wdtype = weights_dtype or self.dtype
        seen: set[str] = set()
        for name, value in named_tensors:
            tensor = self._take(name, value)
            if isinstance(tensor, QuantizedWeight):
                raise TypeError(f"{name}: int8 release weights are not supported by the llama model")
            if "rotary_emb" in name or (name == "lm_head.weight" and self.lm_head is None):
                continue  # derived buffers; a tied checkpoint's redundant copy of the embedding
            if name == ROPE_FREQS_NAME:  # llama.cpp's per-frequency divisors (Llama 3.1 GGUFs)
                self.rope.set_inv_freq(self.rope.inv_freq / tensor.float().reshape(-1))
                continue
            target, rows, big = self._target(name)
            if target is None:
                raise KeyError(f"unexpected tensor {name!r} for LlamaForCausalLM")
            if big and target.dtype != wdtype:
                target.data = target.data.to(wdtype)
            dst = target.data if rows is None else target.data[rows[0] : rows[1]]
            if tuple(dst.shape) != tuple(tensor.shape):
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} != expected {tuple(dst.shape)}")
            dst.copy_(tensor)  # casts in place: no temporary full-size copy
            seen.add(name)
        missing = [n for n in self._expected_names() if n not in seen]
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")

    def _take(self, name: str, value: Any) -> Any:
        """This rank's part of tensor ``name``, read (a lazy view reads just that part)."""
        sh, hd = self.shard, self.head_dim
        if sh.world_size > 1:
            suffix = name.rsplit(".", 2)
            proj, kind = (suffix[-2], suffix[-1]) if len(suffix) == 3 else ("", "")
            out: range | None = None
            inp: range | None = None
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                out = sh.vocab
            elif proj in ("q_proj", "k_proj", "v_proj"):
                out = head_rows(sh.q_heads if proj == "q_proj" else sh.kv_heads, hd)
            elif proj == "o_proj":
                inp = head_rows(sh.q_heads, hd)
            elif proj in ("gate_proj", "up_proj"):
                out = sh.ffn
            elif proj == "down_proj":
                inp = sh.ffn
            if out is not None and kind == "bias":
                value = value[out.start:out.stop]
            elif out is not None or inp is not None:
                value = slice_weight(value, name, out=out, inp=inp)
        if isinstance(value, LazyTensor):
            return value[()]
        if isinstance(value, LazyQuantized):
            return QuantizedWeight(value.weight[()], value.scales[()])
        return value

    def _expected_names(self) -> list[str]:
        names = ["model.embed_tokens.weight", "model.norm.weight"]
        if self.lm_head is not None:
            names.append("lm_head.weight")
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            names += [
                p + s
                for s in (
                    "input_layernorm.weight",
                    "post_attention_layernorm.weight",
                    "self_attn.q_proj.weight",
                    "self_attn.k_proj.weight",
                    "self_attn.v_proj.weight",
                    "self_attn.o_proj.weight",
                    "mlp.gate_proj.weight",
                    "mlp.up_proj.weight",
                    "mlp.down_proj.weight",
                )
            ]
        return names

    def _target(self, name: str) -> tuple[nn.Parameter | None, tuple[int, int] | None, bool]:
        """(parameter, row slice or None, is a large matrix) for an HF tensor name."""
        if name == "model.embed_tokens.weight":
            return self.embed_tokens, None, True
        if name == "model.norm.weight":
            return self.norm.weight, None, False
        if name == "lm_head.weight":
            return self.lm_head, None, True
        parts = name.split(".")
        if len(parts) < 5 or parts[0] != "model" or parts[1] != "layers":
            return None, None, False
        layer = self.decoder_layers[int(parts[2])]
        suffix = ".".join(parts[3:])
        attn, mlp = layer.self_attn, layer.mlp
        q, kv, inter = attn.q_size, attn.kv_size, mlp.intermediate
        table: dict[str, tuple[nn.Parameter | None, tuple[int, int] | None, bool]] = {
            "input_layernorm.weight": (layer.input_layernorm.weight, None, False),
            "post_attention_layernorm.weight": (layer.post_attention_layernorm.weight, None, False),
            "self_attn.q_proj.weight": (attn.qkv_weight, (0, q), True),
            "self_attn.k_proj.weight": (attn.qkv_weight, (q, q + kv), True),
            "self_attn.v_proj.weight": (attn.qkv_weight, (q + kv, q + 2 * kv), True),
            "self_attn.q_proj.bias": (attn.qkv_bias, (0, q), False),
            "self_attn.k_proj.bias": (attn.qkv_bias, (q, q + kv), False),
            "self_attn.v_proj.bias": (attn.qkv_bias, (q + kv, q + 2 * kv), False),
            "self_attn.o_proj.weight": (attn.o_weight, None, True),
            "mlp.gate_proj.weight": (mlp.gate_up_weight, (0, inter), True),
            "mlp.up_proj.weight": (mlp.gate_up_weight, (inter, 2 * inter), True),
            "mlp.down_proj.weight": (mlp.down_weight, None, True),
        }
        return table.get(suffix, (None, None, False))
