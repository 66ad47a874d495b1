"""OpenAI-compatible endpoints: models, chat completions, completions, embeddings."""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from appliance.api import sse
from appliance.api.admission import blocking
from appliance.api.errors import OPENAI_HANDLERS
from appliance.api.openai_schemas import ChatCompletionIn, CompletionIn, EmbeddingIn, refusal_of
from appliance.api.queueing import Opening, open_queued, unless_client_leaves
from appliance.core.access import Scope
from appliance.core.gateway import Gateway
from appliance.errors import ApplianceError, InvalidInput
from appliance.generate.toolcalls import ToolCallParser, parse_output
from appliance.generate.tools import OutputFormat, Tool, ToolChoice, ToolRequest
from appliance.models.runtime import ROLES, ChatMessage, GenerationParams, ToolCall

log = logging.getLogger(__name__)

# Which model served a chat and why (appliance/models/router.py RouteDecision.header).
ROUTE_HEADER = "x-appliance-route"


def _text(content, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInput(
                f"message content part of type {part.get('type')!r} is not supported; only text",
                param=f"messages[{i}].content[{j}]",
            )
        parts.append(part["text"])
    return "".join(parts)


def _messages(data: ChatCompletionIn) -> list[ChatMessage]:
    out = []
    for i, m in enumerate(data.messages):
        role = "system" if m.role == "developer" else m.role  # newer SDKs' name for the system role
        if role not in ROLES:
            raise InvalidInput(
                f"messages[{i}].role {m.role!r} is not supported ({', '.join(ROLES)}, developer)",
                param=f"messages[{i}].role",
            )
        for field in ("refusal", "audio", "function_call"):
            if getattr(m, field) is not None:
                raise InvalidInput(f"messages[{i}].{field} is not supported", param=f"messages[{i}].{field}")
        if m.annotations:
            raise InvalidInput(
                f"messages[{i}].annotations is not supported", param=f"messages[{i}].annotations"
            )
        if m.tool_calls and role != "assistant":
            raise InvalidInput("only assistant messages carry tool_calls", param=f"messages[{i}].tool_calls")
        if (m.tool_call_id is not None) != (role == "tool"):
            raise InvalidInput(
                "tool messages, and only they, carry tool_call_id", param=f"messages[{i}].tool_call_id"
            )
        calls = []
        for j, c in enumerate(m.tool_calls or ()):
            if c.type != "function":
                raise InvalidInput(
                    "tool call type must be function", param=f"messages[{i}].tool_calls[{j}].type"
                )
            calls.append(ToolCall(c.id, c.function.name, c.function.arguments))
        message = ChatMessage(role, _text(m.content, i), tuple(calls), m.tool_call_id)
        for call in calls:
            call.arguments_dict()  # refused here if not a JSON object, before anything queues
        out.append(message)
    return out


def _tools(data: ChatCompletionIn) -> ToolRequest | None:
    if not data.tools:
        if data.tool_choice not in (None, "none", "auto"):
            raise InvalidInput("tool_choice needs tools", param="tool_choice")
        return None
    tools = []
    for i, t in enumerate(data.tools):
        if t.type != "function":
            raise InvalidInput(f"tool type {t.type!r} is not supported (function)", param=f"tools[{i}].type")
        f = t.function
        parameters = {"type": "object", "properties": {}} if f.parameters is None else f.parameters
        tools.append(Tool(f.name, f.description or "", parameters))
    choice = data.tool_choice
    if choice is None:
        parsed = ToolChoice("auto")
    elif isinstance(choice, str):
        parsed = ToolChoice(choice if choice != "function" else "?")
    else:
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if (
            choice.get("type") != "function"
            or not isinstance(name, str)
            or set(choice) - {"type", "function"}
        ):
            raise InvalidInput(
                'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                param="tool_choice",
            )
        parsed = ToolChoice("function", name)
    return ToolRequest(tuple(tools), parsed, data.parallel_tool_calls is not False)


def _output(data: ChatCompletionIn) -> OutputFormat | None:
    rf = data.response_format
    if rf is None:
        return None
    if rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise InvalidInput(
                "response_format json_schema needs json_schema.schema", param="response_format"
            )
        return OutputFormat("json_schema", rf.json_schema.schema, rf.json_schema.name)
    if rf.json_schema is not None:
        raise InvalidInput("json_schema goes with type json_schema", param="response_format.json_schema")
    return OutputFormat(rf.type)


def _refuse_unsupported(data) -> None:
    refused = refusal_of(data)
    if refused is not None:
        raise InvalidInput(refused[1], param=refused[0])


def _call_json(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _params(max_tokens: int | None, temperature, top_p, stop, seed, n) -> GenerationParams:
    """The wire's fields as GenerationParams, which checks them (models/runtime.py)."""
    if n not in (None, 1):
        raise InvalidInput("only n=1 is supported", param="n")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=seed,
    )


@get("/models", sync_to_thread=False)
def list_models(gateway: NamedDependency[Gateway]) -> dict:
    return {"object": "list", "data": gateway.list_models()}


@post("/chat/completions", status_code=200, errors=(404, 503), streams=True, opt={"work": "generation"})
async def chat_completions(
    request: Request,
    caller: NamedDependency[Scope],
    gateway: NamedDependency[Gateway],
    data: JSONBody[ChatCompletionIn],
) -> Response | Stream:
    _refuse_unsupported(data)
    if not data.messages:
        raise InvalidInput("messages must not be empty", param="messages")
    messages = _messages(data)
    tools, output = _tools(data), _output(data)
    params = _params(
        data.max_completion_tokens or data.max_tokens,
        data.temperature,
        data.top_p,
        data.stop,
        data.seed,
        data.n,
    )
    decision = await blocking(gateway.route, data.model, messages, tools, caller)
    created, ident = int(time.time()), "chatcmpl-" + uuid.uuid4().hex[:24]
    if not data.stream:
        opened, done = await unless_client_leaves(
            request, lambda cancel: gateway.chat(caller, decision, messages, tools, output, params, cancel)
        )
        names = opened.extra.tool_names
        message: dict = {"role": "assistant", "content": done.text, "refusal": None}
        finish = done.finish_reason
        if names:
            content, calls, _ = parse_output(done.text, names)
            message["content"] = content
            if calls:
                message["tool_calls"] = [_call_json(c) for c in calls]
                finish = "tool_calls"
        return Response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": opened.served.name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": _usage(done.prompt_tokens, done.completion_tokens),
            },
            headers={ROUTE_HEADER: opened.decision.header()},
        )
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    cancel = threading.Event()
    opening = await open_queued(
        lambda on_position: gateway.open_chat(decision, messages, tools, output, params, cancel, on_position),
        cancel,
    )
    # Known now unless the request still waits (for a load or a slot): then the header has the
    # decision before any fallback, and each chunk's `model` says which model served.
    served_by = decision
    if opening.queued_at is None:
        served_by = opening.result().decision
    model_name = served_by.model

    def chunk(delta: dict, finish: str | None) -> dict:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def tool_chunks(parser: ToolCallParser, events) -> list[bytes]:
        """OpenAI's tool-call deltas: the call's index, id, type and name first, then its arguments."""
        out = []
        for kind, value in events:
            if kind == "content":
                out.append(sse.data(chunk({"content": value}, None)))
                continue
            index = parser.calls.index(value)
            head = {
                "index": index,
                "id": value.id,
                "type": "function",
                "function": {"name": value.name, "arguments": ""},
            }
            out.append(sse.data(chunk({"tool_calls": [head]}, None)))
            out.append(
                sse.data(
                    chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": value.arguments}}]}, None
                    )
                )
            )
        return out

    async def events() -> AsyncIterator[bytes]:
        nonlocal model_name
        started = False
        parser = None
        async for kind, value in _relay(caller, gateway, None, opening, cancel, "chat"):
            if kind == "queue":
                yield sse.comment(f"queue position {value}")
                continue
            if kind == "error":
                yield sse.error_data(value)
                return
            if kind == "opened":
                model_name = value.served.name
                names = value.extra.tool_names
                parser = ToolCallParser(names) if names else None
                continue
            if not started:
                started = True
                yield sse.data(chunk({"role": "assistant", "content": ""}, None))
            if kind == "delta" and parser is not None:
                for frame in tool_chunks(parser, parser.feed(value.text)):
                    yield frame
                if value.finish_reason is not None:
                    for frame in tool_chunks(parser, parser.finish()):
                        yield frame
                    yield sse.data(chunk({}, "tool_calls" if parser.calls else value.finish_reason))
            elif kind == "delta":
                yield sse.data(chunk({"content": value.text} if value.text else {}, value.finish_reason))
            elif include_usage:
                yield sse.data(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model_name,
                        "choices": [],
                        "usage": _usage(value.prompt_tokens, value.completion_tokens),
                    }
                )
        yield sse.data("[DONE]")

    return Stream(
        events(), media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, ROUTE_HEADER: served_by.header()}
    )


