"""/v1/responses end to end through LangChain's ``ChatXAI`` (langchain-xai): the default SmolLM2
model behind a real uvicorn server on 127.0.0.1, reached by ``xai_api_base`` with
``use_responses_api=True``. ChatXAI builds on langchain-openai, so it sends the Responses API
request openai-python would; ``bind_tools([{"type": "web_search"}])`` switches it to /v1/responses
by itself and is answered from a SearXNG stand-in. Structured output works on the random-token
test model only because grokd constrains generation with the request's JSON schema."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_xai import ChatXAI
from pydantic import BaseModel

from grokd.server.config import ServerConfig
from grokd.server.live import LiveConfig
from grokd.server.state import ServerState
from tests.e2e.search_stub import COMET, serve_searx
from tests.server.serving import LiveServer, serve_state, wait_ready
from tests.server.stub_http import StubServer

KEY = "sk-langchain-key-0000"
SLOW = "sk-langchain-slow-000"
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def searx() -> StubServer:
    """A SearXNG stand-in on 127.0.0.1: what the ``web_search`` tool searches."""
    with serve_searx() as stub:
        yield stub


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory: pytest.TempPathFactory, searx: StubServer) -> LiveServer:
    from grokd.engine.async_engine import AsyncEngine

    state_dir: Path = tmp_path_factory.mktemp("langchain-state")
    config = ServerConfig(dtype="float32", max_model_len=1024, state_dir=str(state_dir), api_key=[KEY, f"{SLOW} rpm=1"])
    engine = AsyncEngine(config.engine_config())
    engine.start()
    state = ServerState.build(config, engine, manage_engine=False)
    state.live_config = LiveConfig(state_dir=state_dir, searxng_url=searx.base, allowed_hosts=(searx.hostport,))
    live = serve_state(state)
    wait_ready(live.url, 120)
    yield live
    live.stop()
    engine.shutdown()


@pytest.fixture(scope="module")
def llm(server: LiveServer) -> ChatXAI:
    return ChatXAI(model=server.state.registry.default.id, xai_api_base=server.base_url, xai_api_key=KEY,
                   use_responses_api=True, temperature=0, max_tokens=24, max_retries=0)


def test_invoke(llm: ChatXAI) -> None:
    msg = llm.invoke(QUESTION)
    assert isinstance(msg, AIMessage) and "Paris" in msg.text
    usage = msg.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert str(msg.id).startswith("resp_") or msg.response_metadata.get("id", "").startswith("resp_")


def test_stream_equals_invoke(llm: ChatXAI) -> None:
    chunks = list(llm.stream(QUESTION))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.text == llm.invoke(QUESTION).text
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] > 0


def test_structured_output(llm: ChatXAI) -> None:
    class City(BaseModel):
        name: str
        country: str

    # json_schema: sent as text.format, which grokd turns into a grammar over the sampled tokens
    structured = llm.model_copy(update={"max_tokens": 60}).with_structured_output(City, method="json_schema")
    city = structured.invoke("Describe Paris.")
    assert isinstance(city, City)


def test_web_search_tool(llm: ChatXAI, searx: StubServer) -> None:
    before = searx.hits("/search")
    msg = llm.bind_tools([{"type": "web_search"}]).invoke("Is comet Zorvex visible tonight?")
    assert isinstance(msg, AIMessage) and searx.hits("/search") > before
    blocks = msg.content if isinstance(msg.content, list) else []
    kinds = [b.get("type") for b in blocks if isinstance(b, dict)]
    assert "web_search_call" in kinds or any(k in ("server_tool_call", "server_tool_result") for k in kinds), kinds
    annotations = [a for b in blocks if isinstance(b, dict) for a in b.get("annotations", [])]
    assert any(a.get("url") == COMET["url"] for a in annotations), blocks


def test_errors_are_openai_classes(llm: ChatXAI, server: LiveServer) -> None:
    """ChatXAI raises openai-python's own classes for grokd's 400 and 429 (it sends through it)."""
    with pytest.raises(openai.BadRequestError) as exc:
        llm.model_copy(update={"max_tokens": 5000}).invoke(QUESTION)
    assert exc.value.code == "context_length_exceeded"
    slow = ChatXAI(model=server.state.registry.default.id, xai_api_base=server.base_url, xai_api_key=SLOW,
                   use_responses_api=True, max_tokens=1, max_retries=0)
    slow.invoke("hi")
    with pytest.raises(openai.RateLimitError):
        slow.invoke("hi")
