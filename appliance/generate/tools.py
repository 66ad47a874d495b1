"""Function calling and JSON output for a chat: the tools offered, how they reach the prompt, and the grammar.

Tools reach the model through its own chat template when the template renders them (Qwen2.5:
`<tools>` in the system prompt, calls as `<tool_call>` blocks, results as `<tool_response>`), else
in the generic format below, which is the same Hermes-style format written into plain messages, so
one parser (appliance.generate.toolcalls) reads both. With constrained decoding the grammar makes
every call parse: `required` and a named tool force one call (or, with parallel calls, up to
MAX_PARALLEL_CALLS) of an offered tool with arguments valid for its schema; `auto` lets the model
choose between that and text (text that does not start with `<`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.errors import InvalidInput
from appliance.generate.toolcalls import CLOSE, OPEN
from appliance.models.grammar import Grammar, GrammarBuilder, check_schema, json_grammar
from appliance.models.runtime import ChatMessage

MAX_TOOLS = 128
MAX_PARALLEL_CALLS = 8
# OpenAI's rule for function names, plus "." (BFCL's and many internal APIs' names have dots).
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CHOICES = ("none", "auto", "required", "function")
_EMPTY_OBJECT = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: dict(_EMPTY_OBJECT))

    def spec(self) -> dict:
        """OpenAI's tool object, as chat templates and the generic prompt show it."""
        function: dict = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: str = "auto"  # none | auto | required | function
    name: str | None = None  # the function, for mode "function"

    def __post_init__(self) -> None:
        if self.mode not in CHOICES or (self.mode == "function") != (self.name is not None):
            raise InvalidInput(
                'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                param="tool_choice",
            )


@dataclass(frozen=True, slots=True)
class ToolRequest:
    tools: tuple[Tool, ...]
    choice: ToolChoice = ToolChoice()
    parallel: bool = True

    def __post_init__(self) -> None:
        if not self.tools:
            raise InvalidInput("tools must not be empty (leave it out instead)", param="tools")
        if len(self.tools) > MAX_TOOLS:
            raise InvalidInput(f"at most {MAX_TOOLS} tools", param="tools")
        seen: set[str] = set()
        for i, tool in enumerate(self.tools):
            if not _NAME.fullmatch(tool.name):
                raise InvalidInput(
                    f"tools[{i}].function.name must be 1-64 letters, digits, _ . -",
                    param=f"tools[{i}].function.name",
                )
            if tool.name in seen:
                raise InvalidInput(f"two tools are named {tool.name!r}", param=f"tools[{i}].function.name")
            seen.add(tool.name)
            params = f"tools[{i}].function.parameters"
            if check_schema(tool.parameters, params).get("type") != "object":
                raise InvalidInput(f"{params} must be a JSON schema of type object", param=params)
        if self.choice.mode == "function" and self.choice.name not in seen:
            raise InvalidInput(
                f"tool_choice names {self.choice.name!r}, which is not in tools", param="tool_choice"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tools)


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """response_format: free text, any JSON object, or JSON valid for a schema."""

    kind: str = "text"  # text | json_object | json_schema
    schema: dict | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("text", "json_object", "json_schema"):
            raise InvalidInput(
                f"response_format type {self.kind!r} is not supported (text, json_object, json_schema)",
                param="response_format",
            )
        if self.kind == "json_schema" and not isinstance(self.schema, dict):
            raise InvalidInput(
                "response_format json_schema needs json_schema.schema", param="response_format"
            )


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """What a chat with tools or JSON output sends to the runtime, and what to read back."""

    messages: tuple[ChatMessage, ...]
    tools: list[dict] | None  # for a template that renders them; None otherwise
    grammar: Grammar | None
    tool_names: tuple[str, ...]  # calls of these are parsed out of the output; empty: plain text
    tool_format: str  # "native" | "generic" | "none"


def plan_chat(
    messages: Sequence[ChatMessage],
    tools: ToolRequest | None,
    output: OutputFormat | None,
    *,
    native: bool,
    constrained: bool,
    api_tools: bool = False,
) -> ChatPlan:
    """The messages, template tools and grammar for one chat request (constrained: with a grammar).

    `api_tools`: the backend takes tools as request fields and applies its own model's format (a
    remote OpenAI-compatible server), so nothing in the messages may name ours."""
    output = output or OutputFormat()
    offering = tools is not None and tools.choice.mode != "none"
    history = list(messages) if native else generic_history(messages)
    if output.kind != "text":
        history = _with_system(history, _json_instruction(output))
    if offering and not native:
        assert tools is not None
        history = _with_system(history, generic_tool_prompt(tools))
    elif offering and tools is not None and tools.choice.mode == "auto" and not api_tools:
        # Native templates list the tools but leave the choice implicit; small models (Qwen2.5-Coder
        # 1.5B) then describe the call in a code fence instead of making it.
        history = _with_system(history, AUTO_HINT)
    grammar = None
    if constrained:
        if offering:
            assert tools is not None
            grammar = tool_grammar(tools, output)
        elif output.kind != "text":
            grammar = json_grammar(output.schema if output.kind == "json_schema" else None)
    return ChatPlan(
        messages=tuple(history),
        tools=[t.spec() for t in tools.tools] if offering and native and tools else None,
        grammar=grammar,
        tool_names=tools.names if offering and tools else (),
        tool_format=("native" if native else "generic") if offering else "none",
    )


