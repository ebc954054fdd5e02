"""Engine fixtures: the grok1-tiny model (float32, loaded once) and engines built around it."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import FirstK

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.faults import FaultPlan
from grokd.engine.llm_engine import LLMEngine


@pytest.fixture(scope="session")
def tiny_model(grok1_tiny_dir):
    from grokd import weights
    from grokd.engine.models.grok1 import Grok1ForCausalLM

    ckpt = weights.load(grok1_tiny_dir)
    # float32 storage of bf16(int8 x scale) is exactly the reference's effective weight, and
    # avoids dequantising on every call
    return Grok1ForCausalLM.from_checkpoint(ckpt, dtype=torch.float32, weights_dtype="float32"), ckpt


@pytest.fixture(scope="session")
def tiny_tokenizer(grok1_tokenizer_path):
    from grokd.engine.sp_tokenizer import SentencePieceTokenizer

    return FirstK(SentencePieceTokenizer(grok1_tokenizer_path), 1024)


@pytest.fixture
def one_thread():
    """One intra-op thread for the tiny model: on a shared 2-core box two threads per process
    thrash (measured ~30x slower per step). Restored afterwards so other tests are unaffected."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def make_engine(tiny_model, grok1_tiny_dir, one_thread):
    """``make_engine(num_blocks=, block_size=, budget=, max_seqs=, max_queued=, caching=, tokenizer=,
    max_pending=, faults=, kv_cache_dtype=, speculative=)``; other keywords go to ``LLMEngine``."""

    def build(
        num_blocks: int = 256,
        block_size: int = 4,
        budget: int = 512,
        max_seqs: int = 64,
        max_queued: int = 1024,
        caching: bool = True,
        tokenizer=None,
        max_pending: int = 256,
        faults: FaultPlan | None = None,
        kv_cache_dtype: str = "auto",
        speculative=None,
        **kwargs,
    ) -> LLMEngine:
        model, ckpt = tiny_model
        cfg = EngineConfig(
            model=ModelLoadConfig(model=str(grok1_tiny_dir), dtype="float32", weights_dtype="float32"),
            cache=CacheConfig(block_size=block_size, num_blocks=num_blocks, enable_prefix_caching=caching,
                              dtype=kv_cache_dtype),
            scheduler=SchedulerConfig(
                max_num_batched_tokens=budget, max_num_seqs=max_seqs, max_queued_requests=max_queued,
                max_pending_outputs=max_pending,
            ),
            faults=faults if faults is not None else FaultPlan(),
            speculative=speculative,
        )
        return LLMEngine(cfg, model, tokenizer, checkpoint=ckpt, **kwargs)

    return build
