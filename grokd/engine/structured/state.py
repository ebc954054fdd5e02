"""Per-sequence grammar state: the next-token mask, token acceptance, termination.

Implements the engine's ``StructuredState`` seam (``engine.logits_processors``). Besides the
grammar mask it keeps a *token budget*: near ``max_tokens`` it steers the sequence onto a short
completion of the grammar, so even noise (a random-weight model) ends in a document that parses
instead of being cut off mid-string. Near the end, each step simulates a greedy "closing path" on
a copy of the matcher (prefer ``"``/``}``/``]``, then short values); once the path plus a safety
margin no longer fits in the remaining budget, the path's tokens are forced one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llguidance as llg
import numpy as np
import torch


def _unpack(words: np.ndarray, vocab_size: int) -> np.ndarray:
    """uint8 view of little-endian int32 mask words -> bool ``[..., vocab_size]`` (zero-padded)."""
    bits = np.unpackbits(words, axis=-1, bitorder="little")
    n = bits.shape[-1]
    if n >= vocab_size:
        bits = bits[..., :vocab_size]
    else:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], vocab_size - n), dtype=np.uint8)], axis=-1)
    return bits.view(np.bool_)


def bitmask_to_bool(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[..., ceil(n/32)]`` int32 llguidance bitmask -> ``[..., vocab_size]`` bool tensor.

    numpy's single-threaded ``unpackbits`` (~10 µs for 131k ids) instead of torch bit ops, which
    are slower and contend for intra-op threads with the model on a busy CPU."""
    return torch.from_numpy(_unpack(bitmask.contiguous().numpy().view(np.uint8), vocab_size))


@dataclass(frozen=True)
class TokenizerInfo:
    """What states need about the vocabulary, built once per tokenizer by the backend."""

    ll_tokenizer: llg.LLTokenizer
    vocab_size: int
    eos_ids: tuple[int, ...]
    closing_rank: np.ndarray  # [vocab] float: lower = closes a JSON document sooner
    closing_order: tuple[int, ...]  # the best-ranked token ids, best first (checked bit by bit)


def closing_rank(table: Sequence[bytes], special: set[int]) -> np.ndarray:
    """Static preference used to finish a document quickly (lower is better): a quote (closes a
    string, or opens a key whose name is then forced), closing brackets, separators, digits, then
    other tokens, longer first (a forced key spelled in one token beats four)."""
    rank = np.empty(len(table), dtype=np.float32)
    for i, b in enumerate(table):
        if i in special or not b:
            rank[i] = 10.0
        elif b == b'"':
            rank[i] = 0.0
        elif b[:1] == b'"' and all(c in b'"}]' for c in b):
            rank[i] = 0.5 - 0.01 * len(b)
        elif all(c in b"}]" for c in b):
            rank[i] = 1.0 - 0.01 * len(b)
        elif b in (b",", b", ", b":", b": "):
            rank[i] = 2.0
        elif len(b) == 1 and b.isdigit():  # "1" first: some bounded-number regexes reject "-0.000"
            rank[i] = 3.0 + (0.05 if b == b"0" else 0.01 * abs(int(b) - 1))
        else:
            rank[i] = 4.0 + 1.0 / (1 + len(b))
    return rank


