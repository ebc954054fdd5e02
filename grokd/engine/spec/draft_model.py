"""Drafting with a smaller model of the same tokenizer (``{"method": "draft_model", "model": PATH}``).

Mechanism: the drafter is a plain (non-speculative) ``LLMEngine`` over the draft model with its
own KV pool and prefix cache. Each step, every decoding sequence's full token history becomes one
greedy request of at most ``num_speculative_tokens`` new tokens; the inner engine batches them
(one prefill step, then one decode step per drafted token) and the requests end, freeing their
blocks. Nothing has to be rolled back on rejection: the next step's history is the accepted one,
and since the previous request's full blocks were committed to the prefix cache, only the last
partial block and the newly accepted tokens are prefilled again. This is exact by construction:
the draft only proposes, the target verifies through the same rejection sampler as prompt lookup
(the draft is treated as a point mass, as for a greedy drafter).

A draft model is refused unless its tokenizer matches the target's token for token (same
vocabulary size, the same bytes for every id, the same EOS ids): drafted ids would otherwise mean
other text to the target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.loader import load_model_and_tokenizer
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.tokenizer import Tokenizer


def check_same_tokenizer(draft: Tokenizer | None, target: Tokenizer | None, path: str) -> None:
    """A ValueError naming the first difference between the draft's tokenizer and the target's."""
    if draft is None or target is None:
        raise ValueError(f"speculative_config.model: {path}: a draft model needs a tokenizer, as the target does")
    if draft.vocab_size != target.vocab_size:
        raise ValueError(f"speculative_config.model: {path}: the draft's tokenizer has {draft.vocab_size} tokens, "
                         f"the target's {target.vocab_size}; a draft model must share the target's tokenizer")
    for i in range(target.vocab_size):
        if draft.token_bytes(i) != target.token_bytes(i):
            raise ValueError(f"speculative_config.model: {path}: token {i} is {draft.token_bytes(i)!r} for the "
                             f"draft and {target.token_bytes(i)!r} for the target; a draft model must share the "
                             "target's tokenizer")
    if sorted(draft.eos_token_ids) != sorted(target.eos_token_ids):
        raise ValueError(f"speculative_config.model: {path}: EOS ids {draft.eos_token_ids} differ from the "
                         f"target's {target.eos_token_ids}")


class DraftModelProposer:
    """Greedy drafts of up to ``num_tokens`` tokens from ``engine`` (a plain engine over the
    draft model); ids at or above ``target_vocab`` (a draft's padded rows) end the draft."""

    def __init__(self, engine: LLMEngine, num_tokens: int, target_vocab: int) -> None:
        if engine.spec is not None:
            raise ValueError("draft model engine: must not speculate itself")
        self.engine = engine
        self.num_tokens = num_tokens
        self.target_vocab = target_vocab
        self._ids = itertools.count()

    @classmethod
    def load(cls, path: str, num_tokens: int, target: Tokenizer | None, target_vocab: int,
             model: ModelLoadConfig, max_num_seqs: int) -> DraftModelProposer:
        """Load the draft at ``path`` on the target's device and dtype, check its tokenizer, and
        give it a KV pool for ``max_num_seqs`` histories of its context length."""
        cfg = ModelLoadConfig(model=path, dtype=model.dtype, device=model.device,
                              max_model_len=model.max_model_len, enforce_eager=model.enforce_eager,
                              kernel_backend=model.kernel_backend)
        draft_model, tokenizer, ckpt = load_model_and_tokenizer(cfg)
        check_same_tokenizer(tokenizer, target, path)
        max_len = int(cfg.max_model_len or draft_model.max_position_embeddings)
        block = CacheConfig().block_size
        num_blocks = max_num_seqs * (-(-max_len // block) + 1)
        engine_cfg = EngineConfig(model=cfg, cache=CacheConfig(num_blocks=num_blocks),
                                  scheduler=SchedulerConfig(max_num_seqs=max_num_seqs,
                                                            max_num_batched_tokens=max(2048, max_len)))
        return cls(LLMEngine(engine_cfg, draft_model, tokenizer, checkpoint=ckpt), num_tokens, target_vocab)

    def propose_batch(self, histories: Sequence[Sequence[int]], limits: Sequence[int]) -> list[list[int]]:
        eng = self.engine
        ids: list[str | None] = []
        for history, limit in zip(histories, limits, strict=True):
            k = min(self.num_tokens, limit)
            if k <= 0 or len(history) + k > eng.max_model_len:
                ids.append(None)
                continue
            rid = f"draft-{next(self._ids)}"
            eng.add_request(rid, list(history), SamplingParams(temperature=0.0, max_tokens=k))
            ids.append(rid)
        done: dict[str, list[int]] = {}
        while eng.has_unfinished():
            for out in eng.step():
                if out.finished:
                    done[out.request_id] = list(out.outputs[0].token_ids) if out.outputs else []
        drafts = []
        for key in ids:
            draft = done.get(key, []) if key is not None else []
            cut = next((j for j, t in enumerate(draft) if t >= self.target_vocab), len(draft))
            drafts.append(draft[:cut])
        return drafts
