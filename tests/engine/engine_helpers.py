"""Helpers shared by the engine tests (imported by module name: tests/engine is on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence

from grokd.engine.llm_engine import LLMEngine


class FirstK:
    """Grok-1's SentencePiece tokenizer cut to the tiny model's 1024 ids, so text-level features
    (stop strings, detokenisation) can run on the fixture; ids >= 1024 never occur."""

    def __init__(self, tok, k: int) -> None:
        self.tok = tok
        self.vocab_size = k
        self.bos_token_id = tok.bos_token_id
        self.eos_token_ids = tok.eos_token_ids
        self.pad_token_id = tok.pad_token_id
        self.chat_template = None

    def encode(self, text: str) -> list[int]:
        return [t for t in self.tok.encode(text) if t < self.vocab_size]

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode(ids, skip_special_tokens)

    def token_bytes(self, token_id):
        return self.tok.token_bytes(token_id)

    def token_str(self, token_id):
        return self.tok.token_str(token_id)

    def is_special(self, token_id):
        return self.tok.is_special(token_id)


def run_all(engine: LLMEngine, max_steps: int = 10_000) -> dict:
    """Step until idle; finished outputs by request id."""
    done = {}
    for _ in range(max_steps):
        if not engine.has_unfinished():
            break
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return done


def assert_idle(engine: LLMEngine) -> None:
    bm = engine.block_manager
    bm.check_invariants()
    assert bm.num_used == 0
    assert bm.num_free == bm.num_blocks  # free + cached = pool
    assert not engine.scheduler.has_work()


class Scripted:
    """Proposes the next ``k`` tokens of whichever known continuation extends the sequence; every
    ``garble``-th position is guessed wrong, so drafts are accepted in part. Sequences it does not
    know get no draft."""

    def __init__(self, full: Sequence[list[int]], k: int = 4, garble: int = 3, vocab: int = 1024) -> None:
        self.full, self.k, self.garble, self.vocab = [list(f) for f in full], k, garble, vocab
        self.longest = 0

    def propose(self, token_ids: Sequence[int], limit: int | None = None) -> list[int]:
        n = len(token_ids)
        for f in self.full:
            if len(f) > n and f[:n] == list(token_ids):
                draft = f[n : n + min(self.k, limit if limit is not None else self.k)]
                draft = [(t + 1) % self.vocab if (n + j) % self.garble == 0 else t for j, t in enumerate(draft)]
                self.longest = max(self.longest, len(draft))
                return draft
        return []

    def propose_batch(self, histories: Sequence[Sequence[int]], limits: Sequence[int]) -> list[list[int]]:
        return [self.propose(h, n) for h, n in zip(histories, limits, strict=True)]
