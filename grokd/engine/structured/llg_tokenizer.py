"""Bridge from the engine's ``Tokenizer`` protocol to llguidance's ``LLTokenizer``.

llguidance needs the raw bytes of every token id (to walk its token trie) and an encoder whose
output decodes back to exactly the bytes it was given (it re-tokenizes forced text). We build both
from ``token_bytes`` so one code path serves SentencePiece (Grok-1) and byte-level BPE (SmolLM2).
"""

from __future__ import annotations

import llguidance as llg

from grokd.engine.tokenizer import Tokenizer

# llguidance marks special tokens by a leading 0xFF byte followed by the token's name.
_SPECIAL_MARKER = b"\xff"


class _ByteEncoder:
    """Encoder handed to llguidance: bytes in, token ids out, always byte-exact.

    The model's own ``encode`` is tried first (canonical tokens for forced text); when its result
    does not round-trip (SentencePiece's dummy-prefix space, normalisation) we fall back to greedy
    longest-match over the vocabulary, which is exact whenever the vocabulary covers every byte.
    """

    def __init__(self, tokenizer: Tokenizer, table: list[bytes], special: set[int]) -> None:
        self._tok = tokenizer
        self._table = table
        self._lookup: dict[bytes, int] = {}
        for i, b in enumerate(table):
            if b and i not in special:
                self._lookup.setdefault(b, i)
        self._max_len = max((len(b) for b in self._lookup), default=1)

    def __call__(self, data: bytes | str) -> list[int]:
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            ids = self._tok.encode(data.decode("utf-8"))
            if b"".join(self._table[i] if 0 <= i < len(self._table) else b"\x00" for i in ids) == data:
                return ids
        except (UnicodeDecodeError, ValueError):
            pass
        return self.greedy(data)

    def greedy(self, data: bytes) -> list[int]:
        out: list[int] = []
        pos = 0
        while pos < len(data):
            for size in range(min(self._max_len, len(data) - pos), 0, -1):
                tid = self._lookup.get(data[pos : pos + size])
                if tid is not None:
                    out.append(tid)
                    pos += size
                    break
            else:  # a byte the vocabulary cannot express: the grammar can never force it either
                pos += 1
        return out


class _Wrapper:
    """The duck-typed object ``llguidance.TokenizerWrapper`` reads its fields from."""

    def __init__(self, tokenizer: Tokenizer, table: list[bytes], special: set[int]) -> None:
        eos = list(tokenizer.eos_token_ids)
        self.eos_token_id = eos[0] if eos else None
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = sorted(special)
        self.tokens = table
        self._encoder = _ByteEncoder(tokenizer, table, special)

    def __call__(self, data: bytes | str) -> list[int]:
        return self._encoder(data)


def token_table(tokenizer: Tokenizer) -> tuple[list[bytes], set[int]]:
    """Bytes per id as llguidance wants them, and the ids treated as special.

    Special tokens (and byte-less ids such as SentencePiece control pieces) become
    ``0xFF + name`` so a grammar can name them (``<|im_end|>``) but text never matches them.
    """
    table: list[bytes] = []
    special: set[int] = set()
    for i in range(tokenizer.vocab_size):
        raw = tokenizer.token_bytes(i)
        if tokenizer.is_special(i) or not raw:
            special.add(i)
            name = tokenizer.token_str(i) or f"<[{i}]>"
            table.append(_SPECIAL_MARKER + name.encode("utf-8"))
        else:
            table.append(raw)
    return table, special


def build_ll_tokenizer(tokenizer: Tokenizer) -> tuple[llg.LLTokenizer, list[bytes], set[int]]:
    """An ``LLTokenizer`` for ``tokenizer`` (about 0.5 s for a 131k vocabulary: build once)."""
    if not tokenizer.eos_token_ids:
        raise ValueError("tokenizer: structured outputs need at least one eos token id")
    table, special = token_table(tokenizer)
    wrapper = llg.TokenizerWrapper(_Wrapper(tokenizer, table, special))
    ll_tok = llg.LLTokenizer(wrapper, n_vocab=tokenizer.vocab_size, eos_token=list(tokenizer.eos_token_ids))
    return ll_tok, table, special
