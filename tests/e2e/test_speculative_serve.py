"""``grokd serve --speculative-config`` end to end: the default model behind a real server, a
grounded chat through openai-python, and the speculative figures in /metrics."""

from __future__ import annotations

import re

import httpx
import pytest
from openai import OpenAI

from grokd.server.config import ServerConfig
from tests.server.serving import LiveServer, start_server

PARAGRAPH = ("The museum opens at nine in the morning and closes at six in the evening. Tickets can be bought "
             "at the entrance or online, and children under twelve enter for free with an adult.")


@pytest.fixture(scope="module")
def server(smollm2_gguf) -> LiveServer:
    live = start_server(ServerConfig(max_model_len=1024, num_kv_blocks=128, speculative_config=(
        '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}')))
    yield live
    live.stop()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_grounded_chat_drafts_and_reports(server: LiveServer) -> None:
    client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    model = server.state.registry.default.id
    ask = f"Rewrite this paragraph exactly, changing only the word 'nine' to 'ten':\n\n{PARAGRAPH}"
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": ask}],
                                           temperature=0, max_tokens=48)
    assert "museum opens at" in reply.choices[0].message.content
    text = httpx.get(server.url + "/metrics").text
    drafted, accepted = metric(text, "grokd_spec_draft_tokens_total"), metric(text, "grokd_spec_accepted_tokens_total")
    assert drafted > 0 and accepted > 0.5 * drafted
    assert metric(text, "grokd_spec_acceptance_rate") == pytest.approx(accepted / drafted)
    assert metric(text, "grokd_spec_tokens_per_step") > 1.5
    # per sample: one finished sample, more than one token per step
    assert metric(text, "grokd_request_spec_acceptance_rate_count") == 1
    steps_sum = metric(text, "grokd_request_tokens_per_step_sum")
    assert metric(text, "grokd_request_tokens_per_step_count") == 1 and steps_sum > 1.5
