"""Grouped MoE reference vs a dense naive loop over tokens (all experts computed, then picked)."""

import torch
import torch.nn.functional as F

from grokd.kernels.moe import ExpertWeights, moe_forward, route
from grokd.kernels.quant import GroupedInt8Weight


def _naive(x, router, wg, wv, w1, k):
    """wg/wv/w1: [E, in, out] effective weights; per token, every expert, then top-k by gate."""
    out = torch.zeros_like(x)
    probs = torch.softmax(x.float() @ router.float().t(), -1)
    for t in range(x.shape[0]):
        ys = [(F.gelu(x[t] @ wg[e], approximate="tanh") * (x[t] @ wv[e])) @ w1[e] for e in range(router.shape[0])]
        order = sorted(range(len(ys)), key=lambda e: (-probs[t, e].item(), e))[:k]
        out[t] = sum(probs[t, e] * ys[e] for e in order)
    return out


def test_moe_plain_and_int8_match_naive(device):
    torch.manual_seed(0)
    t, d, f, e, k = 11, 16, 24, 8, 2
    x = torch.randn(t, d)
    router = torch.randn(e, d)
    q = {n: torch.randint(-127, 128, s, dtype=torch.int8) for n, s in
         (("g", (e, d, f)), ("v", (e, d, f)), ("1", (e, f, d)))}
    sc = {"g": torch.rand(e, 1, f) * 0.02, "v": torch.rand(e, 1, f) * 0.02, "1": torch.rand(e, 8, d) * 0.02}
    sc = {n: s.to(torch.bfloat16) for n, s in sc.items()}
    eff = {n: GroupedInt8Weight(q[n], sc[n]).dequantize().float() for n in q}
    ref = _naive(x, router, eff["g"], eff["v"], eff["1"], k)
    xd, rd = x.to(device), router.to(device)
    int8 = moe_forward(xd, rd, *(ExpertWeights(q[n].to(device), sc[n].to(device)) for n in ("g", "v", "1")),
                       top_k=k).cpu()
    plain = moe_forward(xd, rd, *(ExpertWeights(eff[n].transpose(1, 2).contiguous().to(device))
                                  for n in ("g", "v", "1")), top_k=k).cpu()
    torch.testing.assert_close(int8, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, ref, rtol=1e-5, atol=1e-5)
    assert moe_forward(x.bfloat16(), router, *(ExpertWeights(q[n], sc[n]) for n in ("g", "v", "1")),
                       top_k=k).dtype == torch.bfloat16


def test_route_ties_prefer_lower_index_and_not_renormalised():
    x = torch.ones(1, 4)
    router = torch.zeros(4, 4)
    router[3] = 1.0
    gates, idx = route(x, router, 2)
    assert idx.tolist() == [[3, 0]]
    assert gates.sum() < 1
