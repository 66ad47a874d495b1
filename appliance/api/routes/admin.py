"""Admin routes (admin key only): live statistics, logs, chat model load/unload, installation status,
backups and chunk verification."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, QueryParameter

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.admin import Admin
from appliance.core.jobs import Jobs
from appliance.records import Job


class ModelLoadIn(msgspec.Struct, forbid_unknown_fields=True):
    # None: the configured model (settings llm.model), e.g. to reload it after an unload.
    model: str | None = None


class BackupIn(msgspec.Struct, forbid_unknown_fields=True):
    # Folder name under <data dir>/backups/; empty: backup-<time>.
    name: str | None = None


class VerifyChunksIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str | None = None  # every collection when absent
    repair: bool = False


@get(
    "/stats",
    sync_to_thread=True,
    summary="Live statistics: component health, counts, traffic over the last minute, queues, memory, disk",
    description="`traffic` holds rates and latency percentiles over the last minute; `history` holds "
    "the sampled series (every `history.interval_seconds`, oldest first) for sparklines.",
)
def stats(caller: NamedDependency[Scope], admin: NamedDependency[Admin]) -> dict:
    return admin.stats(caller)


@get(
    "/logs",
    sync_to_thread=True,
    summary="Recent structured log lines of the server, oldest first",
    description="`level` keeps that level and above (debug, info, warning, error, critical); "
    "`after` returns only lines whose `seq` is greater, for tailing.",
)
def logs(
    caller: NamedDependency[Scope],
    admin: NamedDependency[Admin],
    level: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=2000)] = 200,
    after: Annotated[int, QueryParameter(ge=0)] = 0,
) -> dict:
    return admin.logs(caller, level, limit, after)


@get(
    "/models",
    sync_to_thread=True,
    summary="The chat model's state and health, the models that could be loaded, and the embedding model",
)
def models(caller: NamedDependency[Scope], admin: NamedDependency[Admin]) -> dict:
    return admin.models_state(caller)


@post(
    "/models/load",
    status_code=202,
    errors=(404, 409),
    sync_to_thread=True,
    summary="Replace the chat model (loads in the background; poll GET /api/v1/admin/models)",
)
def load_model(
    caller: NamedDependency[Scope], admin: NamedDependency[Admin], data: JSONBody[ModelLoadIn]
) -> dict:
    return admin.load_model(caller, data.model)


@post(
    "/models/unload",
    status_code=200,
    errors=(409,),
    sync_to_thread=True,
    summary="Free the chat model; requests already generating finish first",
)
def unload_model(caller: NamedDependency[Scope], admin: NamedDependency[Admin]) -> dict:
    return admin.unload_model(caller)


@get(
    "/ops",
    sync_to_thread=True,
    summary="Installation status: version, the network guard's refused outbound attempts, index counts",
    description="`network.outbound_attempts` counts outbound connections the process tried and the "
    "guard refused since start (any is a finding); `indexes` compares each index with the catalogue.",
)
def ops_status(caller: NamedDependency[Scope], admin: NamedDependency[Admin]) -> dict:
    return admin.ops_status(caller)


@post(
    "/backup",
    status_code=201,
    errors=(409,),
    sync_to_thread=True,
    summary="Take a consistent snapshot (catalogue, indexes, admin key, config) while serving",
    description="Written to <data dir>/backups/<name>; `appliance backup DEST` asks for it and moves "
    "it to DEST. Ingestion continues meanwhile; restore with `appliance restore` (service stopped).",
)
def backup(caller: NamedDependency[Scope], admin: NamedDependency[Admin], data: JSONBody[BackupIn]) -> dict:
    return admin.backup(caller, data.name)


@post(
    "/verify-chunks",
    status_code=202,
    errors=(404,),
    sync_to_thread=True,
    summary="Check stored chunks against each document's source; optionally re-ingest damaged documents",
    description="Queues a `verify` job (follow it at `/api/v1/jobs/{id}`); its `summary` is the "
    "report: `counts` per verdict (damaged, mismatched, at_risk, unverifiable, ok) and the "
    "documents found, with the reason. With `repair`, damaged or mismatched documents whose source "
    "bytes are at hand are re-ingested from them (`repair_jobs`).",
)
def verify_chunks(
    caller: NamedDependency[Scope], jobs: NamedDependency[Jobs], data: JSONBody[VerifyChunksIn]
) -> Job:
    return jobs.verify_chunks(caller, data.collection, data.repair)


router = Router(
    "/api/v1/admin",
    tags=["admin"],
    guards=[admin_only],
    route_handlers=[
        stats,
        logs,
        models,
        load_model,
        unload_model,
        ops_status,
        backup,
        verify_chunks,
    ],
)
