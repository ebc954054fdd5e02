"""How many drafted tokens each sequence verifies in one step: the step's expected tokens per
second, maximised.

A sequence whose drafted positions are each accepted with probability ``p`` (its recent record,
``DraftStats.position_rate``) gains ``p ** j`` expected tokens from its ``j``-th drafted token
(all of the first ``j`` must be accepted). A step of ``plain`` decode rows emits ``plain`` tokens;
adding the ``d`` best drafted tokens over the batch (highest gain first, which keeps every
sequence's grant a prefix of its draft) makes it emit ``plain + G(d)`` expected tokens in
``cost(plain + d)`` seconds (``spec.cost``). The plan takes the ``d`` (at most ``cap``, ``0``
included: the plain step) with the highest ratio, and drafts only where that beats the plain step
by ``margin`` (5%): the costs are learnt from noisy step times, and a plan that only breaks even
on paper is not worth its risk. At batch 1 on the CPU a well-accepted 4-token
draft pays for its rows several times over; at 8 streams the extra rows cost as much as a second
step and only drafts that are nearly sure to pass are worth them; on a GPU rows are almost free and
drafts get their full length.

``share_draft_budget`` is the plan without a cost model (``plan_by_step_cost = false``): every
proposal keeps its draft while ``cap`` lasts, shared out evenly, best acceptance first.
"""

from __future__ import annotations

from collections.abc import Callable


def plan_drafts(plain: int, proposals: list[tuple[float, int]], cost: Callable[[int], float], cap: int,
                margin: float = 0.05) -> list[int]:
    """Tokens granted to each ``(position acceptance rate, draft length)`` of ``proposals`` in a
    step of ``plain`` decode rows, at most ``cap`` in all."""
    gains = sorted(
        ((rate**j, i) for i, (rate, length) in enumerate(proposals) for j in range(1, length + 1)),
        key=lambda g: -g[0],
    )[: max(0, cap)]
    best_d, best = 0, (1.0 + margin) * plain / cost(plain)
    expected = float(plain)
    for d, (gain, _) in enumerate(gains, start=1):
        expected += gain
        value = expected / cost(plain + d)
        if value > best:
            best_d, best = d, value
    granted = [0] * len(proposals)
    for _, i in gains[:best_d]:
        granted[i] += 1
    return granted


def share_draft_budget(lengths: list[int], budget: int) -> list[int]:
    """Tokens granted to each proposal of ``lengths`` tokens (in priority order), summing to at
    most ``budget``."""
    if not lengths:
        return []
    granted = [0] * len(lengths)
    share = max(1, budget // len(lengths))
    left = budget
    for i, n in enumerate(lengths):
        take = min(n, share, left)
        granted[i], left = take, left - take
    for i, n in enumerate(lengths):
        if left <= 0:
            break
        extra = min(n - granted[i], left)
        granted[i] += extra
        left -= extra
    return granted
