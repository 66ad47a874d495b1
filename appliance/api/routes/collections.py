"""Collections: create and list."""

from __future__ import annotations

from litestar import Router, get, post

from appliance.api.schemas import CollectionIn
from appliance.core.access import Scope
from appliance.core.knowledge import Knowledge
from appliance.records import Collection


@post("/", status_code=201, sync_to_thread=True, errors=(403, 409))
def create_collection(caller: Scope, knowledge: Knowledge, data: CollectionIn) -> Collection:
    return knowledge.create_collection(caller, data.name, data.description)


@get("/", sync_to_thread=True)
def list_collections(caller: Scope, knowledge: Knowledge) -> list[Collection]:
    return knowledge.list_collections(caller)


router = Router(
    "/api/v1/collections", route_handlers=[create_collection, list_collections], tags=["collections"]
)