class LLGState:
    """Grammar state of one sequence (``allowed_mask`` / ``accept`` / ``is_terminated``)."""

    def __init__(
        self,
        matcher: llg.LLMatcher,
        info: TokenizerInfo,
        max_tokens: int | None = None,
        window: int = 96,
        margin: int = 12,
        end_when_accepting: bool = True,
        executor: llg.LLExecutor | None = None,
    ) -> None:
        self._m = matcher
        self._info = info
        self.max_tokens = max_tokens
        self.window = window
        self.margin = margin
        self.end_when_accepting = end_when_accepting
        self.executor = executor  # the backend's thread pool, for batch_allowed_masks
        self.num_accepted = 0
        self._forced: list[int] = []  # the rest of a closing path being followed
        self._path: list[int] | None = None  # last closing path, still valid if its head is sampled

    # ---- the seam ---------------------------------------------------------------------------
    def allowed_mask(self, vocab_size: int, bitmask_row: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``[vocab_size]`` of tokens allowed next. ``bitmask_row`` is a mask the caller
        already computed for this state (``batch_allowed_masks``), to skip recomputing it."""
        if self._m.is_error() or self._m.is_stopped():
            return self._only(self._info.eos_ids, vocab_size)
        remaining = None if self.max_tokens is None else self.max_tokens - self.num_accepted
        if remaining is not None and remaining <= self.window:
            forced = self._budget_token(remaining)
            if forced is not None:
                return self._only((forced,), vocab_size)
        if bitmask_row is None:
            bitmask_row = self._bitmask()
        return bitmask_to_bool(bitmask_row, vocab_size)

    def accept(self, token_id: int) -> bool:
        """Advance by one sampled token. Returns False (and enters the error state, which only
        allows eos from then on) if the grammar did not allow it."""
        self.num_accepted += 1
        if self._forced and self._forced[0] == token_id:
            self._forced.pop(0)
        else:
            self._forced.clear()
        self._path = self._path[1:] if self._path and self._path[0] == token_id else None
        if self._m.is_stopped() and token_id in self._info.eos_ids:
            return True
        return self._m.consume_token(int(token_id))

    def is_terminated(self) -> bool:
        """True once the grammar is complete (or broken): the sequence should stop now."""
        return self._m.is_stopped() or self._m.is_error()

    # ---- extras -----------------------------------------------------------------------------
    @property
    def matcher(self) -> llg.LLMatcher:
        return self._m

    def is_accepting(self) -> bool:
        return self._m.is_accepting()

    @property
    def error(self) -> str:
        return self._m.get_error()

    def needs_bitmask(self) -> bool:
        """Whether ``allowed_mask`` will consult the grammar's own mask (for batch prefetch)."""
        if self._m.is_error() or self._m.is_stopped():
            return False
        return self.max_tokens is None or self.max_tokens - self.num_accepted > self.window

    # ---- internals --------------------------------------------------------------------------
    def _bitmask(self) -> torch.Tensor:
        return torch.frombuffer(bytearray(self._m.compute_bitmask()), dtype=torch.int32)

    @staticmethod
    def _only(ids: Sequence[int], vocab_size: int) -> torch.Tensor:
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[[i for i in ids if 0 <= i < vocab_size]] = True
        return mask

    def _budget_token(self, remaining: int) -> int | None:
        """The token to force now to finish within ``remaining`` tokens, or None to sample freely."""
        if self._forced:
            return self._forced[0]
        if self._m.is_accepting():  # complete (e.g. after a tool call): end rather than risk the budget
            return self._info.eos_ids[0] if self.end_when_accepting and remaining <= self.margin else None
        path = self._path if self._path is not None else self._closing_path(limit=remaining)
        self._path = path
        if path is None or len(path) + self.margin >= remaining:
            if not path:
                return None if path is not None else self._best_closer()
            self._forced = list(path)
            return path[0]
        return None

    def _pick_raw(self, raw: bytes) -> int | None:
        """Best-ranked allowed non-eos token: the short candidate list bit by bit, then a scan."""
        for t in self._info.closing_order:
            if raw[t >> 3] >> (t & 7) & 1:
                return t
        ids = np.flatnonzero(_unpack(np.frombuffer(raw, dtype=np.uint8), self._info.vocab_size))
        ids = ids[~np.isin(ids, self._info.eos_ids)]
        if ids.size == 0:
            return None
        return int(ids[np.argmin(self._info.closing_rank[ids])])

    def _best_closer(self) -> int | None:
        return self._pick_raw(self._m.compute_bitmask())

    def _closing_path(self, limit: int) -> list[int] | None:
        """Greedy short completion from the current state (None if none within ``limit``)."""
        m = self._m.deep_copy()
        path: list[int] = []
        while not m.is_accepting():
            if len(path) >= limit:
                return None
            tok = self._pick_raw(m.compute_bitmask())
            if tok is None or not m.consume_token(tok):
                return None
            path.append(tok)
        return path


def batch_allowed_masks(
    states: Sequence[Any], vocab_size: int, executor: llg.LLExecutor | None = None
) -> torch.Tensor:
    """``[len(states), vocab_size]`` bool masks, the grammar masks of ``LLGState`` rows computed in
    parallel (GIL dropped) by llguidance's thread pool (``executor``, default: the states'
    backend's). Any other state object is asked for its ``allowed_mask``; ``None`` allows all."""
    out = torch.ones(len(states), vocab_size, dtype=torch.bool)
    ours = [(i, s) for i, s in enumerate(states) if isinstance(s, LLGState)]
    done: set[int] = set()
    if ours:
        executor = executor or ours[0][1].executor
        words = (max(s._info.vocab_size for _, s in ours) + 31) // 32
        bitmask = torch.full((len(states), words), -1, dtype=torch.int32)
        pre = [(s.matcher, i) for i, s in ours if s.needs_bitmask()]
        if pre and executor is not None:
            executor.unsafe_compute_mask_ptr(pre, bitmask.data_ptr(), words * 4, len(states))
            done = {i for _, i in pre}
    for i, s in enumerate(states):
        if isinstance(s, LLGState):
            out[i] = s.allowed_mask(vocab_size, bitmask[i] if i in done else None)
        elif s is not None:
            out[i] = s.allowed_mask(vocab_size)
    return out
