"""/v1/responses end to end: the default SmolLM2 model behind a real uvicorn server on 127.0.0.1
with a state directory, driven by openai-python's ``client.responses`` and parsed by its types.
The last test restarts the server on the same state directory (same loaded engine, fresh app,
state and store) and continues a stored conversation there."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from grokd.engine.chat_template import render_chat
from grokd.server.config import ServerConfig
from grokd.server.live import LiveConfig
from grokd.server.state import ServerState
from tests.e2e.search_stub import COMET, serve_searx
from tests.server.serving import LiveServer, serve_state, wait_ready
from tests.server.stub_http import StubServer

KEY = "sk-resp-key-00000000"
OTHER = "sk-resp-other-000000"
SLOW = "sk-resp-slow-0000000"
QUESTION = "What is the capital of France? Answer in one sentence."
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}




def _config(state_dir: Path) -> ServerConfig:
    return ServerConfig(dtype="float32", max_model_len=1024, state_dir=str(state_dir),
                        api_key=[KEY, OTHER, f"{SLOW} rpm=1"])


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("responses-state")


@pytest.fixture(scope="module")
def searx() -> StubServer:
    """A SearXNG stand-in on 127.0.0.1: what the ``web_search`` tool searches."""
    with serve_searx() as stub:
        yield stub


@pytest.fixture(scope="module")
def engine(smollm2_gguf, state_dir: Path):
    from grokd.engine.async_engine import AsyncEngine

    eng = AsyncEngine(_config(state_dir).engine_config())
    eng.start()
    yield eng
    eng.shutdown()


def _serve(engine, state_dir: Path, searx: StubServer) -> LiveServer:
    state = ServerState.build(_config(state_dir), engine, manage_engine=False)
    state.live_config = LiveConfig(state_dir=state_dir, searxng_url=searx.base, allowed_hosts=(searx.hostport,))
    live = serve_state(state)
    wait_ready(live.url, 120)
    return live


@pytest.fixture(scope="module")
def server(engine, state_dir: Path, searx: StubServer) -> LiveServer:
    live = _serve(engine, state_dir, searx)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model(server: LiveServer) -> str:
    return server.state.registry.default.id


def _prompt_tokens(server: LiveServer, model: str, messages: list[dict], tools: list[dict] | None = None) -> int:
    """What /v1/tokenize-text counts for the prompt the template renders from ``messages``."""
    engine = server.state.engine
    text = render_chat(messages, template=engine.model_info.chat_template, tokenizer=engine.tokenizer,
                       tools=tools, add_generation_prompt=True)
    r = httpx.post(server.base_url + "/tokenize-text", json={"model": model, "text": text},
                   headers={"Authorization": f"Bearer {KEY}"})
    r.raise_for_status()
    return len(r.json()["token_ids"])


def test_text_response_and_usage(client: OpenAI, server: LiveServer, model: str) -> None:
    r = client.responses.create(model=model, input=QUESTION, max_output_tokens=24, temperature=0,
                                metadata={"run": "e2e"})
    assert r.id.startswith("resp_") and r.object == "response" and r.model == model
    assert r.status in ("completed", "incomplete") and r.store is True and r.metadata == {"run": "e2e"}
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and "Paris" in r.output_text
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"
    u = r.usage
    assert u.input_tokens == _prompt_tokens(server, model, [{"role": "user", "content": QUESTION}])
    assert u.total_tokens == u.input_tokens + u.output_tokens and 0 < u.output_tokens <= 24
    assert u.output_tokens_details.reasoning_tokens == 0 and u.input_tokens_details.cached_tokens >= 0
    # the same question through chat completions: the same prompt, the same greedy answer
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=24, temperature=0)
    assert chat.choices[0].message.content == r.output_text
    assert chat.usage.prompt_tokens == u.input_tokens
    assert chat.usage.completion_tokens_details.reasoning_tokens == 0
    assert chat.usage.prompt_tokens_details.text_tokens == chat.usage.prompt_tokens
    assert chat.usage.prompt_tokens_details.image_tokens == 0


def test_json_schema_parse(client: OpenAI, model: str) -> None:
    class City(BaseModel):
        name: str
        country: str

    r = client.responses.parse(model=model, input="Describe Paris.", text_format=City, max_output_tokens=60,
                               temperature=0)
    assert isinstance(r.output_parsed, City)
    assert r.text.format.type == "json_schema"


def test_function_call_round_trip(client: OpenAI, server: LiveServer, model: str) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model=model, input=[ask], tools=[WEATHER], tool_choice="required",
                                    max_output_tokens=60, temperature=0)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature_c": 21}'}
    # stateless: the whole conversation sent back
    stateless = client.responses.create(model=model, input=[ask, *[o.model_dump() for o in first.output], result],
                                        tools=[WEATHER], tool_choice="none", max_output_tokens=12, temperature=0)
    assert stateless.output[0].type == "message" and stateless.output_text
    # stored: only the result, after previous_response_id
    stored = client.responses.create(model=model, previous_response_id=first.id, input=[result], tools=[WEATHER],
                                     tool_choice="none", max_output_tokens=12, temperature=0)
    assert stored.output_text == stateless.output_text
    assert stored.usage.input_tokens == stateless.usage.input_tokens > first.usage.input_tokens
    bad = {"type": "function", "name": "bad name!", "parameters": {"type": "object"}}
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=model, input="hi", tools=[bad])
    assert exc.value.param == "tools[0].name"


def test_stream_snapshot_equals_non_streamed(client: OpenAI, model: str) -> None:
    settings = dict(model=model, input="Say hello.", max_output_tokens=48, temperature=0.7,
                    extra_body={"seed": 11})  # openai-python's responses signature has no seed
    plain = client.responses.create(**settings)
    assert plain.status == "completed", plain.output_text  # a short greeting ends on its own
    with client.responses.stream(**settings) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.output_text.delta" in types and "response.output_text.done" in types
    assert final.output_text == plain.output_text and final.status == plain.status
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert [o.type for o in final.output] == [o.type for o in plain.output]
    assert client.responses.retrieve(final.id).output_text == final.output_text  # streamed ones are stored too


def test_streamed_function_call(client: OpenAI, model: str) -> None:
    with client.responses.stream(model=model, input="What is the weather in Paris?", tools=[WEATHER],
                                 tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
                                 temperature=0) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    (call,) = [o for o in final.output if o.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)


def test_retrieve_delete_and_ownership(client: OpenAI, server: LiveServer, model: str) -> None:
    r = client.responses.create(model=model, input="Hi!", max_output_tokens=4)
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.usage.output_tokens == r.usage.output_tokens
    other = OpenAI(base_url=server.base_url, api_key=OTHER, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as exc:
        other.responses.create(model=model, input="Hi", previous_response_id=r.id, max_output_tokens=2)
    assert exc.value.code == "previous_response_not_found" and exc.value.param == "previous_response_id"
    unstored = client.responses.create(model=model, input="Hi!", max_output_tokens=2, store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    raw = httpx.delete(f"{server.base_url}/responses/{r.id}", headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_delete_body(client: OpenAI, server: LiveServer, model: str) -> None:
    r = client.responses.create(model=model, input="Hi!", max_output_tokens=2)
    raw = httpx.delete(f"{server.base_url}/responses/{r.id}", headers={"Authorization": f"Bearer {KEY}"})
    assert raw.status_code == 200 and raw.json() == {"id": r.id, "object": "response", "deleted": True}


def test_logprobs(client: OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input=QUESTION, max_output_tokens=6, temperature=0, top_logprobs=2,
                                include=["message.output_text.logprobs"])
    lps = r.output[0].content[0].logprobs
    assert len(lps) == r.usage.output_tokens and all(len(lp.top_logprobs) == 2 for lp in lps)
    assert "".join(lp.token for lp in lps) == r.output_text


def test_errors_are_openai_classes(client: OpenAI, server: LiveServer, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=model, input="hi", top_logprobs=9)
    assert exc.value.param == "top_logprobs"
    image = [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                          {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=model, input=image)
    assert exc.value.param == "input[0].content[1]" and exc.value.code == "unsupported_modality"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=model, input=QUESTION, max_output_tokens=5000)
    assert exc.value.code == "context_length_exceeded" and exc.value.param == "input"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model=model, input="hi", tools=[{"type": "code_interpreter"}])
    assert exc.value.param == "tools[0].type" and "code_interpreter" in exc.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="grok-1", input="hi")
    slow = OpenAI(base_url=server.base_url, api_key=SLOW, max_retries=0)
    slow.responses.create(model=model, input="hi", max_output_tokens=1)
    with pytest.raises(openai.RateLimitError):
        slow.responses.create(model=model, input="hi", max_output_tokens=1)


def test_models_list_aliases_and_context_length(server: LiveServer) -> None:
    r = httpx.get(server.base_url + "/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    (card,) = r["data"]
    assert card["context_length"] == 1024 and f"{card['id']}-latest" in card["aliases"]


def test_web_search_tool_on_live_search(client: OpenAI, searx: StubServer, model: str) -> None:
    question = "Is comet Zorvex visible tonight?"
    plain = client.responses.create(model=model, input=question, max_output_tokens=2)
    r = client.responses.create(model=model, input=question, tools=[{"type": "web_search"}], max_output_tokens=2)
    search, message = r.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert message.type == "message"
    (citation,) = message.content[0].annotations
    assert citation.type == "url_citation" and citation.url == COMET["url"] and citation.title == COMET["title"]
    assert r.usage.num_sources_used == 1 and r.usage.num_server_side_tools_used == 1  # type: ignore[attr-defined]
    assert r.usage.input_tokens > plain.usage.input_tokens + 10  # the search result went into the prompt
    assert searx.hits("/search") >= 1
    with client.responses.stream(model=model, input=question, tools=[{"type": "web_search"}],
                                 max_output_tokens=2) as stream:
        events = list(stream)
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["web_search_call", "message"]
    last = events[-1].response  # response.completed or response.incomplete: the whole response
    assert [o.type for o in last.output] == ["web_search_call", "message"]
    assert last.output[1].content[0].annotations[0].url == COMET["url"]


def test_reasoning_settings_and_items_are_accepted(client: OpenAI, model: str) -> None:
    r = client.responses.create(
        model=model, max_output_tokens=2, reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"], service_tier="auto", user="u-1", parallel_tool_calls=False,
        input=[{"type": "reasoning", "id": "rs_1", "summary": []},
               {"role": "developer", "content": "Be brief."},
               {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}])
    assert r.reasoning.effort == "low" and r.parallel_tool_calls is False and r.user == "u-1"


def test_three_turns_and_a_restart(client: OpenAI, server: LiveServer, engine, state_dir: Path, searx: StubServer,
                                   model: str) -> None:
    """previous_response_id over three turns; the third after the server restarted on the same state dir."""
    first = client.responses.create(model=model, instructions="Be brief.", input="My name is Ada.",
                                    max_output_tokens=8, temperature=0)
    second = client.responses.create(model=model, instructions="Be brief.", previous_response_id=first.id,
                                     input="What is my name?", max_output_tokens=8, temperature=0)
    assert second.previous_response_id == first.id and second.instructions == "Be brief."
    seen = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "What is my name?"}]
    assert second.usage.input_tokens == _prompt_tokens(server, model, seen)
    assert second.usage.input_tokens_details.cached_tokens > 0  # the first turn's prompt, from the prefix cache
    server.stop()
    again = _serve(engine, state_dir, searx)
    try:
        client2 = OpenAI(base_url=again.base_url, api_key=KEY, max_retries=0)
        assert client2.responses.retrieve(second.id).output_text == second.output_text
        # no instructions this time: the earlier ones are not carried over (OpenAI's rule)
        third = client2.responses.create(model=model, previous_response_id=second.id, input="Thanks!",
                                         max_output_tokens=4, temperature=0)
        assert third.instructions is None
        history = [*seen[1:], {"role": "assistant", "content": second.output_text},
                   {"role": "user", "content": "Thanks!"}]
        assert third.usage.input_tokens == _prompt_tokens(again, model, history)
    finally:
        again.stop()
