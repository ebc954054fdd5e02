"""Grok-1's mixture of experts as two grouped GEMMs over token slots sorted by expert.

The PyTorch twin (``kernels.moe.moe_forward``) counts each expert's tokens on the host
(``bincount(...).tolist()``), loops over the experts in Python and dequantises each chosen
expert's whole weights: a GPU waits for the host, runs ~10 launches per expert and reads the
weights three times (int8, then the bf16 copy written and read back), and the step cannot be
captured in a CUDA graph. Here:

1. the router runs as in the twin (``moe.route``: float32, Grok-2's soft cap, top-k not
   renormalised, ties to the lower index), and ``moe_align.schedule`` sorts the token slots by expert on the device;
2. ``_gate_up`` takes one block of ``BLOCK_M`` sorted slots (all the same expert) and one tile of
   the intermediate dimension, multiplies the gathered token rows by the gate and the up weights
   at once (two accumulators over the same ``x`` tiles) and writes ``gelu(g) * u`` per sorted row
   (Grok-1's tanh GELU, or Grok-2's exact one);
3. ``_down`` multiplies those rows by the expert's down weight, scales each by its router weight
   (cast to the activation dtype first, as the twin does) and writes it to its slot's row;
4. a sum over each token's ``top_k`` slot rows in float32 gives the output (slots routed to an
   expert held elsewhere stay zero), rounded once to ``out_dtype``.

The grid is fixed by the number of tokens (``moe_align.max_blocks``); blocks past the last expert
run return at once. Weights are read per tile in their stored form (``numerics.load_weight_tile``):
the release's int8 with bf16 scales per block of input rows (``bf16(bf16(q) * scale)``, bit-equal
to ``quant.GroupedInt8Weight.dequantize``), or plain ``[E, out, in]`` tensors. A rank of a
sharded model passes its own experts (``first_expert``) or its slice of each expert's intermediate
dimension; nothing here assumes full widths.

Numerics are the twin's: float32 accumulation; with bf16 activations the gate and up products,
the GELU, their product and the down product are each rounded to bf16 where the twin's bf16 ops
round them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from grokd.kernels import moe as _moe
from grokd.kernels.moe import ExpertWeights
from grokd.kernels.triton import moe_align, runtime
from grokd.kernels.triton.numerics import dot, gelu_erf, gelu_tanh, load_weight_tile, round_bf16


@triton.jit
def _gate_up(x_ptr, wg_ptr, wu_ptr, sg_ptr, su_ptr, h_ptr, slots_ptr, block_expert_ptr,
             K, N, num_slots, top_k, stride_xm,
             stride_we, stride_wk, stride_wn, stride_se, stride_sg, group_size, stride_hm,
             QUANT: tl.constexpr, ROUND_W: tl.constexpr, SCALE_ROW: tl.constexpr, ERF_GELU: tl.constexpr,
             ACT_BF16: tl.constexpr, LOW_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= 0:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        slot = tl.load(slots_ptr + rows)
        valid = slot < num_slots
        token = tl.where(valid, slot // top_k, 0)
        n_offs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        e = expert.to(tl.int64)
        wg = wg_ptr + e * stride_we
        wu = wu_ptr + e * stride_we
        sg = sg_ptr + e * stride_se
        su = su_ptr + e * stride_se
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_offs = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + token[:, None] * stride_xm + k_offs[None, :],
                        mask=valid[:, None] & (k_offs[None, :] < K), other=0).to(tl.float32)
            g_tile = load_weight_tile(wg, sg, k0, k_offs, n_offs, K, N, stride_wk, stride_wn, stride_sg, group_size,
                                      QUANT, ROUND_W, SCALE_ROW)
            acc_g = dot(x, g_tile, acc_g, LOW_DOT)
            u_tile = load_weight_tile(wu, su, k0, k_offs, n_offs, K, N, stride_wk, stride_wn, stride_sg, group_size,
                                      QUANT, ROUND_W, SCALE_ROW)
            acc_u = dot(x, u_tile, acc_u, LOW_DOT)
        if ACT_BF16:
            acc_g = round_bf16(acc_g)
            acc_u = round_bf16(acc_u)
        if ERF_GELU:
            g = gelu_erf(acc_g)
        else:
            g = gelu_tanh(acc_g)
        if ACT_BF16:
            g = round_bf16(g)
        h = g * acc_u
        if ACT_BF16:
            h = round_bf16(h)
        tl.store(h_ptr + rows[:, None].to(tl.int64) * stride_hm + n_offs[None, :], h.to(h_ptr.dtype.element_ty),
                 mask=n_offs[None, :] < N)


@triton.jit
def _down(h_ptr, w_ptr, s_ptr, gate_ptr, out_ptr, slots_ptr, block_expert_ptr,
          K, N, num_slots, stride_hm,
          stride_we, stride_wk, stride_wn, stride_se, stride_sg, group_size, stride_om,
          QUANT: tl.constexpr, ROUND_W: tl.constexpr, SCALE_ROW: tl.constexpr, ACT_BF16: tl.constexpr, LOW_DOT: tl.constexpr,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= 0:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        slot = tl.load(slots_ptr + rows)
        valid = slot < num_slots
        n_offs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        e = expert.to(tl.int64)
        w = w_ptr + e * stride_we
        s = s_ptr + e * stride_se
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k_offs = k0 + tl.arange(0, BLOCK_K)
            h = tl.load(h_ptr + rows[:, None].to(tl.int64) * stride_hm + k_offs[None, :],
                        mask=valid[:, None] & (k_offs[None, :] < K), other=0).to(tl.float32)
            w_tile = load_weight_tile(w, s, k0, k_offs, n_offs, K, N, stride_wk, stride_wn, stride_sg, group_size,
                                      QUANT, ROUND_W, SCALE_ROW)
            acc = dot(h, w_tile, acc, LOW_DOT)
        if ACT_BF16:
            acc = round_bf16(acc)
        gate = tl.load(gate_ptr + slot, mask=valid, other=0)
        y = acc * gate[:, None]
        tl.store(out_ptr + slot[:, None].to(tl.int64) * stride_om + n_offs[None, :], y,
                 mask=valid[:, None] & (n_offs[None, :] < N))


def _weight_args(w: ExpertWeights, act: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], bool, bool]:
    """``(values, scales, (stride_e, stride_k, stride_n, stride_se, stride_sg, group_size), quant,
    round_w)`` placing ``w`` for ``load_weight_tile`` in ``x @ W`` order."""
    if w.scales is None:  # plain [E, out, in]
        t = w.weight
        round_w = act == torch.bfloat16 and t.dtype != torch.bfloat16
        return t, t, (t.stride(0), t.stride(2), t.stride(1), 0, 0, 1), False, round_w
    q, s = w.weight.contiguous(), w.scales.contiguous()
    k, groups = q.shape[1], s.shape[1]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of the {groups} scale groups")
    return q, s, (q.stride(0), q.stride(1), q.stride(2), s.stride(0), s.stride(1), k // groups), True, False


def _blocks(num_tokens: int, num_experts: int, top_k: int, width: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K)``: rows per block sized to the tokens an expert gets on
    average (decode: the 16-row minimum ``tl.dot`` takes); wide tiles when interpreted
    (``runtime.interpreted_tile`` of the widest dimension)."""
    if runtime.INTERPRETED:
        tile = runtime.interpreted_tile(width)
        return 16, tile, tile
    per_expert = num_tokens * top_k // max(1, num_experts)
    return (16 if per_expert <= 16 else 32 if per_expert <= 32 else 64), 64, 128


