"""Text in, text out on the default model (SmolLM2 GGUF, byte-level BPE): incremental
detokenisation equals a full decode, and a stop string spanning tokens is cut and never emitted."""

import pytest

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm import LLM
from grokd.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def default_llm(smollm2_gguf):
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = EngineConfig(
        model=ModelLoadConfig(model=None, dtype="float32"),  # None = the default model
        cache=CacheConfig(num_blocks=64),
        scheduler=SchedulerConfig(max_num_seqs=4),
    )
    yield LLM(cfg)
    torch.set_num_threads(prev)


def test_text_generation_and_stop_string(default_llm):
    tok = default_llm.tokenizer
    prompt = "The capital of France is"
    out = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)[0]
    comp = out.outputs[0]
    assert out.prompt_token_ids == tok.encode(prompt)
    assert comp.text and comp.text == tok.decode(comp.token_ids)
    # a stop string straddling the boundary between the 2nd and 3rd generated tokens
    cut = len(tok.decode(comp.token_ids[:2]))
    stop = comp.text[cut - 1 : cut + 1]
    assert len(stop) == 2
    stopped = default_llm.generate(
        prompt, SamplingParams(temperature=0, max_tokens=12, stop=[stop]), use_tqdm=False
    )[0].outputs[0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert stopped.text == comp.text[: comp.text.find(stop)]
    assert stopped.token_ids == comp.token_ids[: len(stopped.token_ids)]
