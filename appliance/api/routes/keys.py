"""API keys: create (the secret is shown once), list, revoke. Admin only."""

from __future__ import annotations

import msgspec
from litestar import Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from appliance.api.dependencies import admin_only
from appliance.core.access import Access, Scope
from appliance.records import KeyInfo, NewKey


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str = "user"
    collections: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None


@post("/", status_code=201, sync_to_thread=True)
def create_key(
    caller: NamedDependency[Scope], access: NamedDependency[Access], data: JSONBody[KeyIn]
) -> NewKey:
    return access.create_key(caller, data.name, data.role, data.collections, data.rpm, data.tpm)


@get("/", sync_to_thread=True)
def list_keys(caller: NamedDependency[Scope], access: NamedDependency[Access]) -> list[KeyInfo]:
    return access.list_keys(caller)


@delete("/{key_id:str}", status_code=200, sync_to_thread=True)
def revoke_key(
    caller: NamedDependency[Scope], access: NamedDependency[Access], key_id: FromPath[str]
) -> KeyInfo:
    return access.revoke_key(caller, key_id)


router = Router(
    "/api/v1/keys", route_handlers=[create_key, list_keys, revoke_key], tags=["keys"], guards=[admin_only]
)
