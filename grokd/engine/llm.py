"""Offline batch generation: ``LLM(model).generate(prompts, params)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from grokd.engine.config import EngineConfig, ModelLoadConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.outputs import RequestOutput
from grokd.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from typing_extensions import TypeIs

Prompt = str | list[int]


def _one_prompt(prompts: Prompt | Sequence[Prompt]) -> TypeIs[Prompt]:
    """Whether ``prompts`` is a single prompt (text, or a list of token ids) rather than a batch."""
    return isinstance(prompts, str) or (isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], int))


class LLM:
    def __init__(self, model: str | EngineConfig | None = None, **model_kwargs: object) -> None:
        """``model`` is a checkpoint path (``None`` = the default model) or a full ``EngineConfig``;
        ``model_kwargs`` set ``ModelLoadConfig`` fields (``dtype``, ``device``, ...) for a path."""
        if isinstance(model, EngineConfig):
            config = model
        else:
            config = EngineConfig(model=ModelLoadConfig(model=model, **model_kwargs))  # type: ignore[arg-type]
        self.engine = LLMEngine.from_config(config)
        self.tokenizer = self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        """Run all prompts to completion; outputs in prompt order. Text prompts are tokenized
        without special tokens added (add BOS yourself if the model wants it)."""
        prompts = [prompts] if _one_prompt(prompts) else list(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("params: need one SamplingParams or one per prompt")
        ids: list[list[int]] = []
        for p in prompts:
            if not isinstance(p, str):
                ids.append(list(p))
            elif self.tokenizer is None:
                raise ValueError("text prompts need a tokenizer; this checkpoint has none (pass token ids)")
            else:
                ids.append(self.tokenizer.encode(p))
        for p, sp in zip(ids, params, strict=True):
            self.engine.validate(p, sp)  # fail before anything runs
        pending = list(enumerate(zip(ids, params, strict=True)))[::-1]
        order: dict[str, int] = {}
        results: list[RequestOutput | None] = [None] * len(prompts)
        with tqdm(total=len(prompts), disable=not use_tqdm, desc="generate") as bar:
            while pending or self.engine.has_unfinished():
                while pending and not self.engine.queue_full():  # the queue is bounded: feed as it drains
                    i, (p, sp) = pending.pop()
                    order[self.engine.add_request(f"llm-{i}", p, sp)] = i
                for out in self.engine.step():
                    if out.finished:
                        results[order[out.request_id]] = out
                        bar.update(1)
        return [r for r in results if r is not None]
