"""Cited answers over the knowledge base, and conversations that keep their history."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.response import Stream

from appliance.api.queueing import open_queued
from appliance.core import Appliance
from appliance.errors import ApplianceError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class QueryIn(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    collections: list[str] | None = None
    top_k: int | None = None
    model: str | None = None
    stream: bool = False


class ConversationIn(msgspec.Struct, forbid_unknown_fields=True):
    collections: list[str] | None = None
    title: str = ""


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    content: str
    top_k: int | None = None
    model: str | None = None
    stream: bool = False


async def _sse(events: Iterator[dict], cancel: threading.Event) -> AsyncIterator[bytes]:
    """Server-sent events from a blocking event iterator; a client that leaves cancels generation."""
    sentinel = object()
    try:
        while True:
            event = await asyncio.to_thread(next, events, sentinel)
            if event is sentinel:
                break
            yield _event(event)
    finally:
        # No await here (a closing async generator may not await). The cancel event stops the
        # generation within a token; if a worker thread is inside the generator right now it
        # cannot be closed from here, and it ends by itself once that token is out.
        cancel.set()
        try:
            events.close()
        except ValueError:
            pass


def _event(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def _answer(request: Request, make_events, make_result, stream: bool) -> Response | Stream:
    cancel = threading.Event()
    if not stream:
        try:
            return Response(await asyncio.to_thread(make_result, cancel))
        finally:
            cancel.set()
    # Retrieval, planning and taking a model slot happen before the response starts, so their
    # errors (a full queue included) are proper HTTP errors; a queued request hears its place.
    opening = await open_queued(lambda on_position: make_events(cancel, on_position), cancel)

    async def body() -> AsyncIterator[bytes]:
        taken = False
        try:
            async for position in opening.waiting():
                yield _event({"type": "queue", "position": position})
            try:
                events = opening.result()
            except ApplianceError as exc:
                yield _event({"type": "error", "status": exc.status, "detail": exc.detail})
                return
            taken = True
            async for chunk in _sse(events, cancel):
                yield chunk
        finally:
            cancel.set()
            if not taken:
                opening.abandon(lambda opened: opened.close())

    return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)


@post("/api/v1/knowledge/query", tags=["knowledge"], status_code=200)
async def knowledge_query(request: Request, state: State, data: QueryIn) -> Response | Stream:
    appliance: Appliance = state.appliance
    return await _answer(
        request,
        lambda cancel, on_position: appliance.open_answer_stream(request.user, data.query, data.collections, data.top_k,
                                                                 data.model, cancel=cancel, on_position=on_position),
        lambda cancel: appliance.answer(request.user, data.query, data.collections, data.top_k, data.model, cancel=cancel),
        data.stream,
    )


@post("/api/v1/conversations", tags=["conversations"], status_code=201, sync_to_thread=True)
def create_conversation(request: Request, state: State, data: ConversationIn) -> dict:
    return state.appliance.create_conversation(request.user, data.collections, data.title)


@get("/api/v1/conversations", tags=["conversations"], sync_to_thread=True)
def list_conversations(request: Request, state: State) -> list[dict]:
    return state.appliance.list_conversations(request.user)


@get("/api/v1/conversations/{conversation_id:str}", tags=["conversations"], sync_to_thread=True)
def get_conversation(request: Request, state: State, conversation_id: str) -> dict:
    return state.appliance.get_conversation(request.user, conversation_id)


@delete("/api/v1/conversations/{conversation_id:str}", tags=["conversations"], status_code=200, sync_to_thread=True)
def delete_conversation(request: Request, state: State, conversation_id: str) -> dict:
    state.appliance.delete_conversation(request.user, conversation_id)
    return {"deleted": True, "id": conversation_id}


@post("/api/v1/conversations/{conversation_id:str}/messages", tags=["conversations"], status_code=200)
async def post_message(request: Request, state: State, conversation_id: str, data: MessageIn) -> Response | Stream:
    appliance: Appliance = state.appliance
    return await _answer(
        request,
        lambda cancel, on_position: appliance.converse(request.user, conversation_id, data.content, data.top_k,
                                                       data.model, stream=True, cancel=cancel, on_position=on_position),
        lambda cancel: appliance.converse(request.user, conversation_id, data.content, data.top_k, data.model,
                                          cancel=cancel),
        data.stream,
    )
