"""Chat templates: SmolLM2's GGUF template renders like transformers' apply_chat_template, the
sandbox refuses unsafe access with a clear error, and the plain Grok-1 format is as documented."""

from __future__ import annotations

import pytest

from grokd.engine.chat_template import PLAIN_STOP_STRINGS, render_chat

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke about 日本 😀."},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_matches_transformers(
    smollm2_tokenizer, hf_smollm2_tokenizer, messages, add_generation_prompt
) -> None:
    ours = render_chat(
        messages,
        template=smollm2_tokenizer.chat_template,
        tokenizer=smollm2_tokenizer,
        add_generation_prompt=add_generation_prompt,
    )
    ref = hf_smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert ours == ref


def test_content_parts_are_joined(smollm2_tokenizer) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}]
    plain = [{"role": "user", "content": "Hello"}]
    t = smollm2_tokenizer.chat_template
    assert render_chat(parts, template=t, tokenizer=smollm2_tokenizer) == render_chat(
        plain, template=t, tokenizer=smollm2_tokenizer
    )


def test_special_tokens_tools_and_kwargs_reach_the_template(smollm2_tokenizer) -> None:
    template = (
        "{{ bos_token }}|{{ eos_token }}|{{ tools | length }}|{{ tools[0].function.name }}|{{ flavour }}"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    out = render_chat([], template=template, tokenizer=smollm2_tokenizer, tools=tools, flavour="x")
    assert out == "<|im_start|>|<|im_end|>|1|f|x"


def test_tojson_does_not_html_escape() -> None:
    out = render_chat([{"role": "user", "content": "<a & 'b'> é"}], template="{{ messages[0] | tojson }}")
    assert out == '{"role": "user", "content": "<a & \'b\'> é"}'


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_sandbox_blocks_unsafe_access(template: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        render_chat([{"role": "user", "content": "x"}], template=template)


def test_template_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="invalid chat template"):
        render_chat([], template="{% if %}")
    with pytest.raises(ValueError, match="roles must alternate"):
        render_chat([], template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ValueError, match="failed to render"):
        render_chat([], template="{{ messages[0]['content'] + 1 }}")


def test_strftime_now_is_available() -> None:
    assert len(render_chat([], template="{{ strftime_now('%Y') }}")) == 4


def test_plain_grok1_template() -> None:
    messages = [
        {"role": "system", "content": "You are Grok."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "name": "weather", "tool_call_id": "c1", "content": "sunny, 21C"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Current weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    out = render_chat(messages, template=None, tokenizer=None, tools=tools)
    assert out == (
        "System: You are Grok.\n\n"
        'Tools you can call (reply with a JSON object {"name": ..., "arguments": {...}}):\n'
        '- weather: Current weather. Parameters (JSON schema): {"type": "object", "properties": '
        '{"city": {"type": "string"}}}\n\n'
        "Human: What's the weather in Paris?\n\n"
        'Assistant: {"name": "weather", "arguments": {"city": "Paris"}}\n\n'
        "Tool (weather/c1): sunny, 21C\n\n"
        "Assistant:"
    )


def test_plain_template_simple_and_without_generation_prompt() -> None:
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert render_chat(msgs, template=None) == "Human: Hi\n\nAssistant: Hello.\n\nAssistant:"
    assert render_chat(msgs, template=None, add_generation_prompt=False) == "Human: Hi\n\nAssistant: Hello."
    assert "\n\nHuman:" in PLAIN_STOP_STRINGS
    with pytest.raises(ValueError, match="unsupported role"):
        render_chat([{"role": "wizard", "content": "x"}], template=None)


def test_grok2_template_renders_the_reference_texts(grok2_tiny_reference) -> None:
    from grokd.engine.chat_template import GROK2_TEMPLATE

    for case in grok2_tiny_reference["fp32"]["chat"]:
        assert render_chat(case["messages"], template=GROK2_TEMPLATE) == case["text"]
    no_prompt = render_chat([{"role": "user", "content": "Hi"}], template=GROK2_TEMPLATE, add_generation_prompt=False)
    assert no_prompt == "Human: Hi<|separator|>\n\n"


def test_grok2_template_tools_calls_and_results() -> None:
    """Tools are listed in the system turn; earlier calls are written in the grok1 tool-call format
    (a JSON object after ``Assistant:``) and results as ``Tool (name/id):`` turns, each turn closed
    by the separator."""
    from grokd.engine.chat_template import GROK2_TEMPLATE

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now.",
                                               "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": "18C"},
    ]
    text = render_chat(messages, template=GROK2_TEMPLATE, tools=tools)
    assert text == (
        "System: Be brief.\n\nTools you can call (reply with a JSON object {\"name\": ..., \"arguments\": {...}}):\n"
        "- get_weather: Weather now. Parameters (JSON schema): {\"type\": \"object\"}<|separator|>\n\n"
        "Human: Paris?<|separator|>\n\n"
        "Assistant: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}<|separator|>\n\n"
        "Tool (get_weather/c1): 18C<|separator|>\n\n"
        "Assistant:")
