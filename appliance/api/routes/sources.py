"""Sources: git repositories and the drop folder, their syncs and quarantined files; GitHub deliveries."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State


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


@get("/api/v1/sources", tags=["sources"], sync_to_thread=True)
def list_sources(request: Request, state: State) -> dict:
    return {"sources": state.appliance.list_sources(request.user)}


@post("/api/v1/sources", tags=["sources"], status_code=201, sync_to_thread=True)
def add_source(request: Request, state: State, data: SourceIn) -> dict:
    options = {k: getattr(data, k) for k in ("branch", "include", "exclude", "history", "fetch", "github_repo")}
    return state.appliance.add_source(request.user, data.kind, data.name, data.collection, data.location,
                                      data.schedule, options)


@get("/api/v1/sources/{name:str}", tags=["sources"], sync_to_thread=True)
def get_source(request: Request, state: State, name: str) -> dict:
    return state.appliance.get_source(request.user, name)


@delete("/api/v1/sources/{name:str}", tags=["sources"], status_code=200, sync_to_thread=True)
def remove_source(request: Request, state: State, name: str, delete_documents: bool = False) -> dict:
    return state.appliance.remove_source(request.user, name, delete_documents)


@post("/api/v1/sources/{name:str}/sync", tags=["sources"], status_code=202, sync_to_thread=True)
def sync_source(request: Request, state: State, name: str) -> dict:
    return state.appliance.sync_source(request.user, name)


@get("/api/v1/quarantine", tags=["sources"], sync_to_thread=True)
def list_quarantine(request: Request, state: State, collection: str | None = None, source: str | None = None,
                    limit: int = 200) -> dict:
    """Files a source would not or could not ingest, with the reason (sensitive, refused, too large,
    unsupported, failed). A quarantined file is tried again once it changes."""
    files = state.appliance.quarantined(request.user, collection, source, min(max(limit, 1), 1000))
    return {"files": files}


@post("/api/v1/webhooks/github", exclude_from_auth=True, tags=["sources"], status_code=200)
async def github_webhook(request: Request, state: State) -> dict:
    """GitHub (or GitHub Enterprise) deliveries, authenticated by `X-Hub-Signature-256` (HMAC-SHA256
    of the raw body with the configured secret), checked before the body is parsed."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return await asyncio.to_thread(state.appliance.github_delivery, headers, body)
