"""A sampler-like loop with random logits: what a noise model does under a grammar mask."""

from __future__ import annotations

import torch

from grokd.engine.structured.backend import StructuredOutputBackend


def drive(backend: StructuredOutputBackend, spec, seed: int, max_tokens: int = 120, scale: float = 4.0):
    """Sample up to ``max_tokens`` tokens from seeded random logits through the spec's state.
    Returns (text, token ids, state)."""
    tok = backend.tokenizer
    vocab = tok.vocab_size
    state = backend.new_state(spec, max_tokens=max_tokens)
    gen = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    eos = set(tok.eos_token_ids)
    for _ in range(max_tokens):
        mask = state.allowed_mask(vocab)
        assert mask.any(), "grammar left no token"
        logits = torch.randn(vocab, generator=gen) * scale
        logits = logits.masked_fill(~mask, float("-inf"))
        t = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        assert state.accept(t), state.error
        if t in eos:
            break
        ids.append(t)
        if state.is_terminated():
            break
    return tok.decode(ids), ids, state
