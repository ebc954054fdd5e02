"""Tokenizers and backends for the structured-output tests.

``spm1024_tokenizer`` is a real SentencePiece BPE model with vocab 1024 (the grok1-tiny fixture's
vocabulary size), trained here on a generated corpus of JSON-ish text with byte fallback.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from grokd.engine.sp_tokenizer import SentencePieceTokenizer
from grokd.engine.structured.backend import StructuredOutputBackend


def _corpus(n: int = 3000) -> list[str]:
    rng = random.Random(0)
    words = "name age color red green blue tags user id email temp unit value points title kind code shape "
    words += "circle square side matrix order items sku qty flags level label root children ratio count mode "
    words += "fast slow weather city Paris London tool_call function_call arguments true false null event"
    vocab = words.split()
    lines = []
    for _ in range(n):
        obj = {rng.choice(vocab): rng.choice([rng.randint(-99, 999), rng.choice(vocab), True, None, [1, 2]])}
        lines.append(json.dumps(obj))
        lines.append(" ".join(rng.choice(vocab) for _ in range(8)) + f" {rng.random():.3f} {{}}[]:,\"'")
    return lines


@pytest.fixture(autouse=True)
def _one_thread():
    """Random-logit loops are tiny ops; extra intra-op threads only contend on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def spm1024_tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
    import sentencepiece as spm
    out: Path = tmp_path_factory.mktemp("spm1024")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_prefix=str(out / "tiny"),
        vocab_size=1024,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    tok = SentencePieceTokenizer(out / "tiny.model")
    assert tok.vocab_size == 1024
    return tok


@pytest.fixture(scope="session")
def grok_tokenizer(grok1_tokenizer_path: Path) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(grok1_tokenizer_path)


@pytest.fixture(scope="session")
def tiny_backend(spm1024_tokenizer) -> StructuredOutputBackend:
    return StructuredOutputBackend(spm1024_tokenizer)


@pytest.fixture(scope="session")
def grok_backend(grok_tokenizer) -> StructuredOutputBackend:
    return StructuredOutputBackend(grok_tokenizer)


@pytest.fixture(params=["tiny", "grok"])
def backend(request) -> StructuredOutputBackend:
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_tokenizer) -> StructuredOutputBackend:
    """Byte-level BPE with special tokens (<|im_end|> ...): the default model's vocabulary."""
    return StructuredOutputBackend(smollm2_tokenizer)
