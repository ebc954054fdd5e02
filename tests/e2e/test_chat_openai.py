"""Chat completions end to end: the default SmolLM2 model behind a real uvicorn server on
127.0.0.1, driven by the real openai-python client and parsed by its own types."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from grokd.server.config import ServerConfig
from tests.server.serving import LiveServer, start_server

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def server(smollm2_gguf) -> LiveServer:
    live = start_server(ServerConfig(dtype="float32", max_model_len=1024, api_key=["sk-e2e-key-000000"]))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-e2e-key-000000", max_retries=0)


@pytest.fixture(scope="module")
def model(server: LiveServer) -> str:
    return server.state.registry.default.id


@pytest.fixture(scope="module")
def greedy(client: OpenAI, model: str):
    return client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24)


def _tokenize_count(server: LiveServer, model: str, text: str) -> int:
    r = httpx.post(server.base_url + "/tokenize-text", json={"model": model, "text": text},
                   headers={"Authorization": "Bearer sk-e2e-key-000000"})
    r.raise_for_status()
    return len(r.json()["token_ids"])


def test_non_stream(greedy, model: str) -> None:
    assert greedy.id.startswith("chatcmpl-") and greedy.object == "chat.completion"
    assert greedy.model == model and greedy.system_fingerprint.startswith("fp_")
    (choice,) = greedy.choices
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = greedy.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0
    assert u.prompt_tokens_details.cached_tokens == 0  # the first request this server sees


def test_prompt_tokens_equal_tokenize_text_of_rendered_prompt(server: LiveServer, greedy, model: str) -> None:
    from grokd.engine.chat_template import render_chat

    engine = server.state.engine
    rendered = render_chat(QUESTION, template=engine.model_info.chat_template, tokenizer=engine.tokenizer,
                           add_generation_prompt=True)
    assert greedy.usage.prompt_tokens == _tokenize_count(server, model, rendered)
    tok = httpx.post(server.base_url + "/tokenize-text", json={"model": model, "text": "Hello world"},
                     headers={"Authorization": "Bearer sk-e2e-key-000000"}).json()["token_ids"]
    assert bytes(b for t in tok for b in t["token_bytes"]) == b"Hello world"
    assert "".join(t["string_token"] for t in tok) == "Hello world"


def test_stream_with_include_usage(client: OpenAI, greedy, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [greedy.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == greedy.usage.completion_tokens
    assert last.usage.prompt_tokens == greedy.usage.prompt_tokens


def test_stream_wire_format_ends_with_done(server: LiveServer, model: str) -> None:
    body = {"model": model, "messages": QUESTION, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body,
                      headers={"Authorization": "Bearer sk-e2e-key-000000"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream") and r.headers["x-request-id"]
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_developer_role_is_a_system_message(client: OpenAI, model: str) -> None:
    as_dev = client.chat.completions.create(model=model, max_tokens=1, messages=[
        {"role": "developer", "content": "Be brief."}, *QUESTION])
    as_sys = client.chat.completions.create(model=model, max_tokens=1, messages=[
        {"role": "system", "content": "Be brief."}, *QUESTION])
    assert as_dev.usage.prompt_tokens == as_sys.usage.prompt_tokens


def test_n2(client: OpenAI, model: str) -> None:
    r = client.chat.completions.create(model=model, messages=QUESTION, n=2, max_tokens=8, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens <= 16 and r.usage.completion_tokens >= 2
    stream = client.chat.completions.create(model=model, messages=QUESTION, n=2, max_tokens=4, stream=True)
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_logprobs_top_logprobs(client: OpenAI, model: str) -> None:
    r = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=6, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0 and isinstance(item.bytes, list) and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert item.token == item.top_logprobs[0].token  # greedy picks the top token
    assert "".join(i.token for i in content) == r.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=QUESTION, top_logprobs=3)
    assert exc.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=QUESTION, logprobs=True, top_logprobs=21)
    assert exc.value.param == "top_logprobs"


def test_stop_strings(client: OpenAI, greedy, model: str) -> None:
    full = greedy.choices[0].message.content
    word = "Paris"
    assert word in full
    r = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24, stop=[word])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(word)]
    r = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=24, stop=word)
    assert word not in r.choices[0].message.content


def test_seed_reproducible_and_engine_extras(client: OpenAI, model: str) -> None:
    def run(seed: int) -> str:
        r = client.chat.completions.create(model=model, messages=QUESTION, temperature=1.0, seed=seed,
                                           max_completion_tokens=12, extra_body={"top_k": 40, "min_p": 0.01})
        return r.choices[0].message.content

    assert run(42) == run(42)


def test_repeated_long_prompt_reports_cached_tokens(client: OpenAI, model: str) -> None:
    system = " ".join(f"Rule {i}: always be concise and polite." for i in range(40))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
    first = client.chat.completions.create(model=model, messages=messages, max_tokens=2)
    second = client.chat.completions.create(model=model, messages=messages, max_tokens=2)
    assert first.usage.prompt_tokens > 300
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens > 0


def test_chat_errors(client: OpenAI, model: str) -> None:
    image = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=[image])
    assert exc.value.param == "messages[0].content[1]" and exc.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=QUESTION, max_tokens=5000)
    assert exc.value.code == "context_length_exceeded" and "1024" in exc.value.message
    assert "5000" in exc.value.message
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=[])
    assert exc.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=QUESTION, extra_body={"functions": [{"name": "f"}]})
    assert exc.value.param == "functions"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "x"}])
    assert exc.value.param.startswith("messages[0]")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="grok-1", messages=QUESTION)


def test_live_search_from_local_index_with_citations(client: OpenAI, server: LiveServer, model: str) -> None:
    doc = {"url": "https://intra.example/outage-42", "title": "Payment outage",
           "text": "The Zorblax payment outage in Lisbon was resolved at 14:05 UTC today.", "author": "@status"}
    r = httpx.post(server.base_url + "/live/documents", json=[doc],
                   headers={"Authorization": "Bearer sk-e2e-key-000000"})
    assert r.status_code == 200, r.text
    question = [{"role": "user", "content": "Is the Zorblax payment outage in Lisbon resolved?"}]
    plain = client.chat.completions.create(model=model, messages=question, max_tokens=2)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=question, max_tokens=2,
        extra_body={"search_parameters": {"mode": "on", "sources": [{"type": "local"}]}})
    assert raw.headers["x-grokd-live-context"] == "used"
    resp = raw.parse()
    assert resp.citations == [doc["url"]]  # type: ignore[attr-defined]
    assert resp.usage.num_sources_used == 1  # type: ignore[attr-defined]
    assert resp.usage.prompt_tokens > plain.usage.prompt_tokens + 10  # the document went into the prompt
    stream = client.chat.completions.create(
        model=model, messages=question, max_tokens=2, stream=True, stream_options={"include_usage": True},
        extra_body={"search_parameters": {"mode": "on", "sources": [{"type": "local"}]}})
    chunks = list(stream)
    assert chunks[-1].citations == [doc["url"]] and chunks[-1].usage.num_sources_used == 1  # type: ignore
    # xAI's tool spelling passes protocol validation and reaches server.live the same way
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=question, max_tokens=2,
        extra_body={"tools": [{"type": "live_search", "mode": "on", "sources": [{"type": "local"}]}]})
    assert raw.headers["x-grokd-live-context"] == "used"
    assert raw.parse().citations == [doc["url"]]  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=question,
                                       extra_body={"search_parameters": {"mode": "on", "max_search_results": 99}})
    assert exc.value.param == "search_parameters.max_search_results"


def test_completions_text_prompts_echo_logprobs(client: OpenAI, server: LiveServer, model: str) -> None:
    prompts = ["The capital of France is", "One, two, three,"]
    r = client.completions.create(model=model, prompt=prompts, max_tokens=4, temperature=0, echo=True, logprobs=2)
    assert r.object == "text_completion" and len(r.choices) == 2
    assert r.usage.prompt_tokens == sum(_tokenize_count(server, model, p) for p in prompts)
    for choice in sorted(r.choices, key=lambda c: c.index):
        prompt = prompts[choice.index]
        lp = choice.logprobs
        assert choice.text.startswith(prompt) and "".join(lp.tokens) == choice.text
        assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
        assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
        assert all(len(d) >= 2 for d in lp.top_logprobs[1:])


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_response_format_json_object(client: OpenAI, model: str) -> None:
    import json

    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Describe Paris as JSON."}],
                                       response_format={"type": "json_object"}, max_tokens=80, temperature=0)
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_tool_call_required_and_streamed(client: OpenAI, model: str) -> None:
    import json

    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL], tool_choice="required",
                                       max_tokens=60, temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    stream = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL], tool_choice="required",
                                            max_tokens=60, temperature=0, stream=True)
    calls = [tc for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].index == 0 and calls[0].function.name == "get_weather"
    bad = {"type": "function", "function": {"name": "bad name!", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=ask, tools=[bad])
    assert exc.value.param == "tools[0].function.name"


def test_tool_round_trip(client: OpenAI, model: str) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    bare = client.chat.completions.create(model=model, messages=ask, max_tokens=1)
    shown = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL], tool_choice="none",
                                           max_tokens=1)
    assert shown.usage.prompt_tokens > bare.usage.prompt_tokens + 20  # the tool list reached the model
    first = client.chat.completions.create(model=model, messages=ask, tools=[WEATHER_TOOL],
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                           max_tokens=60, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    follow = [*ask, first.choices[0].message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "sunny"}'}]
    final = client.chat.completions.create(model=model, messages=follow, tools=[WEATHER_TOOL], tool_choice="none",
                                           max_tokens=20, temperature=0)
    assert final.choices[0].message.content and final.choices[0].finish_reason in ("stop", "length")
    assert final.usage.prompt_tokens > shown.usage.prompt_tokens  # the call and its result are in the prompt


def test_parse_with_pydantic_model(client: OpenAI, model: str) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        country: str
        population_millions: float

    r = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Describe Paris."}],
                                      response_format=City, max_tokens=80, temperature=0)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City)
