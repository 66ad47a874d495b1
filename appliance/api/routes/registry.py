"""The model registry: families, versions, aliases and their history (any key reads; admin changes)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, post

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.registry import Registry
from appliance.registry_records import AliasMove, ModelFamily, ModelVersion


class ImportIn(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]  # a GGUF file on the server
    name: str | None = None  # the family; default: from the file's header


class AliasIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    run: str | None = None  # a finished eval run of the candidate for the family's gate


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    alias: str = "production"
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class GateIn(msgspec.Struct, forbid_unknown_fields=True):
    gate: str | None  # an eval gate's name; null: promotions of this family are ungated


@get("/", sync_to_thread=True, summary="Model families with their versions (state, tags) and aliases")
def list_models(caller: Scope, registry: Registry) -> list[ModelFamily]:
    return registry.list(caller)


@get("/{name:str}", sync_to_thread=True, summary="One model family: versions, probe results, aliases")
def get_model(caller: Scope, registry: Registry, name: str) -> ModelFamily:
    return registry.get(caller, name)


@get(
    "/{name:str}/history",
    sync_to_thread=True,
    summary="Every alias move of a family, oldest first: who, when, why, gate report, previous version",
)
def history(caller: Scope, registry: Registry, name: str) -> list[AliasMove]:
    return registry.history(caller, name)


@post(
    "/import",
    status_code=201,
    sync_to_thread=True,
    guards=[admin_only],
    summary="Register a GGUF file on the server: verify its header and sha256, probe it in a child process",
    description="A file that fails a check is registered `rejected` with its reason and is never served.",
)
def import_model(caller: Scope, registry: Registry, data: ImportIn) -> ModelVersion:
    return registry.import_model(caller, data.path, data.name)


@post(
    "/{name:str}/aliases/{alias:str}",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Point an alias at a version; to staging/production through the family's eval gate",
)
def set_alias(caller: Scope, registry: Registry, name: str, alias: str, data: AliasIn) -> AliasMove:
    return registry.promote(caller, name, data.version, alias, data.reason, data.run)


@post(
    "/{name:str}/rollback",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Move an alias (default production) back to the version it held before",
)
def rollback(caller: Scope, registry: Registry, name: str, data: RollbackIn) -> AliasMove:
    return registry.rollback(caller, name, data.alias, data.reason)


@post(
    "/{name:str}/gate",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    summary="Set the eval gate promotions of this family to staging or production must pass (null: none)",
)
def set_gate(caller: Scope, registry: Registry, name: str, data: GateIn) -> ModelFamily:
    return registry.set_gate(caller, name, data.gate)


router = Router(
    "/api/v1/models",
    route_handlers=[list_models, get_model, history, import_model, set_alias, rollback, set_gate],
    tags=["models"],
)
