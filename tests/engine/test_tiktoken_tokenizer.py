"""Grok-2's tiktoken tokenizer (tests/data/grok2-tiny/tokenizer.tok.json) against the reference's
ids and against ``tiktoken`` itself built straight from the file: texts, the chat texts, special
tokens written in text, byte tables and what a malformed file is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiktoken

from grokd.engine.tiktoken_tokenizer import TiktokenTokenizer, TokenizerFileError
from grokd.engine.tokenizer import Tokenizer
from grokd.weights.checkpoint import TokenizerSource

EXTRA = ["héllo wörld 🙂 12345\n\n\tindent  two", "<|eos|><|pad|>x<|control7|>", "it's   \r\n done",
         "日本語", ""]


@pytest.fixture(scope="module")
def path(grok2_tiny_dir: Path) -> Path:
    return grok2_tiny_dir / "tokenizer.tok.json"


@pytest.fixture(scope="module")
def tok(path: Path) -> TiktokenTokenizer:
    return TiktokenTokenizer.from_source(TokenizerSource(kind="tiktoken", path=path))


@pytest.fixture(scope="module")
def plain(path: Path) -> tiktoken.Encoding:
    """tiktoken's own Encoding from the file's fields, with no grokd code involved."""
    data = json.loads(path.read_text())
    return tiktoken.Encoding(
        name="grok2-tiny", pat_str=data["pat_str"],
        mergeable_ranks={bytes(t["bytes"]): t["token"] for t in data["regular_tokens"]},
        special_tokens={bytes(t["bytes"]).decode(): t["token"] for t in data["special_tokens"]})


def test_reference_ids(tok: TiktokenTokenizer, grok2_tiny_reference: dict) -> None:
    assert isinstance(tok, Tokenizer)
    for case in grok2_tiny_reference["tokenizer"]:
        assert tok.encode(case["text"]) == case["ids"]
        assert tok.decode(case["ids"], skip_special_tokens=False) == case["text"]
    for case in grok2_tiny_reference["fp32"]["chat"]:
        assert tok.encode(case["text"]) == case["prompt"]


def test_same_as_tiktoken(tok: TiktokenTokenizer, plain: tiktoken.Encoding, grok2_tiny_reference: dict) -> None:
    texts = [c["text"] for c in grok2_tiny_reference["tokenizer"] + grok2_tiny_reference["fp32"]["chat"]] + EXTRA
    for text in texts:
        ids = plain.encode(text, allowed_special="all")
        assert tok.encode(text) == ids
        assert tok.decode(ids, skip_special_tokens=False) == plain.decode(ids)
        assert b"".join(tok.token_bytes(i) for i in ids) == plain.decode_bytes(ids)
    for name, i in plain._special_tokens.items():
        assert tok.encode(name) == [i] and tok.is_special(i) and tok.token_bytes(i) == name.encode()


def test_ids_and_specials(tok: TiktokenTokenizer) -> None:
    assert (tok.vocab_size, tok.bos_token_id, tok.pad_token_id) == (512, None, 0)
    assert tok.eos_token_ids == [2, 1]  # <|eos|>, then <|separator|> (every turn ends with it)
    ids = tok.encode("Hi<|separator|>\n\n")
    assert 1 in ids and tok.decode(ids) == "Hi\n\n"
    assert not tok.is_special(3) and tok.token_bytes(3) == b"\x00"
    assert tok.token_str(tok.encode("é")[0]).startswith("bytes:\\x")


@pytest.mark.parametrize(("change", "message"), [
    ({"pat_str": None}, "no 'pat_str'"),
    ({"word_split": "V9"}, "unknown word_split 'V9'"),
    ({"regular_tokens": [{"bytes": [65]}]}, r"regular_tokens\[0\] is not a"),
    ({"special_tokens": []}, r"no <\|eos\|> special token"),
])
def test_malformed_file_is_named(path: Path, tmp_path: Path, change: dict, message: str) -> None:
    data = json.loads(path.read_text()) | change
    bad = tmp_path / "tokenizer.tok.json"
    bad.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(TokenizerFileError, match=message):
        TiktokenTokenizer(bad)
