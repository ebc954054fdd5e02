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
