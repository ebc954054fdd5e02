"""Tool prompting for templates without tool support (SmolLM2's ChatML)."""

from __future__ import annotations

from grokd.engine.chat_template import render_chat
from grokd.engine.structured.prompting import inject_tools, template_supports_tools
from grokd.engine.structured.specs import HERMES_FORMAT
from grokd.engine.structured.tool_calls import parse_tool_output

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]


def test_round_trip_history_renders_calls_and_results():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    assert not template_supports_tools(CHATML)
    assert template_supports_tools(None)
    text = render_chat(inject_tools(msgs, TOOLS), template=CHATML)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou can call functions.")
    assert '"name": "get_weather"' in text and '<|im_start|>tool\n{"temp": 21}<|im_end|>' in text
    assistant = text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    calls = parse_tool_output(assistant, HERMES_FORMAT).tool_calls
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert text.endswith("<|im_start|>assistant\n")


def test_no_tools_leaves_plain_messages():
    msgs = [{"role": "user", "content": "hi"}]
    assert inject_tools(msgs, None) == msgs
