"""Verification of one drafted token against the target model's distribution.

Sampled requests use speculative rejection sampling (Leviathan et al., Chen et al.): with the
target's probabilities ``p`` (after the request's logits processors: temperature, top-p,
penalties, the grammar mask) and the drafter's ``q``, the draft ``x`` is accepted with
probability ``min(1, p(x) / q(x))``; on rejection the token is drawn from the normalised residual
``max(p - q, 0)``. The emitted token then follows ``p`` exactly, whatever ``q`` is. A proposer
without a distribution (prompt lookup) is a point mass, ``q = 1`` at ``x``: accept with
probability ``p(x)``, else draw from ``p`` with ``x`` removed. A token the grammar forbids has
``p(x) = 0`` and is always rejected.

Greedy requests accept the draft iff it is the argmax, so their output is the non-speculative one.
Draws come from the request's own generator when it is seeded, so a seeded request repeats run to
run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Verdict:
    token_id: int  # the draft when accepted, else the replacement drawn from the residual
    accepted: bool


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from ``probs [V]`` (need not be normalised)."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def verify_sampled(
    probs: torch.Tensor, draft: int, generator: torch.Generator | None, draft_probs: torch.Tensor | None = None
) -> Verdict:
    """Accept or replace ``draft`` against the target's ``probs [V]`` (a distribution); the
    drafter's ``draft_probs [V]`` (``None``: a point mass on ``draft``)."""
    p = float(probs[draft])
    q = 1.0 if draft_probs is None else float(draft_probs[draft])
    u = float(torch.rand((), generator=generator, device=probs.device))
    if q > 0.0 and u * q < p:  # u < min(1, p / q), with u in [0, 1)
        return Verdict(draft, True)
    if draft_probs is None:
        residual = probs.clone()
        residual[draft] = 0.0
    else:
        residual = (probs - draft_probs).clamp_(min=0.0)
    if float(residual.sum()) <= 0.0:  # p == q up to rounding: the draft is all there is
        return Verdict(draft, True)
    return Verdict(sample(residual, generator), False)
