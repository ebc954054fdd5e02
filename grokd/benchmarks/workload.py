"""Request workloads for ``grokd bench serve``: synthetic prompts or a ShareGPT-format file.

Synthetic prompts default to random token ids so every server sees exactly ``input_len`` prompt
tokens whatever its tokenizer (OpenAI ``/v1/completions`` accepts token-id prompts; grokd and
vLLM both do). Text mode is for chat endpoints and servers that only take strings.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

_WORDS = ("the quick brown fox jumps over a lazy dog while seven bright stars "
          "watch quiet rivers flow past old stone bridges").split()


@dataclass
class WorkItem:
    prompt: str | list[int]
    prompt_tokens: int  # exact for token ids, an estimate for text
    max_tokens: int


def _length(rng: random.Random, mean: int, range_ratio: float) -> int:
    """Uniform in [mean·(1-r), mean·(1+r)], at least 1: a simple, reproducible spread."""
    if range_ratio <= 0:
        return max(1, mean)
    lo = max(1, int(mean * (1 - range_ratio)))
    hi = max(lo, int(mean * (1 + range_ratio)))
    return rng.randint(lo, hi)


def synthetic(
    n: int,
    input_len: int,
    output_len: int,
    *,
    input_range: float = 0.0,
    output_range: float = 0.0,
    token_ids: bool = True,
    vocab: tuple[int, int] = (100, 1000),
    seed: int = 0,
) -> list[WorkItem]:
    """``n`` requests with lengths drawn around ``input_len``/``output_len``."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        plen = _length(rng, input_len, input_range)
        olen = _length(rng, output_len, output_range)
        if token_ids:
            prompt: str | list[int] = [rng.randrange(*vocab) for _ in range(plen)]
        else:  # about one token per common English word
            prompt = " ".join(rng.choice(_WORDS) for _ in range(plen))
        items.append(WorkItem(prompt, plen, olen))
    return items


def sharegpt(path: str | Path, n: int, output_len: int | None = None, seed: int = 0) -> list[WorkItem]:
    """First human turn of each conversation as the prompt; the reply's length (≈ chars/4
    tokens) as max_tokens unless ``output_len`` fixes it. Conversations are sampled with a seed."""
    data = json.loads(Path(path).read_text())
    pairs = []
    for conv in data:
        turns = conv.get("conversations") or conv.get("conversation") or []
        if len(turns) < 2:
            continue
        human, reply = turns[0].get("value", ""), turns[1].get("value", "")
        if human and reply:
            pairs.append((human, reply))
    if not pairs:
        raise ValueError(f"{path}: no conversations with a prompt and a reply")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    items = []
    for i in range(n):
        human, reply = pairs[i % len(pairs)]
        olen = output_len or max(1, len(reply) // 4)
        items.append(WorkItem(human, max(1, len(human) // 4), olen))
    return items
