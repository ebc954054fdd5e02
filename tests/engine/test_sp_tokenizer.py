"""Grok-1's SentencePiece tokenizer: reference ids, no BOS, round trip, byte-level detokenisation."""

from __future__ import annotations

import pytest

from grokd.engine.sp_tokenizer import SentencePieceTokenizer
from grokd.engine.tokenizer import Tokenizer
from grokd.weights.checkpoint import TokenizerSource

PROMPT = "The answer to life the universe and everything is of course"
IDS = [422, 3033, 356, 1180, 333, 9072, 360, 2175, 391, 359, 1805]


@pytest.fixture(scope="module")
def tok(grok1_tokenizer_path):
    return SentencePieceTokenizer.from_source(TokenizerSource(kind="sentencepiece", path=grok1_tokenizer_path))


def test_encodes_reference_prompt_without_bos(tok):
    assert isinstance(tok, Tokenizer)
    assert tok.encode(PROMPT) == IDS
    assert (tok.vocab_size, tok.bos_token_id, tok.eos_token_ids, tok.pad_token_id) == (131072, 1, [2], 0)


@pytest.mark.parametrize("text", [PROMPT, "héllo wörld 🙂 12345\n\n\tindent  two", "日本語のテキスト"])
def test_round_trip_and_token_bytes(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids) == tok.sp.decode(ids)
    assert b"".join(tok.token_bytes(i) for i in ids) == (" " + text).encode()


def test_special_tokens(tok):
    assert tok.is_special(2) and tok.token_bytes(2) == b""
    assert not tok.is_special(14)  # user-defined digit "0" is text
    assert tok.is_special(47)  # <|separator|>
    ids = [1] + tok.encode("hi") + [2]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "[BOS] hi[EOS]"
    assert tok.token_str(IDS[0]) == "\u2581The"