@post("/completions", status_code=200, errors=(404, 503), streams=True, opt={"work": "generation"})
async def completions(
    request: Request,
    caller: NamedDependency[Scope],
    gateway: NamedDependency[Gateway],
    data: JSONBody[CompletionIn],
) -> Response | Stream:
    _refuse_unsupported(data)
    prompts = [data.prompt] if isinstance(data.prompt, str) else data.prompt
    if len(prompts) != 1:
        raise InvalidInput("exactly one prompt is supported per request", param="prompt")
    if data.echo:
        raise InvalidInput("echo is not supported", param="echo")
    params = _params(data.max_tokens, data.temperature, data.top_p, data.stop, data.seed, data.n)
    runtime = await blocking(gateway.runtime_for, data.model)
    prompt = prompts[0]
    created, ident = int(time.time()), "cmpl-" + uuid.uuid4().hex[:24]
    if not data.stream:
        done = await _generate(request, caller, gateway, runtime, prompt, params, "completions")
        return Response(
            {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": runtime.name,
                "choices": [
                    {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}
                ],
                "usage": _usage(done.prompt_tokens, done.completion_tokens),
            }
        )
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    opening, cancel = await _open(gateway, runtime, prompt, params)

    async def events() -> AsyncIterator[bytes]:
        async for kind, value in _relay(caller, gateway, runtime, opening, cancel, "completions"):
            if kind == "queue":
                yield sse.comment(f"queue position {value}")
            elif kind == "error":
                yield sse.error_data(value)
                return
            elif kind == "delta":
                yield sse.data(
                    {
                        "id": ident,
                        "object": "text_completion",
                        "created": created,
                        "model": runtime.name,
                        "choices": [
                            {
                                "index": 0,
                                "text": value.text,
                                "finish_reason": value.finish_reason,
                                "logprobs": None,
                            }
                        ],
                    }
                )
            elif include_usage:
                yield sse.data(
                    {
                        "id": ident,
                        "object": "text_completion",
                        "created": created,
                        "model": runtime.name,
                        "choices": [],
                        "usage": _usage(value.prompt_tokens, value.completion_tokens),
                    }
                )
        yield sse.data("[DONE]")

    return Stream(events(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@post("/embeddings", status_code=200, errors=(404, 503), opt={"work": "embeddings"})
async def embeddings(gateway: NamedDependency[Gateway], data: JSONBody[EmbeddingIn]) -> dict:
    inputs = [data.input] if isinstance(data.input, str) else data.input
    if not inputs or not all(isinstance(x, str) for x in inputs):
        raise InvalidInput(
            "input must be a non-empty string or list of strings (token arrays are not supported)",
            param="input",
        )
    if data.encoding_format not in (None, "float", "base64"):
        raise InvalidInput("encoding_format must be 'float' or 'base64'", param="encoding_format")
    name, vectors, tokens = await blocking(gateway.embed, data.model, inputs, data.dimensions)
    out = []
    for i, vector in enumerate(vectors):
        if data.encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        else:
            embedding = [float(x) for x in vector]
        out.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": out,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def _generate(
    request: Request,
    caller: Scope,
    gateway: Gateway,
    runtime,
    prompt: str,
    params: GenerationParams,
    endpoint: str,
):
    return await unless_client_leaves(
        request, lambda cancel: gateway.generate(caller, runtime, prompt, params, endpoint, cancel)
    )


async def _open(
    gateway: Gateway, runtime, prompt: str, params: GenerationParams
) -> tuple[Opening, threading.Event]:
    """Take a slot (or a place in the queue) before the response starts, so a full queue or a bad
    request is still a proper HTTP error."""
    cancel = threading.Event()
    opening = await open_queued(
        lambda on_position: gateway.open_stream(runtime, prompt, params, cancel, on_position),
        cancel,
    )
    return opening, cancel


async def _relay(
    caller: Scope, gateway: Gateway, runtime, opening: Opening, cancel: threading.Event, endpoint: str
):
    """Yields ("queue", position) while waiting, then ("delta", TokenDelta)... and ("stats", StreamStats),
    or ("error", ApplianceError) when the wait ended in an error. Without a `runtime` the opening's
    result is an Opened (a routed chat): ("opened", Opened) comes first. Closing it (the client left)
    frees the slot or the place in the queue."""
    stream = None
    finished = False
    try:
        async for position in opening.waiting():
            yield "queue", position
        try:
            opened = opening.result()
        except ApplianceError as exc:
            yield "error", exc
            return
        if runtime is None:
            runtime, stream = opened.served, opened.stream
            yield "opened", opened
        else:
            stream = opened
        async for delta in sse.relay(stream):
            finished = finished or delta.finish_reason is not None
            yield "delta", delta
        yield "stats", stream.stats
    finally:
        # No await in here: when the client has gone this generator is being closed, and an
        # async generator may not await while closing. Both calls are non-blocking.
        cancel.set()
        if stream is None:
            opening.abandon(lambda opened: (opened.stream if runtime is None else opened).close())
        else:
            stream.close()
            try:
                gateway.record_stream(caller, runtime, stream, endpoint, completed=finished)
            except Exception:
                log.exception("could not record a finished stream")


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# The OpenAI-compatible surface: its errors, auth failures included, in OpenAI's envelope.
router = Router(
    "/v1",
    tags=["openai"],
    exception_handlers=OPENAI_HANDLERS,
    route_handlers=[list_models, chat_completions, completions, embeddings],
)
