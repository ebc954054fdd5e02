"""Request bodies the load generator sends: token-id prompts stay the default, and
``--text-prompts`` sends strings, which servers such as llama-cpp-python's (``prompt: str | list[str]``)
require on ``/v1/completions``."""

from __future__ import annotations

from grokd.benchmarks.loadgen import Target
from grokd.benchmarks.workload import synthetic


def test_completions_body_carries_token_ids_by_default() -> None:
    item = synthetic(1, 5, 3, seed=1)[0]
    body = Target("http://127.0.0.1:1/v1", "m").body(item)
    assert body["prompt"] == item.prompt and all(isinstance(t, int) for t in body["prompt"])
    assert body["max_tokens"] == 3 and body["ignore_eos"] and body["stream"]


def test_text_prompts_and_extra_body_reach_the_request() -> None:
    item = synthetic(1, 6, 4, token_ids=False, seed=1)[0]
    target = Target("http://127.0.0.1:1/v1/", "smollm2", extra_body={"logit_bias": {"2": -100.0}})
    body = target.body(item)
    assert isinstance(body["prompt"], str) and len(body["prompt"].split()) == 6
    assert body["logit_bias"] == {"2": -100.0}
    assert target.url() == "http://127.0.0.1:1/v1/completions"
