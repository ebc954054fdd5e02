"""Prompt-lookup drafting (vLLM's ``ngram`` method, llama.cpp's ``--lookup``).

Input-grounded output (an edit of the prompt, an answer quoting its sources, JSON repeating keys)
mostly repeats spans of the context. The proposer takes the sequence's last ``n`` tokens, for
``n`` from ``max_n`` down to ``min_n``, finds their most recent earlier occurrence in the
sequence, and proposes the tokens that followed it.

Mechanism: the token ids are laid out as 4-byte integers and searched with ``bytes.rfind`` (C's
substring search, no Python loop over positions); a hit at an offset that is not a multiple of 4
straddles two tokens and the search continues to the left of it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

_WIDTH = array("i").itemsize


class NgramProposer:
    """Drafts of up to ``num_tokens`` tokens from the sequence's own history."""

    def __init__(self, num_tokens: int, min_n: int, max_n: int) -> None:
        if num_tokens < 1 or not 1 <= min_n <= max_n:
            raise ValueError(f"ngram proposer: need num_tokens >= 1 and 1 <= min_n <= max_n, "
                             f"got {num_tokens}, {min_n}, {max_n}")
        self.num_tokens = num_tokens
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, token_ids: Sequence[int], limit: int | None = None) -> list[int]:
        """The draft continuing ``token_ids`` (at most ``limit`` tokens), or ``[]`` when no suffix
        of ``min_n`` tokens or more occurred earlier."""
        k = self.num_tokens if limit is None else min(self.num_tokens, limit)
        length = len(token_ids)
        if k <= 0 or length <= self.min_n:
            return []
        data = array("i", token_ids).tobytes()
        # an occurrence must end before the last token, so at least one token follows it
        haystack_end = (length - 1) * _WIDTH
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            needle = data[(length - n) * _WIDTH :]
            end = haystack_end
            while (at := data.rfind(needle, 0, end)) >= 0:
                if at % _WIDTH == 0:
                    follow = at // _WIDTH + n
                    return list(token_ids[follow : follow + k])
                end = at + len(needle) - 1
        return []

    def propose_batch(self, histories: Sequence[Sequence[int]], limits: Sequence[int]) -> list[list[int]]:
        return [self.propose(h, n) for h, n in zip(histories, limits, strict=True)]
