"""The structured-output backend: compiles specs against one tokenizer and makes per-sequence
states. Built on llguidance (Rust, no torch/triton build dependency, per-step masks in tens of
microseconds, JSON Schema + Lark grammars with lazy triggers for ``auto`` tool calls).

One backend per tokenizer (the engine owns it). Compiled grammars are cached by grammar text in
an LRU under a lock, so the server's validation warms the cache the engine then uses, and a hot
schema costs one ``deep_copy`` per request instead of a compile.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

import llguidance as llg
import numpy as np

from grokd.engine.structured.grammars import grammar_for
from grokd.engine.structured.llg_tokenizer import build_ll_tokenizer
from grokd.engine.structured.specs import StructuredSpec, ToolCallSpec
from grokd.engine.structured.state import LLGState, TokenizerInfo, batch_allowed_masks, closing_rank
from grokd.engine.tokenizer import Tokenizer

DEFAULT_CACHE_SIZE = 256
_FIELD_PREFIX = re.compile(r"^[\w.\[\]]+: ")
CLOSING_CANDIDATES = 256  # quotes, brackets, separators, digits: tried bit by bit before a full scan


class StructuredOutputBackend:
    """``new_state(spec, tokenizer)`` for the engine; ``check(spec)`` for the server (400s)."""

    def __init__(
        self, tokenizer: Tokenizer, cache_size: int = DEFAULT_CACHE_SIZE, num_threads: int | None = None
    ):
        self.tokenizer = tokenizer
        ll_tok, table, special = build_ll_tokenizer(tokenizer)
        rank = closing_rank(table, special)
        order = np.argsort(rank, kind="stable")[:CLOSING_CANDIDATES]
        self.info = TokenizerInfo(
            ll_tokenizer=ll_tok,
            vocab_size=tokenizer.vocab_size,
            eos_ids=tuple(tokenizer.eos_token_ids),
            closing_rank=rank,
            closing_order=tuple(int(t) for t in order if rank[t] < 4.0),
        )
        self._cache: OrderedDict[str, llg.LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.executor = llg.LLExecutor(num_threads=num_threads)
        self.hits = 0
        self.misses = 0

    def compile(self, spec: StructuredSpec) -> llg.LLMatcher:
        """A fresh matcher for ``spec``; raises ``ValueError`` naming the field if it cannot compile."""
        try:
            grammar = grammar_for(spec)
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            raise ValueError(msg if _FIELD_PREFIX.match(msg) else f"{_field(spec)}: {msg}") from None
        with self._lock:
            proto = self._cache.get(grammar)
            if proto is not None:
                self._cache.move_to_end(grammar)
                self.hits += 1
                return proto.deep_copy()
        matcher = llg.LLMatcher(self.info.ll_tokenizer, grammar, log_level=0)  # drops the GIL
        if matcher.is_error():
            raise ValueError(
                f"{_field(spec)}: the structured-output backend cannot compile it: {_short(matcher.get_error())}"
            )
        with self._lock:
            self.misses += 1
            self._cache[grammar] = matcher
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return matcher.deep_copy()

    def check(self, spec: StructuredSpec) -> None:
        """Compile (and cache) ``spec`` or raise ``ValueError("<field>: <problem>")``."""
        self.compile(spec)

    def new_state(
        self, spec: StructuredSpec, tokenizer: Any = None, max_tokens: int | None = None
    ) -> LLGState:
        """The engine's seam: a state for one sequence. ``max_tokens`` enables the budget that
        makes the output complete before the length limit."""
        if tokenizer is not None and tokenizer is not self.tokenizer:
            raise ValueError("structured: spec compiled for a different tokenizer")
        auto = isinstance(spec, ToolCallSpec) and spec.mode == "auto"
        return LLGState(
            self.compile(spec),
            self.info,
            max_tokens=max_tokens,
            end_when_accepting=not auto,
            executor=self.executor,
        )

    def batch_allowed_masks(self, states: list[LLGState | None], vocab_size: int):
        """``[b, vocab_size]`` bool masks for a batch, grammar work spread over llguidance's threads."""
        return batch_allowed_masks(states, vocab_size, self.executor)


def _field(spec: StructuredSpec) -> str:
    if isinstance(spec, ToolCallSpec):
        return "tools"
    if hasattr(spec, "schema"):
        return "response_format.json_schema.schema"
    return "response_format"


def _short(err: str) -> str:
    """First line of an llguidance error (the rest is a parser-state dump)."""
    return err.strip().splitlines()[0][:500] if err.strip() else "unknown error"
