"""xAI's gRPC API end to end: the default SmolLM2 model behind a real server on 127.0.0.1 with
``grpc_port`` set (the grpc.aio server in uvicorn's loop), driven by the official ``xai-sdk``
client, unchanged, over an insecure channel."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import BaseModel
from xai_sdk import Client
from xai_sdk.chat import system, tool, tool_result, user
from xai_sdk.proto import chat_pb2, chat_pb2_grpc
from xai_sdk.search import SearchParameters, rss_source

from grokd.server.config import ServerConfig
from grokd.server.live import LiveConfig
from grokd.server.state import ServerState
from tests.server.serving import LiveServer, free_port, serve_state, start_process, wait_ready, wait_until
from tests.server.stub_http import StubServer, serve_stub

KEY = "sk-grpc-e2e-key-0000"
TOKENIZE_ONLY = "sk-grpc-tokenize-only-0"
BLOCKED = "sk-grpc-blocked-key-000"
ONE_PER_MINUTE = "sk-grpc-one-rpm-key-00"
QUESTION = "What is the capital of France? Answer in one sentence."
FEED = (Path(__file__).resolve().parents[1] / "server" / "live" / "data" / "news.rss").read_bytes()
FERRY = "Is the ferry to the island running again after the storm?"
WEATHER = tool("get_weather", "Get the current weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@pytest.fixture(scope="module")
def feeds() -> Iterator[StubServer]:
    """An RSS host on 127.0.0.1, allow-listed for live search."""
    with serve_stub() as stub:
        stub.routes["/news.rss"] = lambda r: (200, {"content-type": "application/rss+xml"}, FEED)
        yield stub


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory, feeds: StubServer) -> LiveServer:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"{KEY} name=main\n{TOKENIZE_ONLY} endpoints=/v1/tokenize-text\n{BLOCKED} blocked=true\n"
                    f"{ONE_PER_MINUTE} rpm=1\n")
    from grokd.engine.async_engine import AsyncEngine

    config = ServerConfig(dtype="float32", max_model_len=1024, api_key_file=str(keys), grpc_port=free_port())
    state = ServerState.build(config, AsyncEngine(config.engine_config()))
    state.live_config = LiveConfig(allowed_hosts=(feeds.hostport,))
    live = serve_state(state)
    wait_ready(live.url, 300)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def host(server: LiveServer) -> str:
    return f"127.0.0.1:{server.state.config.grpc_port}"


@pytest.fixture(scope="module")
def client(host: str) -> Client:
    return Client(api_host=host, api_key=KEY, use_insecure_channel=True, timeout=120)


@pytest.fixture(scope="module")
def model(server: LiveServer) -> str:
    return server.state.registry.default.id


def _http(server: LiveServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)



@pytest.fixture(scope="module")
def sampled(client: Client, model: str):
    chat = client.chat.create(model=model, messages=[user(QUESTION)], seed=7, temperature=0.7, max_tokens=24)
    return chat.sample()


def test_sample(sampled, model: str, server: LiveServer) -> None:
    assert "Paris" in sampled.content
    assert sampled.role == "ROLE_ASSISTANT" and sampled.finish_reason in ("REASON_STOP", "REASON_MAX_LEN")
    assert sampled.id.startswith("chatcmpl-")
    assert sampled.system_fingerprint == server.state.registry.default.system_fingerprint
    u = sampled.usage
    assert u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_text_tokens == u.prompt_tokens and u.reasoning_tokens == 0
    assert u.cached_prompt_text_tokens == 0  # the first request this server sees


def test_usage_counts_equal_http_tokenize_text(sampled, server: LiveServer, model: str, client: Client) -> None:
    from grokd.engine.chat_template import render_chat

    engine = server.state.engine
    rendered = render_chat([{"role": "user", "content": QUESTION}], template=engine.model_info.chat_template,
                           tokenizer=engine.tokenizer, add_generation_prompt=True)
    http_tokens = _http(server, "/tokenize-text", {"model": model, "text": rendered}).json()["token_ids"]
    assert sampled.usage.prompt_tokens == len(http_tokens)
    grpc_tokens = client.tokenize.tokenize_text(rendered, model)
    assert [t.token_id for t in grpc_tokens] == [t["token_id"] for t in http_tokens]
    assert [t.string_token for t in grpc_tokens] == [t["string_token"] for t in http_tokens]
    assert b"".join(t.token_bytes for t in client.tokenize.tokenize_text("Hello world", model)) == b"Hello world"


def test_stream_assembles_the_sampled_text(client: Client, model: str, sampled) -> None:
    chat = client.chat.create(model=model, messages=[user(QUESTION)], seed=7, temperature=0.7, max_tokens=24)
    pieces, last = [], None
    for response, chunk in chat.stream():
        pieces.append(chunk.content)
        last = response
    assert "".join(pieces) == sampled.content == last.content
    assert last.finish_reason == sampled.finish_reason
    assert last.usage.completion_tokens == sampled.usage.completion_tokens
    assert last.usage.prompt_tokens == sampled.usage.prompt_tokens
    assert last.usage.cached_prompt_text_tokens > 0  # the same prompt again: prefix cache hit


def test_sample_batch_n(client: Client, model: str) -> None:
    chat = client.chat.create(model=model, messages=[user("Name a colour.")], temperature=1.0, max_tokens=8,
                              seed=3)
    with pytest.warns(PendingDeprecationWarning):
        responses = chat.sample_batch(3)
    assert len(responses) == 3 and len(responses[0].proto.outputs) == 3
    assert sorted(o.index for o in responses[0].proto.outputs) == [0, 1, 2]
    assert all(r.content for r in responses)
    assert all(r.finish_reason in ("REASON_STOP", "REASON_MAX_LEN") for r in responses)
    assert 3 <= responses[0].usage.completion_tokens <= 3 * 8  # usage covers all three choices


def test_tool_call_round_trip(client: Client, model: str) -> None:
    chat = client.chat.create(model=model, messages=[user("What is the weather in Paris?")], tools=[WEATHER],
                              tool_choice="required", parallel_tool_calls=False, max_tokens=64, temperature=0)
    response = chat.sample()
    assert response.finish_reason == "REASON_TOOL_CALLS"
    (call,) = response.tool_calls
    assert call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    chat.append(response)
    chat.append(tool_result(json.dumps({"temperature_c": 18}), tool_call_id=call.id))
    follow = client.chat.create(model=model, messages=list(chat.messages), tools=[WEATHER], tool_choice="none",
                                max_tokens=16, temperature=0)
    answer = follow.sample()
    assert answer.finish_reason in ("REASON_STOP", "REASON_MAX_LEN") and not answer.tool_calls
    assert answer.content


class City(BaseModel):
    name: str
    country: str


def test_parse_pydantic_model(client: Client, model: str) -> None:
    chat = client.chat.create(model=model, messages=[system("Reply in JSON."), user("Paris is a city in which country?")],
                              max_tokens=64, temperature=0)
    response, city = chat.parse(City)
    assert isinstance(city, City) and city.name
    assert json.loads(response.content) == city.model_dump()


def test_defer(client: Client, model: str) -> None:
    chat = client.chat.create(model=model, messages=[user(QUESTION)], max_tokens=12, temperature=0)
    response = chat.defer()
    assert response.content and response.finish_reason in ("REASON_STOP", "REASON_MAX_LEN")
    assert response.usage.completion_tokens > 0


def test_stored_completion_and_previous_response_id(client: Client, model: str) -> None:
    chat = client.chat.create(model=model, messages=[user("My name is Ada. Say hi.")], max_tokens=12,
                              temperature=0, store_messages=True)
    first = chat.sample()
    (stored,) = client.chat.get_stored_completion(first.id)
    assert stored.content == first.content and stored.id == first.id
    follow = client.chat.create(model=model, messages=[user("What is my name?")], max_tokens=12, temperature=0,
                                previous_response_id=first.id)
    second = follow.sample()
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the stored turn was prepended
    assert client.chat.delete_stored_completion(first.id) == first.id
    with pytest.raises(grpc.RpcError) as exc:
        client.chat.get_stored_completion(first.id)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    streamed = client.chat.create(model=model, messages=[user("Say hi.")], max_tokens=8, temperature=0,
                                  store_messages=True)
    *_, (last, _chunk) = streamed.stream()
    (kept,) = client.chat.get_stored_completion(last.id)
    assert kept.content == last.content and kept.usage.total_tokens == last.usage.total_tokens


def test_stored_response_from_the_http_responses_api(client: Client, model: str, server: LiveServer) -> None:
    made = _http(server, "/responses", {"model": model, "input": "Say hi.", "max_output_tokens": 8,
                                        "temperature": 0}).json()
    (stored,) = client.chat.get_stored_completion(made["id"])
    assert stored.content == made["output"][0]["content"][0]["text"]
    assert stored.usage.completion_tokens == made["usage"]["output_tokens"]


def test_models_and_api_key(client: Client, model: str, server: LiveServer) -> None:
    (listed,) = client.models.list_language_models()
    served = server.state.registry.default
    assert listed.name == model and list(listed.aliases) == served.aliases
    assert listed.max_prompt_length == 1024 and listed.system_fingerprint == served.system_fingerprint
    assert client.models.get_language_model(model).name == model
    with pytest.raises(grpc.RpcError) as exc:
        client.models.get_language_model("no-such-model")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-model" in exc.value.details()
    info = client.auth.get_api_key_info()
    assert info.redacted_api_key == "sk-g...0000" and info.name == "main" and not info.api_key_blocked
    assert info.api_key_id == server.state.auth.keys[0].key_id


def test_live_search_citations(client: Client, model: str, feeds: StubServer) -> None:
    chat = client.chat.create(model=model, messages=[user(FERRY)], max_tokens=2,
                              search_parameters=SearchParameters(mode="on",
                                                                 sources=[rss_source([feeds.base + "/news.rss"])]))
    response = chat.sample()
    assert response.citations[0] == "https://gazette.example/2026/11/24/ferry-resumes"
    assert len(response.citations) == 3 and response.usage.num_sources_used == 3
    streamed = client.chat.create(model=model, messages=[user(FERRY)], max_tokens=2,
                                  search_parameters=SearchParameters(mode="on",
                                                                     sources=[rss_source([feeds.base + "/news.rss"])]))
    *_, (last, _chunk) = streamed.stream()
    assert list(last.citations) == list(response.citations)


def test_other_model_kinds_are_empty_and_calls_are_counted(client: Client, server: LiveServer) -> None:
    assert list(client.models.list_embedding_models()) == []
    assert list(client.models.list_image_generation_models()) == []
    metrics = httpx.get(server.url + "/metrics").text
    assert 'route="/xai_api.Chat/GetCompletion"' in metrics and 'method="GRPC"' in metrics


def test_deadline_exceeded_aborts_the_engine_request(host: str, model: str, server: LiveServer) -> None:
    engine = server.state.engine
    hasty = Client(api_host=host, api_key=KEY, use_insecure_channel=True, timeout=1.0)
    with pytest.raises(grpc.RpcError) as exc:
        hasty.chat.create(model=model, messages=[user("Write a very long story about a dragon.")],
                          max_tokens=900, temperature=1.0).sample()
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().num_running == 0, 5.0)


def test_wrong_key_is_unauthenticated(host: str, model: str) -> None:
    bad = Client(api_host=host, api_key="sk-wrong-key-00000000", use_insecure_channel=True)
    with pytest.raises(grpc.RpcError) as exc:
        bad.chat.create(model=model, messages=[user("hi")]).sample()
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert exc.value.details() == "Incorrect API key provided."


def test_key_acls_blocks_and_rate_limits(host: str, model: str) -> None:
    def as_key(key: str) -> Client:
        return Client(api_host=host, api_key=key, use_insecure_channel=True)

    limited = as_key(TOKENIZE_ONLY)
    assert limited.tokenize.tokenize_text("Hello", model)
    with pytest.raises(grpc.RpcError) as exc:
        limited.chat.create(model=model, messages=[user("hi")], max_tokens=2).sample()
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED and "/v1/chat/completions" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        as_key(BLOCKED).models.list_language_models()
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED and "blocked" in exc.value.details()
    once = as_key(ONE_PER_MINUTE)
    assert once.models.list_language_models()
    with pytest.raises(grpc.RpcError) as exc:
        once.models.list_language_models()
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "requests per minute" in exc.value.details()
    assert any(k == "retry-after-ms" and int(v) > 0 for k, v in exc.value.trailing_metadata())


def test_over_long_prompt_is_invalid_argument_with_the_http_message(client: Client, model: str,
                                                                    server: LiveServer) -> None:
    long = "word " * 1100
    with pytest.raises(grpc.RpcError) as exc:
        client.chat.create(model=model, messages=[user(long)], max_tokens=8).sample()
    http = _http(server, "/chat/completions", {"model": model, "messages": [{"role": "user", "content": long}],
                                               "max_tokens": 8})
    assert http.status_code == 400
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details() == http.json()["error"]["message"]
    assert "maximum context length is 1024 tokens" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        client.chat.create(model=model, messages=[user("hi")], reasoning_effort="low").sample()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reasoning_effort" in exc.value.details()


def test_full_queue_is_resource_exhausted(client: Client, model: str, server: LiveServer) -> None:
    scheduler = server.state.engine.config.scheduler
    bound = scheduler.max_queued_requests
    scheduler.max_queued_requests = 0  # the waiting queue is full from the first request on
    try:
        with pytest.raises(grpc.RpcError) as exc:
            client.chat.create(model=model, messages=[user("hi")], max_tokens=4).sample()
    finally:
        scheduler.max_queued_requests = bound
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in exc.value.details()


def _story(model: str, max_tokens: int) -> chat_pb2.GetCompletionsRequest:
    return chat_pb2.GetCompletionsRequest(
        model=model, max_tokens=max_tokens, temperature=1.0, seed=1,
        messages=[chat_pb2.Message(role=chat_pb2.MessageRole.ROLE_USER,
                                   content=[chat_pb2.Content(text="Write a very long story about a dragon.")])])


def test_cancelled_stream_frees_kv_blocks(host: str, model: str, server: LiveServer) -> None:
    engine = server.state.engine
    channel = grpc.insecure_channel(host)
    stub = chat_pb2_grpc.ChatStub(channel)
    request = _story(model, 900)
    before = engine.stats().generation_tokens_total
    stream = stub.GetCompletionChunk(request, metadata=(("authorization", f"Bearer {KEY}"),))
    got = 0
    for _ in stream:
        got += 1
        if got >= 3:
            break
    assert engine.stats().kv_blocks_used > 0 and engine.stats().num_running == 1
    stream.cancel()
    assert wait_until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().num_running == 0, 5.0)
    assert "grokd_kv_blocks_used 0.0" in httpx.get(server.url + "/metrics").text
    assert engine.stats().generation_tokens_total - before < 900  # aborted, not run to the end
    channel.close()


def test_drain_refuses_new_calls_with_unavailable(client: Client, model: str, server: LiveServer) -> None:
    """While draining, new RPCs answer UNAVAILABLE (xai-sdk's channel retries these); one that
    started before the drain finishes. Runs last: the state stays draining only for this test."""
    chat = client.chat.create(model=model, messages=[user("Write a long story about a dragon.")], max_tokens=24,
                              temperature=0)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(r=chat.sample()))
    t.start()
    assert wait_until(lambda: server.state.engine.stats().num_running == 1, 10.0)  # admitted and generating
    server.state.draining = True
    try:
        fresh = Client(api_host=f"127.0.0.1:{server.state.config.grpc_port}", api_key=KEY,
                       use_insecure_channel=True, channel_options=[("grpc.enable_retries", 0)])
        with pytest.raises(grpc.RpcError) as exc:
            fresh.models.list_language_models()
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in exc.value.details()
        t.join(60)
        assert result["r"].content
    finally:
        server.state.draining = False


def test_serve_cli_grpc_port_and_sigterm_drain() -> None:
    """``grokd serve --grpc-port``: the first SIGTERM refuses new RPCs with UNAVAILABLE while a
    stream that was running finishes, then the process exits 0."""
    grpc_port = free_port()
    proc = start_process(["--dtype", "float32", "--max-model-len", "512", "--drain-timeout", "60",
                          "--grpc-port", str(grpc_port)])
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.enable_retries", 0)])
    try:
        stub = chat_pb2_grpc.ChatStub(channel)
        model = httpx.get(proc.url + "/v1/models").json()["data"][0]["id"]
        stream = stub.GetCompletionChunk(_story(model, 16))
        first = next(stream)
        assert first.outputs[0].delta.role == chat_pb2.MessageRole.ROLE_ASSISTANT
        proc.terminate()
        assert wait_until(lambda: httpx.get(proc.url + "/ready").status_code == 503, 5.0)
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetCompletion(_story(model, 2))
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "draining" in exc.value.details()
        rest = list(stream)
        assert 0 < rest[-1].usage.completion_tokens <= 16 and rest[-1].usage.prompt_tokens > 0
        reasons = [o.finish_reason for c in rest for o in c.outputs if o.finish_reason]
        assert len(reasons) == 1
        assert proc.proc.wait(timeout=60) == 0
    finally:
        channel.close()
        proc.stop()
