"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State


@get("/healthz", exclude_from_auth=True, tags=["health"], sync_to_thread=False)
def healthz() -> dict:
    return {"status": "ok"}


@get("/readyz", exclude_from_auth=True, tags=["health"], sync_to_thread=True)
def readyz(state: State) -> Response:
    health = state.appliance.health()
    return Response(
        content={"status": "ready" if health["ready"] else "starting", **health},
        status_code=200 if health["ready"] else 503,
    )


route_handlers = [healthz, readyz]
