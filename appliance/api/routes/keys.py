"""API keys: create (the secret is shown once), list, revoke. Admin only."""

from __future__ import annotations

import msgspec
from litestar import Request, delete, get, post
from litestar.datastructures import State


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str = "user"
    collections: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None


@post("/api/v1/keys", tags=["keys"], status_code=201, sync_to_thread=True)
def create_key(request: Request, state: State, data: KeyIn) -> dict:
    return state.appliance.create_key(request.user, data.name, data.role, data.collections, data.rpm, data.tpm)


@get("/api/v1/keys", tags=["keys"], sync_to_thread=True)
def list_keys(request: Request, state: State) -> list[dict]:
    return state.appliance.list_keys(request.user)


@delete("/api/v1/keys/{key_id:str}", tags=["keys"], status_code=200, sync_to_thread=True)
def revoke_key(request: Request, state: State, key_id: str) -> dict:
    return state.appliance.revoke_key(request.user, key_id)
