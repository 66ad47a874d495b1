"""OpenAI-compatible endpoints: models, chat completions, completions, embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

from appliance.api.openai_schemas import ChatCompletionIn, CompletionIn, EmbeddingIn
from appliance.api.queueing import Opening, open_queued
from appliance.core import Appliance
from appliance.errors import ApplianceError, InvalidInput
from appliance.models.runtime import ChatMessage, GenerationParams

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise InvalidInput(f"message content part of type {part.get('type')!r} is not supported; only text", param="messages")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _params(max_tokens: int | None, temperature, top_p, stop, seed, n) -> GenerationParams:
    if n not in (None, 1):
        raise InvalidInput("only n=1 is supported", param="n")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1", param="max_tokens")
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidInput("temperature must be between 0 and 2", param="temperature")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidInput("top_p must be in (0, 1]", param="top_p")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 4:
        raise InvalidInput("at most 4 stop sequences", param="stop")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        stop=stops,
        seed=seed,
    )


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@get("/v1/models", tags=["openai"], sync_to_thread=False)
def list_models(state: State) -> dict:
    return {"object": "list", "data": state.appliance.list_models()}


@post("/v1/chat/completions", tags=["openai"], status_code=200)
async def chat_completions(request: Request, state: State, data: ChatCompletionIn) -> Response | Stream:
    appliance: Appliance = state.appliance
    if not data.messages:
        raise InvalidInput("messages must not be empty", param="messages")
    messages = [ChatMessage(m.role, _text(m.content)) for m in data.messages]
    params = _params(data.max_completion_tokens or data.max_tokens, data.temperature, data.top_p, data.stop, data.seed, data.n)
    runtime, prompt = await asyncio.to_thread(appliance.prepare_chat, request.user, data.model, messages)
    created, ident = int(time.time()), "chatcmpl-" + uuid.uuid4().hex[:24]
    if not data.stream:
        done = await _generate(appliance, request, runtime, prompt, params, "chat")
        return Response({
            "id": ident, "object": "chat.completion", "created": created, "model": runtime.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "finish_reason": done.finish_reason, "logprobs": None}],
            "usage": _usage(done.prompt_tokens, done.completion_tokens),
        })
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    opening, cancel = await _open(appliance, request, runtime, prompt, params, "chat")

    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": runtime.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    async def events() -> AsyncIterator[bytes]:
        started = False
        async for kind, value in _relay(appliance, request, runtime, opening, cancel, "chat"):
            if kind == "queue":
                yield _queue_comment(value)
                continue
            if kind == "error":
                yield _sse(_error_body(value))
                return
            if not started:
                started = True
                yield _sse(chunk({"role": "assistant", "content": ""}, None))
            if kind == "delta":
                yield _sse(chunk({"content": value.text} if value.text else {}, value.finish_reason))
            elif include_usage:
                yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": runtime.name,
                            "choices": [], "usage": _usage(value.prompt_tokens, value.completion_tokens)})
        yield _sse("[DONE]")

    return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@post("/v1/completions", tags=["openai"], status_code=200)
async def completions(request: Request, state: State, data: CompletionIn) -> Response | Stream:
    appliance: Appliance = state.appliance
    prompts = [data.prompt] if isinstance(data.prompt, str) else data.prompt
    if len(prompts) != 1:
        raise InvalidInput("exactly one prompt is supported per request", param="prompt")
    if data.echo:
        raise InvalidInput("echo is not supported", param="echo")
    params = _params(data.max_tokens, data.temperature, data.top_p, data.stop, data.seed, data.n)
    runtime = await asyncio.to_thread(appliance.runtime_for, request.user, data.model)
    prompt = prompts[0]
    created, ident = int(time.time()), "cmpl-" + uuid.uuid4().hex[:24]
    if not data.stream:
        done = await _generate(appliance, request, runtime, prompt, params, "completions")
        return Response({
            "id": ident, "object": "text_completion", "created": created, "model": runtime.name,
            "choices": [{"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}],
            "usage": _usage(done.prompt_tokens, done.completion_tokens),
        })
    include_usage = bool(data.stream_options and data.stream_options.include_usage)
    opening, cancel = await _open(appliance, request, runtime, prompt, params, "completions")

    async def events() -> AsyncIterator[bytes]:
        async for kind, value in _relay(appliance, request, runtime, opening, cancel, "completions"):
            if kind == "queue":
                yield _queue_comment(value)
            elif kind == "error":
                yield _sse(_error_body(value))
                return
            elif kind == "delta":
                yield _sse({"id": ident, "object": "text_completion", "created": created, "model": runtime.name,
                            "choices": [{"index": 0, "text": value.text, "finish_reason": value.finish_reason,
                                         "logprobs": None}]})
            elif include_usage:
                yield _sse({"id": ident, "object": "text_completion", "created": created, "model": runtime.name,
                            "choices": [], "usage": _usage(value.prompt_tokens, value.completion_tokens)})
        yield _sse("[DONE]")

    return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)


@post("/v1/embeddings", tags=["openai"], status_code=200)
async def embeddings(request: Request, state: State, data: EmbeddingIn) -> dict:
    appliance: Appliance = state.appliance
    inputs = [data.input] if isinstance(data.input, str) else data.input
    if not inputs or not all(isinstance(x, str) for x in inputs):
        raise InvalidInput("input must be a non-empty string or list of strings (token arrays are not supported)", param="input")
    if data.encoding_format not in (None, "float", "base64"):
        raise InvalidInput("encoding_format must be 'float' or 'base64'", param="encoding_format")
    name, vectors, tokens = await asyncio.to_thread(appliance.embed, request.user, data.model, inputs, data.dimensions)
    out = []
    for i, vector in enumerate(vectors):
        if data.encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        else:
            embedding = [float(x) for x in vector]
        out.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": out, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _generate(appliance: Appliance, request: Request, runtime, prompt: str, params: GenerationParams, endpoint: str):
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(appliance.generate, request.user, runtime, prompt, params, endpoint, cancel)
    finally:
        cancel.set()  # the client went away or we are done: either way the slot is no longer wanted


async def _open(appliance: Appliance, request: Request, runtime, prompt: str, params: GenerationParams,
                endpoint: str) -> tuple[Opening, threading.Event]:
    """Take a slot (or a place in the queue) before the response starts, so a full queue or a bad
    request is still a proper HTTP error."""
    cancel = threading.Event()
    opening = await open_queued(
        lambda on_position: appliance.open_stream(request.user, runtime, prompt, params, endpoint, cancel, on_position),
        cancel,
    )
    return opening, cancel


async def _relay(appliance: Appliance, request: Request, runtime, opening: Opening, cancel: threading.Event,
                 endpoint: str):
    """Yields ("queue", position) while waiting, then ("delta", TokenDelta)... and ("stats", StreamStats),
    or ("error", ApplianceError) when the wait ended in an error. Closing it (the client left) frees
    the slot or the place in the queue."""
    stream = None
    finished = False
    sentinel = object()
    try:
        async for position in opening.waiting():
            yield "queue", position
        try:
            stream = opening.result()
        except ApplianceError as exc:
            yield "error", exc
            return
        while True:
            delta = await asyncio.to_thread(next, stream, sentinel)
            if delta is sentinel:
                break
            finished = finished or delta.finish_reason is not None
            yield "delta", delta
        yield "stats", stream.stats
    finally:
        # No await in here: when the client has gone this generator is being closed, and an
        # async generator may not await while closing. Both calls are non-blocking.
        cancel.set()
        if stream is None:
            opening.abandon(lambda opened: opened.close())
        else:
            stream.close()
            try:
                appliance.record_stream(request.user, runtime, stream, endpoint, completed=finished)
            except Exception:
                log.exception("could not record a finished stream")


def _queue_comment(position: int) -> bytes:
    # An SSE comment: OpenAI clients skip it, a person watching the stream sees why it waits.
    return f": queue position {position}\n\n".encode()


def _error_body(exc: ApplianceError) -> dict:
    return {"error": {"message": exc.detail, "type": "server_error" if exc.status >= 500 else "invalid_request_error",
                      "param": exc.extra.get("param"), "code": exc.extra.get("code")}}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