def supports(x: torch.Tensor, *weights: ExpertWeights) -> bool:
    return x.dtype in runtime.ACTIVATION_DTYPES and all(
        w.weight.dim() == 3 and (w.scales is None or w.scales.dim() == 3) and runtime.loads_weights(w.weight)
        for w in weights)


def fused_moe(
    x: torch.Tensor,
    router_weight: torch.Tensor,
    w_gate: ExpertWeights,
    w_up: ExpertWeights,
    w_down: ExpertWeights,
    top_k: int,
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    first_expert: int = 0,
    out_dtype: torch.dtype | None = None,
    router_softcap: float | None = None,
) -> torch.Tensor:
    """``kernels.moe.moe_forward``'s contract: tanh-GELU experts (Grok-1, ``activation`` None) or
    exact-GELU ones (``F.gelu``, Grok-2, with its soft-capped router); another ``activation``, or a
    dtype the kernels do not compute in, takes the twin."""
    if activation not in (None, F.gelu) or not supports(x, w_gate, w_up, w_down):
        return _moe.moe_forward(x, router_weight, w_gate, w_up, w_down, top_k, activation, first_expert, out_dtype,
                                router_softcap)
    num_tokens, hidden = x.shape
    num_experts = w_gate.weight.shape[0]
    inter = w_gate.out_features
    out_features = w_down.out_features
    gates, idx = _moe.route(x, router_weight, top_k, router_softcap)
    x = x.contiguous()
    runtime.check_tensors(x, w_gate.weight, w_up.weight, w_down.weight)
    bm, bn, bk = _blocks(num_tokens, num_experts, top_k, max(hidden, inter))
    sched = moe_align.schedule(idx, num_experts, first_expert, bm)
    rows = sched.sorted_slots.shape[0]
    act_bf16 = x.dtype == torch.bfloat16
    low = runtime.low_precision_dot(x.dtype)

    g_vals, g_scales, g_str, quant, round_w = _weight_args(w_gate, x.dtype)
    u_vals, u_scales, u_str, u_quant, _ = _weight_args(w_up, x.dtype)
    if u_str != g_str or u_quant != quant:
        raise ValueError("gate and up weights must share one layout")
    h = torch.empty(rows, inter, dtype=x.dtype, device=x.device)
    _gate_up[(sched.num_blocks, triton.cdiv(inter, bn))](
        x, g_vals, u_vals, g_scales, u_scales, h, sched.sorted_slots, sched.block_expert,
        hidden, inter, sched.num_slots, top_k, x.stride(0), *g_str, h.stride(0),
        QUANT=quant, ROUND_W=round_w, SCALE_ROW=g_str[-1] % bk == 0, ERF_GELU=activation is F.gelu,
        ACT_BF16=act_bf16, LOW_DOT=low, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)

    d_vals, d_scales, d_str, d_quant, d_round = _weight_args(w_down, x.dtype)
    gate = gates.to(x.dtype).float().reshape(-1).contiguous()  # the twin casts the gates first
    slots_out = torch.zeros(sched.num_slots, out_features, dtype=torch.float32, device=x.device)
    _down[(sched.num_blocks, triton.cdiv(out_features, bn))](
        h, d_vals, d_scales, gate, slots_out, sched.sorted_slots, sched.block_expert,
        inter, out_features, sched.num_slots, h.stride(0), *d_str, slots_out.stride(0),
        QUANT=d_quant, ROUND_W=d_round, SCALE_ROW=d_str[-1] % bk == 0, ACT_BF16=act_bf16, LOW_DOT=low, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    out = slots_out.view(num_tokens, top_k, out_features).sum(dim=1)
    return out.to(out_dtype or x.dtype)