def tool_grammar(tools: ToolRequest, output: OutputFormat | None = None) -> Grammar:
    """Calls of the offered tools (the named one only, for a named choice); with `auto`, or text instead."""
    b = GrammarBuilder()
    alternatives = []
    for i, tool in enumerate(tools.tools):
        if tools.choice.mode == "function" and tool.name != tools.choice.name:
            continue
        args = b.schema(tool.parameters, f"tool-{i}-args", f"tools[{i}].function.parameters")
        head = b.literal('{"name": ' + json.dumps(tool.name, ensure_ascii=False) + ', "arguments": ')
        alternatives.append(b.rule(f"tool-{i}-call", f'{head} {args} "}}"'))
    call = b.rule(
        "call", f"{b.literal(OPEN + chr(10))} ({' | '.join(alternatives)}) {b.literal(chr(10) + CLOSE)}"
    )
    calls = call
    if tools.parallel:
        # Up to MAX_PARALLEL_CALLS calls, one per line: a bound, or a small model could repeat its
        # call until max_tokens.
        tail = ""
        for _ in range(MAX_PARALLEL_CALLS - 1):
            tail = f'("\\n" {call} {tail})?' if tail else f'("\\n" {call})?'
        calls = b.rule("calls", f"{call} {tail}")
    # What a backend without GBNF (a remote OpenAI-compatible server) is sent instead.
    native: dict = {
        "tool_choice": (
            {"type": "function", "function": {"name": tools.choice.name}}
            if tools.choice.mode == "function"
            else tools.choice.mode
        )
    }
    if not tools.parallel:
        native["parallel_tool_calls"] = False
    if tools.choice.mode != "auto":
        return b.build(calls, "tools", native=native)
    if output is not None and output.kind != "text":
        text = b.schema(
            output.schema if output.kind == "json_schema" else {"type": "object"}, "json", "response_format"
        )
        native["response_format"] = _response_format(output)
    else:
        text = b.rule("text", r"[^<`{\x00] [\x01-\U0010FFFF]*")
    return b.build(f"{calls} | {text}", "tools", native=native)


def _response_format(output: OutputFormat) -> dict:
    """OpenAI's response_format for a JSON output."""
    if output.kind == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": output.name or "output", "schema": output.schema},
        }
    return {"type": "json_object"}


AUTO_HINT = (
    "When one of the functions fits the request, reply only with <tool_call></tool_call> blocks; "
    "when none fits, answer in plain text without calling any."
)


def generic_tool_prompt(tools: ToolRequest) -> str:
    """The system prompt of the generic format (Qwen2.5's own wording, so models tuned on Hermes-style
    tool use recognise it)."""
    lines = [
        "# Tools",
        "",
        "You may call one or more functions to assist with the user query.",
        "",
        "You are provided with function signatures within <tools></tools> XML tags:",
        "<tools>",
        *(json.dumps(t.spec(), ensure_ascii=False) for t in tools.tools),
        "</tools>",
        "",
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:",
        "<tool_call>",
        '{"name": <function-name>, "arguments": <args-json-object>}',
        "</tool_call>",
    ]
    if tools.choice.mode == "auto":
        lines += ["", AUTO_HINT]
    elif tools.choice.mode == "required":
        lines += ["", "You must call at least one of the functions."]
    elif tools.choice.mode == "function":
        lines += ["", f"You must call the function {tools.choice.name}."]
    if not tools.parallel:
        lines += ["Call at most one function."]
    return "\n".join(lines)


def generic_history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """A history with tool calls and results as plain messages (for templates that do not render
    them): calls as `<tool_call>` blocks in the assistant's text, each run of tool results as one
    user message of `<tool_response>` blocks, as Qwen2.5's template writes them."""
    out: list[ChatMessage] = []
    responses: list[str] = []
    for m in messages:
        if m.role == "tool":
            responses.append(f"<tool_response>\n{m.content}\n</tool_response>")
            continue
        if responses:
            out.append(ChatMessage("user", "\n".join(responses)))
            responses = []
        if m.tool_calls:
            blocks = [
                f"{OPEN}\n{json.dumps({'name': c.name, 'arguments': c.arguments_dict()}, ensure_ascii=False)}\n{CLOSE}"
                for c in m.tool_calls
            ]
            text = "\n".join(([m.content] if m.content else []) + blocks)
            out.append(ChatMessage("assistant", text))
        else:
            out.append(m)
    if responses:
        out.append(ChatMessage("user", "\n".join(responses)))
    return out


def _json_instruction(output: OutputFormat) -> str:
    if output.kind == "json_schema":
        return "Answer with one JSON object valid against this JSON schema:\n" + json.dumps(
            output.schema, ensure_ascii=False
        )
    return "Answer with one JSON object."


def _with_system(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    """`text` appended to the system message (or in a new one first): templates take one system message."""
    if messages and messages[0].role == "system":
        first = messages[0]
        return [ChatMessage("system", f"{first.content}\n\n{text}" if first.content else text), *messages[1:]]
    return [ChatMessage("system", text), *messages]
