"""Grok-2's ``tokenizer.tok.json`` (a tiktoken BPE) behind the engine's Tokenizer protocol.

The file lists ``regular_tokens`` (``{bytes, token}``: each token's bytes and id, the id doubling
as its BPE merge rank, as tiktoken wants), ``special_tokens`` (the same, for ``<|pad|>``,
``<|separator|>``, ``<|eos|>``, ``<|controlK|>``), ``word_split`` (the pre-split regex's name,
``"V1"``), ``pat_str`` (that regex itself) and ``vocab_size``. ``tiktoken.Encoding`` does the
splitting and merging; this class adds the engine's tables.

Encoding adds no BOS (Grok-2 has none) and treats special tokens written in the text as those
tokens, as xAI's release does: ``"a<|separator|>b"`` encodes ``<|separator|>`` to its id, which is
how the chat template's separators reach the model. A reply ends at ``<|eos|>`` or
``<|separator|>`` (the chat format closes every turn with the separator), so both are
``eos_token_ids``. ``token_bytes`` of a special token is its text, as for Hugging Face added
tokens; the detokenizer skips it by ``is_special``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tiktoken

from grokd.engine.tokenizer import token_text
from grokd.weights.checkpoint import TokenizerSource

TOKENIZER_FILE = "tokenizer.tok.json"
WORD_SPLITS = ("V1",)  # the pre-split regexes this reader knows; the file carries the pattern itself
EOS_TEXT = "<|eos|>"
SEPARATOR_TEXT = "<|separator|>"
PAD_TEXT = "<|pad|>"


class TokenizerFileError(ValueError):
    """A ``tokenizer.tok.json`` that cannot be read as a tiktoken tokenizer (the message says why)."""


def _entries(data: dict[str, Any], key: str, path: Path) -> dict[bytes, int]:
    items = data.get(key)
    if not isinstance(items, list):
        raise TokenizerFileError(f"{path}: {key!r} must be a list of {{bytes, token}} entries")
    out: dict[bytes, int] = {}
    for i, item in enumerate(items):
        try:
            out[bytes(item["bytes"])] = int(item["token"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenizerFileError(f"{path}: {key}[{i}] is not a {{bytes, token}} entry: {exc}") from None
    return out


class TiktokenTokenizer:
    """Wraps a ``tiktoken.Encoding`` built from ``tokenizer.tok.json``; byte tables precomputed."""

    def __init__(self, path: str | Path, chat_template: str | None = None) -> None:
        from grokd.engine.chat_template import GROK2_TEMPLATE

        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TokenizerFileError(f"{self.path}: cannot read tokenizer file: {exc}") from None
        if not isinstance(data, dict):
            raise TokenizerFileError(f"{self.path}: expected a JSON object")
        split = data.get("word_split")
        pattern = data.get("pat_str")
        if not isinstance(pattern, str):
            raise TokenizerFileError(f"{self.path}: no 'pat_str' (the word-split regex, {split!r})")
        if split is not None and split not in WORD_SPLITS:
            raise TokenizerFileError(f"{self.path}: unknown word_split {split!r} (known: {', '.join(WORD_SPLITS)})")
        regular = _entries(data, "regular_tokens", self.path)
        special_bytes = _entries(data, "special_tokens", self.path)
        special = {b.decode("utf-8"): i for b, i in special_bytes.items()}
        self.vocab_size = int(data.get("vocab_size") or len(regular) + len(special))
        ids = sorted([*regular.values(), *special.values()])
        if len(set(ids)) != len(ids) or (ids and (ids[0] < 0 or ids[-1] >= self.vocab_size)):
            raise TokenizerFileError(f"{self.path}: token ids repeat or fall outside vocab_size {self.vocab_size}")
        self.encoding = tiktoken.Encoding(
            name=self.path.stem, pat_str=pattern, mergeable_ranks=regular, special_tokens=special,
            explicit_n_vocab=self.vocab_size if len(ids) == self.vocab_size else None,
        )
        if EOS_TEXT not in special:
            raise TokenizerFileError(f"{self.path}: no {EOS_TEXT} special token")
        self.special_tokens = special
        self.bos_token_id: int | None = None
        self.eos_token_ids = [special[EOS_TEXT]] + ([special[SEPARATOR_TEXT]] if SEPARATOR_TEXT in special else [])
        self.pad_token_id = special.get(PAD_TEXT)
        self.chat_template = chat_template or GROK2_TEMPLATE
        self._bytes = [b""] * self.vocab_size
        for b, i in regular.items():
            self._bytes[i] = b
        for b, i in special_bytes.items():
            self._bytes[i] = b
        self._special = frozenset(special.values())

    @classmethod
    def from_source(cls, src: TokenizerSource, chat_template: str | None = None) -> TiktokenTokenizer:
        if src.kind != "tiktoken" or src.path is None:
            raise ValueError(f"not a tiktoken tokenizer source: {src.kind}")
        return cls(src.path, chat_template)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, allowed_special="all")

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        kept = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        if skip_special_tokens:
            kept = [i for i in kept if i not in self._special]
        return b"".join(self._bytes[i] for i in kept).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_str(self, token_id: int) -> str:
        """The token's text, or ``bytes:\\xNN...`` when it is not valid UTF-8 on its own (OpenAI's form)."""
        return token_text(self._bytes[token_id])

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special
