"""Grok-1 mixture-of-experts, PyTorch reference: route in fp32, run only the selected experts.

Router: ``softmax(float32(x) @ W_r)`` over all experts, top-k gates NOT renormalised, ties go to
the lower expert index (as ``jax.lax.top_k``). Expert: ``linear_1(gelu_tanh(x @ W_g) * (x @ W_v))``.
Output: ``sum_j cast(g_j) * y_j``, gates cast to the activation dtype first (GROK1.md §2.5).
Tokens are grouped by expert so each expert runs one batched matmul over its tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grokd.kernels.quant import GroupedInt8Weight


@dataclass
class ExpertWeights:
    """Stacked weights of one projection for all experts.

    Plain: ``weight [E, out, in]`` (torch layout), ``scales`` None. int8: ``weight [E, in, out]``
    int8 with ``scales [E, G, out]`` bf16, each expert a ``quant.GroupedInt8Weight`` (release layout).
    """

    weight: torch.Tensor
    scales: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.weight.shape[1] if self.scales is None else self.weight.shape[2]

    def apply(self, x: torch.Tensor, e: int) -> torch.Tensor:
        if self.scales is None:
            return F.linear(x, self.weight[e].to(x.dtype))
        return GroupedInt8Weight(self.weight[e], self.scales[e]).linear(x)


def route(x: torch.Tensor, router_weight: torch.Tensor, top_k: int,
          softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates ``[T, k]`` (fp32, not renormalised) and expert ids ``[T, k]``; ``router_weight [E, D]``.
    ``softcap`` (Grok-2: 30) caps the fp32 logits as ``softcap * tanh(l / softcap)`` first."""
    logits = x.float() @ router_weight.float().t()
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    probs = torch.softmax(logits, dim=-1)
    # stable descending sort keeps the lower index first among equal probabilities
    gates, idx = torch.sort(probs, dim=-1, descending=True, stable=True)
    return gates[:, :top_k], idx[:, :top_k]


def moe_forward(
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
    """MoE output for ``x [T, D]`` in ``x``'s dtype, computing only the experts tokens chose.

    For one rank of a sharded model: the weights may hold experts ``first_expert ..
    first_expert + E_local - 1`` only (the router still scores all of them, and tokens routed
    elsewhere contribute nothing here), or a slice of every expert's intermediate dimension (the
    down projection then yields a partial sum). ``out_dtype=torch.float32`` returns the gated sum
    unrounded, for the cross-rank sum to round once. ``activation`` defaults to Grok-1's tanh
    GELU; ``router_softcap`` is ``route``'s."""
    act = activation or (lambda t: F.gelu(t, approximate="tanh"))
    gates, idx = route(x, router_weight, top_k, router_softcap)
    held = range(first_expert, first_expert + w_gate.weight.shape[0])
    gates = gates.to(x.dtype)
    flat_idx = idx.reshape(-1)
    order = torch.argsort(flat_idx, stable=True)
    counts = torch.bincount(flat_idx, minlength=router_weight.shape[0]).tolist()
    token_of = order // top_k
    gate_of = gates.reshape(-1)[order]
    out = torch.zeros(x.shape[0], w_down.out_features, dtype=torch.float32, device=x.device)
    start = 0
    for e, n in enumerate(counts):
        if n == 0 or e not in held:
            start += n
            continue
        tok = token_of[start : start + n]
        xe = x[tok]
        local = e - first_expert
        h = act(w_gate.apply(xe, local)) * w_up.apply(xe, local)
        y = w_down.apply(h, local)
        out.index_add_(0, tok, gate_of[start : start + n, None].float() * y.float())
        start += n
    return out.to(out_dtype or x.dtype)
