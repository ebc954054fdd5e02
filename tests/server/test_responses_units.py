"""The Responses pieces that need no model: the store (ownership, expiry, reopening) and the
translation of input items into template messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from grokd.server.errors import APIError
from grokd.server.registry import ServedModel
from grokd.server.responses.conversation import input_messages, tool_choice, wire_error
from grokd.server.responses.protocol import InputItem
from grokd.server.responses.store import ResponseStore

MODEL = ServedModel(id="m", version="1", fingerprint="f", system_fingerprint="fp_0", created=0)


def test_store_scopes_by_owner_expires_and_survives_reopening(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path, retention_s=100)
    store.put("resp_1", "owner-a", {"id": "resp_1"}, [{"role": "user", "content": "hi"}], now=1000)
    assert store.get("resp_1", "owner-a", now=1050).conversation == [{"role": "user", "content": "hi"}]
    assert store.get("resp_1", "owner-b", now=1050) is None
    assert store.get("resp_1", "owner-a", now=1100) is None  # expired
    store.put("resp_2", "owner-a", {"id": "resp_2"}, [], now=2000)  # purges resp_1
    store.close()
    again = ResponseStore(tmp_path, retention_s=100)
    assert again.get("resp_2", "owner-a", now=2001).body == {"id": "resp_2"}
    assert not again.delete("resp_2", "owner-b") and again.delete("resp_2", "owner-a")
    assert again.get("resp_2", "owner-a", now=2001) is None


def test_input_items_become_template_messages() -> None:
    items = [
        InputItem(role="developer", content="Be brief."),
        InputItem(type="message", role="user", content=[{"type": "input_text", "text": "Weather?"}]),
        InputItem(type="reasoning", summary=[]),
        InputItem(type="function_call", call_id="call_1", name="w", arguments='{"city":"Paris"}'),
        InputItem(type="function_call", call_id="call_2", name="w", arguments='{"city":"Rome"}'),
        InputItem(type="function_call_output", call_id="call_1", output="sunny"),
    ]
    messages = input_messages(items, MODEL)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {"role": "user", "content": "Weather?"}
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["call_1", "call_2"]  # one assistant turn
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert input_messages("hi", MODEL) == [{"role": "user", "content": "hi"}]


def test_bad_items_name_the_param() -> None:
    with pytest.raises(APIError) as err:
        input_messages([InputItem(role="user", content=[{"type": "input_image"}])], MODEL)
    assert err.value.param == "input[0].content[0]" and err.value.code == "unsupported_modality"
    with pytest.raises(APIError) as err:
        input_messages([InputItem(type="computer_call")], MODEL)
    assert err.value.param == "input[0].type"
    with pytest.raises(APIError) as err:
        tool_choice({"type": "mcp"})
    assert err.value.param == "tool_choice"
    assert tool_choice({"type": "function", "name": "w"}) == {"type": "function", "function": {"name": "w"}}
    renamed = wire_error(APIError(400, "tools[0].function.name: bad", param="tools[0].function.name"))
    assert renamed.param == "tools[0].name" and renamed.message == "tools[0].name: bad"


def _writer():
    from grokd.engine.sampling_params import SamplingParams
    from grokd.server.generation.types import GenerationPlan
    from grokd.server.responses.events import ResponseEventWriter
    from grokd.server.responses.output import ResponseEnvelope
    from grokd.server.responses.protocol import ResponsesRequest

    plan = GenerationPlan("resp_1", "m", "", [1, 2], SamplingParams(), None, None, None, "input")
    return ResponseEventWriter(ResponseEnvelope("resp_1", 0, "m", ResponsesRequest(model="m", input="hi")), plan)


def _events(chunks: list[bytes]) -> list[dict]:
    import json

    out = []
    for frame in b"".join(chunks).decode().split("\n\n")[:-1]:
        head, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        out.append(event)
    return out


def test_event_writer_text_then_call_then_failure() -> None:
    """Indices and item ids stay consistent across a message closed by a tool call; a failure
    after the stream started is ``error`` then ``response.failed`` with the items so far."""
    from grokd.server.generation.types import TextDelta, ToolCallOutput
    from grokd.server.streaming import StreamFailure

    w = _writer()
    chunks = w.start() + w.text(TextDelta(0, "Let me check. ")) + w.text(TextDelta(0, ""))
    chunks += w.calls([ToolCallOutput("call_1", "weather", '{"city":"Paris"}')])
    chunks.append(w.failure(StreamFailure("engine died")))
    events = _events(chunks)
    types = [e["type"] for e in events]
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "error", "response.failed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    message_id = events[2]["item"]["id"]
    assert {e.get("item_id", e.get("item", {}).get("id")) for e in events[2:8]} == {message_id}
    assert all(e["output_index"] == 0 for e in events[2:8]) and all(e["output_index"] == 1 for e in events[8:12])
    assert events[7]["item"]["content"][0]["text"] == "Let me check. "
    call = events[11]["item"]
    assert call["type"] == "function_call" and call["call_id"] == "call_1" and call["status"] == "completed"
    assert events[8]["item"]["arguments"] == "" and events[9]["delta"] == call["arguments"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"] == "engine died"
    assert [o["type"] for o in failed["output"]] == ["message", "function_call"]


def test_event_writer_empty_reply_is_one_empty_message() -> None:
    w = _writer()
    events = _events(w.start() + w.finished("stop"))
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added", "response.content_part.added", "response.output_text.done",
        "response.content_part.done", "response.output_item.done"]
    assert events[-1]["item"]["content"][0]["text"] == ""
