"""Sources: git repositories and the drop folder, their syncs and quarantined files; GitHub deliveries."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from litestar import Request, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance.api.auth import count_refusal
from appliance.api.schemas import QuarantineList, SourceList, SyncRequested
from appliance.core.access import Scope
from appliance.core.sources import Sources
from appliance.errors import InvalidInput, PayloadTooLarge, TooManyRequests, Unauthorized
from appliance.records import RemovedSource, Source


class SourceIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    location: str  # path of a local repository, bare or not
    collection: str
    kind: str = "git"
    branch: str = "main"
    schedule: str = "manual"  # manual | hourly | daily | weekly | "every N minutes|hours"
    include: list[str] = []
    exclude: list[str] = []
    history: bool = False  # also index merge commits (the history of merged changes)
    fetch: bool = False  # `git fetch` before each sync: only for a remote inside the air gap
    github_repo: str = ""  # owner/name, so pushes and issues of that repository map to this source


@get("/sources", sync_to_thread=True)
def list_sources(caller: NamedDependency[Scope], sources: NamedDependency[Sources]) -> SourceList:
    return SourceList(sources.list(caller))


@post("/sources", status_code=201, sync_to_thread=True, errors=(403, 404, 409))
def add_source(
    caller: NamedDependency[Scope], sources: NamedDependency[Sources], data: JSONBody[SourceIn]
) -> Source:
    options = {
        k: getattr(data, k) for k in ("branch", "include", "exclude", "history", "fetch", "github_repo")
    }
    return sources.add(caller, data.kind, data.name, data.collection, data.location, data.schedule, options)


@get("/sources/{name:str}", sync_to_thread=True)
def get_source(
    caller: NamedDependency[Scope], sources: NamedDependency[Sources], name: FromPath[str]
) -> Source:
    return sources.get(caller, name)


@delete("/sources/{name:str}", status_code=200, sync_to_thread=True, errors=(403,))
def remove_source(
    caller: NamedDependency[Scope],
    sources: NamedDependency[Sources],
    name: FromPath[str],
    delete_documents: FromQuery[bool] = False,
) -> RemovedSource:
    return sources.remove(caller, name, delete_documents)


@post("/sources/{name:str}/sync", status_code=202, sync_to_thread=True, errors=(403, 409))
def sync_source(
    caller: NamedDependency[Scope], sources: NamedDependency[Sources], name: FromPath[str]
) -> SyncRequested:
    return SyncRequested(name, sources.sync(caller, name))


@get("/quarantine", sync_to_thread=True, errors=(404,))
def list_quarantine(
    caller: NamedDependency[Scope],
    sources: NamedDependency[Sources],
    collection: FromQuery[str | None] = None,
    source: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
) -> QuarantineList:
    """Files a source would not or could not ingest, with the reason (sensitive, refused, too large,
    unsupported, failed). A quarantined file is tried again once it changes."""
    return QuarantineList(sources.quarantined(caller, collection, source, limit))


async def _webhook_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) on a declared length over `limit` before a byte of it is read, and
    read in pieces up to `limit` otherwise: a body longer than declared or chunked past the limit
    is cut off there, not buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"webhook body of {int(declared)} bytes exceeds webhooks.max_body_bytes ({limit})"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"webhook body exceeds webhooks.max_body_bytes ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


@post("/webhooks/github", exclude_from_auth=True, status_code=200, errors=(401, 429))
async def github_webhook(request: Request, sources: NamedDependency[Sources]) -> dict:
    """GitHub (or GitHub Enterprise) deliveries, authenticated by `X-Hub-Signature-256` (HMAC-SHA256
    of the raw body with the configured secret), checked before the body is parsed. The signature
    covers the whole body, so bodies are bounded instead: each by its length, and how many are
    read at once (beyond `webhooks.max_concurrent_bodies`, 429 with Retry-After)."""
    settings = request.app.state.appliance.settings.webhooks
    state = request.app.state
    if "webhook_bodies" not in state:
        state["webhook_bodies"] = asyncio.Semaphore(settings.max_concurrent_bodies)
    bodies: asyncio.Semaphore = state["webhook_bodies"]
    if bodies.locked():
        raise TooManyRequests(
            f"{settings.max_concurrent_bodies} webhook deliveries are being received; retry shortly",
            retry_after=1,
        )
    async with bodies:
        body = await _webhook_body(request, settings.max_body_bytes)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        return await asyncio.to_thread(sources.github_delivery, headers, body)
    except Unauthorized:
        count_refusal(request)
        raise


router = Router(
    "/api/v1",
    tags=["sources"],
    route_handlers=[
        list_sources,
        add_source,
        get_source,
        remove_source,
        sync_source,
        list_quarantine,
        github_webhook,
    ],
)
