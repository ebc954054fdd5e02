"""SentencePiece tokenizer (Grok-1's ``tokenizer.model``) behind the engine's Tokenizer protocol.

No BOS/EOS is added to encoded text, matching the release runner (GROK1.md §4).
"""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from grokd.weights.checkpoint import TokenizerSource

_UNK_TEXT = " \u2047 "  # what sentencepiece's decode renders for an unknown piece


class SentencePieceTokenizer:
    """Wraps a ``SentencePieceProcessor``; byte tables are precomputed once for detokenisation."""

    chat_template: str | None = None

    def __init__(self, path: str | Path, chat_template: str | None = None) -> None:
        self.path = Path(path)
        self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.vocab_size = self.sp.get_piece_size()
        self.bos_token_id = self._id_or_none(self.sp.bos_id())
        eos = self.sp.eos_id()
        self.eos_token_ids = [eos] if eos >= 0 else []
        self.pad_token_id = self._id_or_none(self.sp.pad_id())
        self.chat_template = chat_template
        self._special = [self._is_special(i) for i in range(self.vocab_size)]
        self._bytes = [self._piece_bytes(i) for i in range(self.vocab_size)]

    @classmethod
    def from_source(cls, src: TokenizerSource, chat_template: str | None = None) -> SentencePieceTokenizer:
        if src.kind != "sentencepiece" or src.path is None:
            raise ValueError(f"not a sentencepiece tokenizer source: {src.kind}")
        return cls(src.path, chat_template)

    @staticmethod
    def _id_or_none(i: int) -> int | None:
        return i if i >= 0 else None

    def _is_special(self, i: int) -> bool:
        if self.sp.is_control(i):
            return True
        piece = self.sp.id_to_piece(i)
        # user-defined markers such as <|separator|>; user-defined digits/newlines are ordinary text
        return piece.startswith("<|") and piece.endswith("|>") and not self.sp.is_byte(i)

    def _piece_bytes(self, i: int) -> bytes:
        if self.sp.is_control(i):
            return b""
        if self.sp.is_unknown(i):
            return _UNK_TEXT.encode()
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        if skip_special_tokens:
            return self.sp.decode([i for i in ids if not self._special[i]])
        # keep control tokens as their piece text; strip the dummy-prefix space like sentencepiece
        raw = b"".join(self.sp.id_to_piece(i).encode() if self.sp.is_control(i) else self._bytes[i] for i in ids)
        text = raw.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_str(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def is_special(self, token_id: int) -> bool:
        return self._special[token_id]
