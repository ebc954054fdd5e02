"""The engine's tokenizer interface. The server uses it for templating, counts and tokenize-text."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer implementation provides.

    ``token_bytes`` returns the raw bytes a token stands for in running text (a SentencePiece
    ``▁`` is a space, a byte-fallback token is its byte, a byte-level BPE token its bytes), so
    incremental detokenisation can concatenate bytes and never split a multi-byte character.
    """

    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None
    chat_template: str | None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no BOS/EOS added."""
        ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def token_str(self, token_id: int) -> str:
        """A printable form of one token (used in logprobs ``token`` fields)."""
        ...

    def is_special(self, token_id: int) -> bool: ...


def token_text(raw: bytes) -> str:
    """A token's bytes as text, or ``bytes:\\xNN...`` when they are not valid UTF-8 on their own
    (OpenAI's form for such tokens in logprobs)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
