"""Admin routes for operators and the console: live statistics, recent logs, chat model load/unload."""

from __future__ import annotations

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State


class ModelLoadIn(msgspec.Struct, forbid_unknown_fields=True):
    # None: the configured model (settings llm.model), e.g. to reload it after an unload.
    model: str | None = None


@get("/api/v1/admin/stats", tags=["admin"], sync_to_thread=True,
     summary="Live statistics: component health, counts, traffic over the last minute, queues, memory, disk",
     description="Admin key. `traffic` holds rates and latency percentiles over the last minute; `history` holds "
                 "the sampled series (every `history.interval_seconds`, oldest first) for sparklines.")
def stats(request: Request, state: State) -> dict:
    return state.appliance.admin_stats(request.user)


@get("/api/v1/admin/logs", tags=["admin"], sync_to_thread=True,
     summary="Recent structured log lines of the server, oldest first",
     description="Admin key. `level` keeps that level and above (debug, info, warning, error, critical); "
                 "`after` returns only lines whose `seq` is greater, for tailing.")
def logs(request: Request, state: State, level: str | None = None, limit: int = 200, after: int = 0) -> dict:
    return state.appliance.admin_logs(request.user, level, limit, after)


@get("/api/v1/admin/models", tags=["admin"], sync_to_thread=True,
     summary="The chat model's state and health, the models that could be loaded, and the embedding model")
def models(request: Request, state: State) -> dict:
    return state.appliance.admin_models(request.user)


@post("/api/v1/admin/models/load", tags=["admin"], status_code=202, sync_to_thread=True,
      summary="Replace the chat model (loads in the background; poll GET /api/v1/admin/models)")
def load_model(request: Request, state: State, data: ModelLoadIn) -> dict:
    return state.appliance.admin_load_model(request.user, data.model)


@post("/api/v1/admin/models/unload", tags=["admin"], status_code=200, sync_to_thread=True,
      summary="Free the chat model; requests already generating finish first")
def unload_model(request: Request, state: State) -> dict:
    return state.appliance.admin_unload_model(request.user)
