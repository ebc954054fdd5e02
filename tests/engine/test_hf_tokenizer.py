"""HFTokenizer: GGUF-rebuilt SmolLM2 tokenizer vs transformers, byte-exact token_bytes, specials,
and the tokenizer.json (kind "hf") path."""

from __future__ import annotations

import json

import pytest

from grokd.engine.hf_tokenizer import HFTokenizer, bytes_to_unicode
from grokd.engine.tokenizer import Tokenizer
from grokd.weights.checkpoint import TokenizerSource

TEXTS = [
    "Hello world!",
    "What is the capital of France?",
    "  leading spaces\n\nand\ttabs  ",
    "numbers 12345 and 3.14159, 1,000,000 in 2024",
    "x=10**23; y = f(7) // 0x1F",
    "héllo wörld — ñandú 日本語 テスト",
    "emoji 😀👍🏽 and ZWJ 👨‍👩‍👧",
    "Ελληνικά и русский, العربية",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "don't I'll we're THEY'VE",
    "\n\n\n   \n",
    "a  b   c    d",
    "def f(x):\n    return x * 2  # comment\n",
    "",
    "<|im_start",
    "<repo_name>grokd<file_sep>",
]


def test_protocol_and_special_ids(smollm2_tokenizer: HFTokenizer) -> None:
    tok = smollm2_tokenizer
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 49152
    assert tok.bos_token_id == 1 and tok.pad_token_id == 2
    assert tok.eos_token_ids[0] == 2  # tokenizer.ggml.eos_token_id (<|im_end|>) first
    assert set(tok.eos_token_ids) == {0, 2}  # plus <|endoftext|>
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]
    assert tok.is_special(1) and tok.is_special(0) and not tok.is_special(tok.encode("Hello")[0])
    assert tok.token_to_id("<|im_end|>") == 2


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(smollm2_tokenizer, hf_smollm2_tokenizer, text: str) -> None:
    assert smollm2_tokenizer.encode(text) == hf_smollm2_tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("text", TEXTS)
def test_token_bytes_roundtrip(smollm2_tokenizer: HFTokenizer, text: str) -> None:
    ids = smollm2_tokenizer.encode(text)
    joined = b"".join(smollm2_tokenizer.token_bytes(i) for i in ids)
    assert joined == text.encode("utf-8")
    assert smollm2_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_digits_are_split_individually(smollm2_tokenizer: HFTokenizer) -> None:
    # llama.cpp's "smollm" pre-tokenizer isolates every digit, as SmolLM2 was trained.
    ids = smollm2_tokenizer.encode("12345")
    assert [smollm2_tokenizer.token_str(i) for i in ids] == list("12345")


def test_decode_skips_specials_and_token_str(smollm2_tokenizer: HFTokenizer) -> None:
    tok = smollm2_tokenizer
    ids = tok.encode("<|im_start|>assistant\nHi there<|im_end|>")
    assert tok.decode(ids) == "assistant\nHi there"
    assert tok.token_str(2) == "<|im_end|>"
    partial = tok.encode("😀")
    assert len(partial) > 1 and tok.token_str(partial[0]).startswith("bytes:\\x")
    assert tok.token_str(tok.encode(" world")[0]) == " world"


def test_bytes_to_unicode_is_a_bijection() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256


def test_hf_kind_from_tokenizer_json(tmp_path, smollm2_tokenizer: HFTokenizer) -> None:
    smollm2_tokenizer._tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|im_end|>",
                "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            }
        )
    )
    tok = HFTokenizer.from_source(TokenizerSource(kind="hf", path=tmp_path / "tokenizer.json"))
    assert tok.bos_token_id == 1 and tok.eos_token_ids[0] == 2 and tok.pad_token_id == 2
    assert tok.chat_template.startswith("{% for m")
    for text in TEXTS:
        assert tok.encode(text) == smollm2_tokenizer.encode(text)
        assert b"".join(tok.token_bytes(i) for i in tok.encode(text)) == text.encode()


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        HFTokenizer.from_source(TokenizerSource(kind="tiktoken"))


SPM_PIECES = ["▁", "h", "e", "l", "o", "w", "r", "d", "a", "▁h", "he", "ll", "▁he", "llo", "▁hello"]
SPM_PIECES += ["▁w", "or", "▁wor", "▁world", "ld", "▁a", "!", "▁!"]


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    """A synthetic SentencePiece-BPE (``tokenizer.ggml.model == "llama"``) GGUF, as llama.cpp
    writes Llama-2-style vocabularies: no merges, scores, byte-fallback tokens."""
    import gguf
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(SPM_PIECES)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(SPM_PIECES))]
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


SPM_TEXTS = [
    "hello world",
    "hello world!",
    "hello  world",
    "a hello",
    "héllo ✓ world",
    "</s>hello",
    "hello</s> world",
]


def test_gguf_sentencepiece_vocab(spm_gguf) -> None:
    from grokd.weights.gguf_reader import read_gguf

    tok = HFTokenizer.from_source(read_gguf(spm_gguf).tokenizer)
    assert tok.bos_token_id == 1 and tok.eos_token_ids == [2]
    ids = tok.encode("hello world")
    assert [tok.token_str(i) for i in ids] == [" hello", " world"]
    assert tok.decode(ids) == "hello world"
    # bytes outside the vocabulary fall back to <0xNN> tokens and round-trip exactly
    ids = tok.encode("héllo ✓")
    assert b"".join(tok.token_bytes(i) for i in ids) == " héllo ✓".encode()
    assert tok.decode(ids) == "héllo ✓"
    import transformers
    ref = transformers.AutoTokenizer.from_pretrained(str(spm_gguf.parent), gguf_file=spm_gguf.name)
    for text in SPM_TEXTS:
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False), text
