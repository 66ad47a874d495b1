"""Cited answers over the knowledge base, and conversations that keep their history."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from appliance.api import sse
from appliance.api.admission import blocking
from appliance.api.queueing import open_queued, unless_client_leaves
from appliance.api.schemas import Deleted
from appliance.core.access import Scope
from appliance.core.answers import Answers
from appliance.errors import ApplianceError
from appliance.records import Answer, Conversation

# The routes answer JSON or a stream (Response | Stream), which Litestar cannot describe by
# itself: name the JSON answer's record so the OpenAPI document has it.
_ANSWERED = {
    200: ResponseSpec(
        Answer,
        description="A cited answer; with `stream: true`, server-sent events `sources`, `token`..., "
        "`answer` (whose data is this record with `type`)",
    )
}


class QueryIn(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    collections: list[str] | None = None
    top_k: int | None = None
    model: str | None = None
    stream: bool = False
    cache: bool = True  # false: neither read nor fill the retrieval and answer caches


class ConversationIn(msgspec.Struct, forbid_unknown_fields=True):
    collections: list[str] | None = None
    title: str = ""


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    content: str
    top_k: int | None = None
    model: str | None = None
    stream: bool = False


async def answer_response(
    request: Request, make_events: Callable, make_result: Callable, stream: bool
) -> Response | Stream:
    """A cited answer as JSON (cancelled if its client leaves first), or as server-sent events:
    sources, token..., answer."""
    if not stream:
        return Response(await unless_client_leaves(request, make_result))
    cancel = threading.Event()
    # Retrieval, planning and taking a model slot happen before the response starts, so their
    # errors (a full queue included) are proper HTTP errors; a queued request hears its place.
    opening = await open_queued(lambda on_position: make_events(cancel, on_position), cancel)

    async def body() -> AsyncIterator[bytes]:
        taken = False
        try:
            async for position in opening.waiting():
                yield sse.event({"type": "queue", "position": position})
            try:
                events = opening.result()
            except ApplianceError as exc:
                yield sse.error_event(exc)
                return
            taken = True
            async for item in sse.relay(events, cancel):
                yield sse.event(item)
        finally:
            cancel.set()
            if not taken:
                opening.abandon(lambda opened: opened.close())

    return Stream(body(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@post(
    "/query",
    status_code=200,
    tags=["knowledge"],
    responses=_ANSWERED,
    errors=(404, 503),
    streams=True,
    opt={"work": "generation"},
)
async def knowledge_query(
    request: Request,
    caller: NamedDependency[Scope],
    answers: NamedDependency[Answers],
    data: JSONBody[QueryIn],
) -> Response | Stream:
    # `model: auto` is routed on the question; the decision goes in a header and the answer's trace.
    route = await blocking(answers.route_for, data.model, data.query)
    response = await answer_response(
        request,
        lambda cancel, on_position: answers.open_stream(
            caller,
            data.query,
            data.collections,
            data.top_k,
            data.model,
            cancel=cancel,
            on_position=on_position,
            route=route,
            cache=data.cache,
        ),
        lambda cancel: answers.answer(
            caller,
            data.query,
            data.collections,
            data.top_k,
            data.model,
            cancel=cancel,
            route=route,
            cache=data.cache,
        ),
        data.stream,
    )
    response.headers["x-appliance-route"] = route.header()
    return response


@post("/", status_code=201, sync_to_thread=True, errors=(404,))
def create_conversation(
    caller: NamedDependency[Scope], answers: NamedDependency[Answers], data: JSONBody[ConversationIn]
) -> Conversation:
    return answers.create_conversation(caller, data.collections, data.title)


@get("/", sync_to_thread=True)
def list_conversations(
    caller: NamedDependency[Scope], answers: NamedDependency[Answers]
) -> list[Conversation]:
    return answers.list_conversations(caller)


@get("/{conversation_id:str}", sync_to_thread=True)
def get_conversation(
    caller: NamedDependency[Scope], answers: NamedDependency[Answers], conversation_id: FromPath[str]
) -> Conversation:
    return answers.get_conversation(caller, conversation_id)


@delete("/{conversation_id:str}", status_code=200, sync_to_thread=True)
def delete_conversation(
    caller: NamedDependency[Scope], answers: NamedDependency[Answers], conversation_id: FromPath[str]
) -> Deleted:
    answers.delete_conversation(caller, conversation_id)
    return Deleted(deleted=True, id=conversation_id)


@post(
    "/{conversation_id:str}/messages",
    status_code=200,
    responses=_ANSWERED,
    errors=(503,),
    streams=True,
    opt={"work": "generation"},
)
async def post_message(
    request: Request,
    caller: NamedDependency[Scope],
    answers: NamedDependency[Answers],
    conversation_id: FromPath[str],
    data: JSONBody[MessageIn],
) -> Response | Stream:
    return await answer_response(
        request,
        lambda cancel, on_position: answers.converse(
            caller,
            conversation_id,
            data.content,
            data.top_k,
            data.model,
            stream=True,
            cancel=cancel,
            on_position=on_position,
        ),
        lambda cancel: answers.converse(
            caller, conversation_id, data.content, data.top_k, data.model, cancel=cancel
        ),
        data.stream,
    )


conversations_router = Router(
    "/api/v1/conversations",
    tags=["conversations"],
    route_handlers=[
        create_conversation,
        list_conversations,
        get_conversation,
        delete_conversation,
        post_message,
    ],
)
