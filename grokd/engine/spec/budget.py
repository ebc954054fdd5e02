"""How many drafted tokens each sequence may verify in one step.

Verification rows are not free: on the CPU the projections stream every weight once per tile of 8
rows (``kernels/csrc/linear.c``), so a batch-1 step with a 4-token draft (5 rows) costs about 1.4
times a plain one, while 8 streams with 4 drafts each (40 rows, 5 tiles) cost 1.7 times, which
ate the whole gain of a 63% acceptance rate (benchmarks/RESULTS.md#speculative-decoding). A step
therefore verifies at most ``max_draft_tokens_per_step`` drafted tokens, shared out evenly: each
proposal gets up to ``budget // proposals`` tokens (at least one while the budget lasts, in the
order given: best acceptance first), then what short drafts left over goes to the longer ones.
"""

from __future__ import annotations


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
