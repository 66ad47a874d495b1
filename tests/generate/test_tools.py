"""Tool calls over the echo runtime: the generic format, the grammar plan and the streaming parser, in milliseconds."""

from __future__ import annotations

import json

import pytest

from appliance.errors import InvalidInput
from appliance.generate.toolcalls import ToolCallParser, parse_output
from appliance.generate.tools import (
    MAX_PARALLEL_CALLS,
    OutputFormat,
    Tool,
    ToolChoice,
    ToolRequest,
    generic_history,
    plan_chat,
    tool_grammar,
)
from appliance.models.echo import EchoRuntime
from appliance.models.runtime import ChatMessage, GenerationParams, ToolCall

WEATHER = Tool(
    "get_weather",
    "Weather of a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool("get_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def events_of(parser: ToolCallParser, pieces) -> list:
    out = []
    for piece in pieces:
        out += parser.feed(piece)
    return out + parser.finish()


@pytest.mark.parametrize("size", [1, 2, 5, 11, 1000])
def test_the_parser_gives_the_same_calls_however_the_text_is_split(size):
    text = f"{CALL}\n{CALL.replace('Paris', 'Rome')}\n"
    parser = ToolCallParser({"get_weather"})
    events = events_of(parser, [text[i : i + size] for i in range(0, len(text), size)])
    assert [kind for kind, _ in events] == ["call", "call"]  # the separating newlines are not content
    assert [json.loads(c.arguments) for c in parser.calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert parser.unparseable == 0 and len({c.id for c in parser.calls}) == 2


def test_text_streams_and_a_possible_tag_is_held_back():
    parser = ToolCallParser({"get_weather"})
    assert parser.feed("It is sunny <tool") == [("content", "It is sunny ")]  # "<tool" may become a tag
    assert parser.feed("s> are fine") == [("content", "<tools> are fine")]
    assert parser.finish() == [] and parser.calls == []


def test_blocks_that_are_not_calls_stay_text_and_are_counted():
    content, calls, bad = parse_output(
        '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call> ok', {"get_weather"}
    )
    assert calls == [] and bad == 1 and "rm_rf" in content
    content, calls, bad = parse_output("<tool_call>{not json</tool_call>", {"get_weather"})
    assert calls == [] and bad == 1 and content == "<tool_call>{not json</tool_call>"
    content, calls, bad = parse_output(
        '<tool_call>\n{"name": "get_weather", "arguments": {"ci', {"get_weather"}
    )
    assert calls == [] and bad == 1  # cut off by max_tokens: unclosed
    # "parameters" (Llama 3.1's key) and arguments given as a JSON string are calls too.
    _, calls, _ = parse_output(
        '<tool_call>{"name": "get_weather", "parameters": {"city": "Oslo"}}</tool_call>', {"get_weather"}
    )
    assert json.loads(calls[0].arguments) == {"city": "Oslo"}
    _, calls, _ = parse_output(
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Bonn\\"}"}</tool_call>',
        {"get_weather"},
    )
    assert json.loads(calls[0].arguments) == {"city": "Bonn"}
    content, calls, _ = parse_output(f"Let me check.\n{CALL}", {"get_weather"})
    assert content == "Let me check." and len(calls) == 1


def test_a_streamed_echo_of_a_call_is_parsed_token_by_token():
    """Echo repeats the user's words one per token: the parser sees a real stream's splits."""
    echo = EchoRuntime("echo", context_length=512)
    req = ToolRequest((WEATHER, CLOCK), ToolChoice("auto"))
    plan = plan_chat([ChatMessage("user", CALL)], req, None, native=echo.native_tools, constrained=False)
    assert plan.grammar is None and plan.tools is None and plan.tool_format == "generic"
    assert "get_time" in plan.messages[0].content and plan.messages[0].role == "system"
    prompt = echo.render_chat(plan.messages)
    words = len(CALL.split())
    parser = ToolCallParser(plan.tool_names)
    events = []
    for delta in echo.stream(prompt, GenerationParams(max_tokens=words, temperature=0)):
        events += parser.feed(delta.text)
    events += parser.finish()
    assert [k for k, _ in events] == ["call"] and json.loads(parser.calls[0].arguments) == {"city": "Paris"}


def test_history_with_calls_and_results_in_the_generic_format():
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    history = [
        ChatMessage("user", "Weather in Paris and Rome?"),
        ChatMessage("assistant", "", (call, ToolCall("call_2", "get_weather", '{"city": "Rome"}'))),
        ChatMessage("tool", "21C", tool_call_id="call_1"),
        ChatMessage("tool", "25C", tool_call_id="call_2"),
    ]
    out = generic_history(history)
    assert [m.role for m in out] == ["user", "assistant", "user"]
    assert out[1].content.count("<tool_call>") == 2 and '"city": "Rome"' in out[1].content
    assert out[2].content == "<tool_response>\n21C\n</tool_response>\n<tool_response>\n25C\n</tool_response>"
    rendered = EchoRuntime("echo").render_chat(out)
    assert "<|tool|>" not in rendered and "<tool_response>" in rendered
    with pytest.raises(InvalidInput, match="arguments must be a JSON object"):
        ToolCall("c", "f", "[1]").arguments_dict()
    with pytest.raises(InvalidInput, match="tool_call_id"):
        ChatMessage("tool", "x")


def test_grammar_plans_follow_tool_choice():
    both = (WEATHER, CLOCK)
    required = tool_grammar(ToolRequest(both, ToolChoice("required"), parallel=False)).gbnf
    assert "root ::= call\n" in required + "\n" and "text ::=" not in required
    named = tool_grammar(ToolRequest(both, ToolChoice("function", "get_time"))).gbnf
    assert '\\"get_time\\"' in named and '\\"get_weather\\"' not in named
    auto = tool_grammar(ToolRequest(both, ToolChoice("auto"))).gbnf
    assert "root ::= calls | text" in auto and auto.count('"\\n" call') == MAX_PARALLEL_CALLS - 1
    with_json = tool_grammar(ToolRequest(both, ToolChoice("auto")), OutputFormat("json_object")).gbnf
    assert "root ::= calls | json" in with_json
    none = plan_chat(
        [ChatMessage("user", "hi")],
        ToolRequest(both, ToolChoice("none")),
        None,
        native=False,
        constrained=True,
    )
    assert none.grammar is None and none.tool_names == () and none.messages == (ChatMessage("user", "hi"),)
    native = plan_chat([ChatMessage("user", "hi")], ToolRequest(both), None, native=True, constrained=True)
    assert native.tools is not None and native.tools[0]["function"]["name"] == "get_weather"
    assert native.tool_format == "native" and native.grammar is not None


def test_a_backend_taking_tools_as_fields_gets_no_hint_naming_our_format():
    """Our `<tool_call>` hint helps small local models; a remote server applies its own model's format."""
    ask = [ChatMessage("user", "What is the weather in Paris?")]
    local = plan_chat(ask, ToolRequest((WEATHER,)), None, native=True, constrained=True)
    assert any("<tool_call>" in m.content for m in local.messages if m.role == "system")
    remote = plan_chat(ask, ToolRequest((WEATHER,)), None, native=True, constrained=True, api_tools=True)
    assert remote.messages == tuple(ask) and remote.tools is not None and remote.grammar is not None


@pytest.mark.parametrize(
    "make, param",
    [
        (lambda: ToolRequest((WEATHER, WEATHER)), "tools[1].function.name"),
        (lambda: ToolRequest((Tool("bad name!"),)), "tools[0].function.name"),
        (lambda: ToolRequest((WEATHER,), ToolChoice("function", "nope")), "tool_choice"),
        (lambda: ToolRequest((Tool("f", "", {"type": "string"}),)), "tools[0].function.parameters"),
        (
            lambda: ToolRequest((Tool("f", "", {"type": "object", "minProperties": 1}),)),
            "tools[0].function.parameters",
        ),
        (lambda: ToolRequest(()), "tools"),
        (lambda: ToolChoice("sometimes"), "tool_choice"),
        (lambda: OutputFormat("yaml"), "response_format"),
    ],
)
def test_bad_tool_requests_name_the_parameter(make, param):
    with pytest.raises(InvalidInput) as info:
        make()
    assert info.value.extra["param"] == param


def test_tool_call_json_nested_past_the_decoders_limit_is_refused_not_a_crash():
    deep = "[" * 5_000 + "]" * 5_000
    with pytest.raises(InvalidInput, match="nest too deeply"):
        ToolCall("c", "f", '{"a": ' + deep + "}").arguments_dict()
    # A model's output is not a request: such a block is just not a call.
    content, calls, bad = parse_output(
        f'<tool_call>{{"name": "get_weather", "arguments": {deep}}}</tool_call>', {"get_weather"}
    )
    assert calls == [] and bad
