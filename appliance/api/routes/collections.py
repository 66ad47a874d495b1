"""Collections: create and list."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.datastructures import State

from appliance.api.schemas import Collection, CollectionIn


@post("/api/v1/collections", tags=["collections"], status_code=201, sync_to_thread=True)
def create_collection(request: Request, state: State, data: CollectionIn) -> Collection:
    return Collection(**state.appliance.create_collection(request.user, data.name, data.description))


@get("/api/v1/collections", tags=["collections"], sync_to_thread=True)
def list_collections(request: Request, state: State) -> list[Collection]:
    return [Collection(**c) for c in state.appliance.list_collections(request.user)]
