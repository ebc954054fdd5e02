"""grokd's serving core: requests, scheduler, KV blocks, model runner, sampler, tokenizer.

``engine.LLM`` (offline generation) and ``engine.AsyncEngine`` (the server's entry point) are
imported lazily so that light submodules (configs, sampling params) load without torch models.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LLM", "AsyncEngine", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "LLM":
        from grokd.engine.llm import LLM

        return LLM
    if name == "AsyncEngine":
        from grokd.engine.async_engine import AsyncEngine

        return AsyncEngine
    if name == "SamplingParams":
        from grokd.engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
