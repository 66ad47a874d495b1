"""Prometheus metrics (admin key, or loopback without a key when a setting allows) and the audit log."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from litestar import MediaType, Request, Response, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from appliance.api.dependencies import admin_only
from appliance.api.schemas import Offset
from appliance.core.access import Scope
from appliance.core.admin import Admin
from appliance.errors import Unauthorized


def _is_loopback(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


# Excluded from the key middleware because it does its own check (loopback may skip the key).
@get(
    "/metrics",
    exclude_from_auth=True,
    checks_key=True,
    errors=(403,),
    media_type=MediaType.TEXT,
    tags=["observability"],
    sync_to_thread=True,
)
def metrics(request: Request, state: State) -> Response:
    appliance = state.appliance
    local_ok = appliance.settings.observability.metrics_on_localhost_without_key and _is_loopback(
        request.client.host if request.client else None
    )
    if not local_ok:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        principal = (
            appliance.access.authenticate(secret.strip())
            if scheme.lower() == "bearer" and secret.strip()
            else None
        )
        if principal is None:
            raise Unauthorized("metrics need the admin key: send 'Authorization: Bearer <key>'")
        appliance.access.scope(principal).require_admin()
    payload, content_type = appliance.metrics.render(request.headers.get("accept", ""))
    # headers=, not media_type=: Litestar would append a second "; charset=utf-8" to text/ types.
    return Response(payload, headers={"content-type": content_type})


@get("/", sync_to_thread=True, summary="The append-only, hash-chained audit log, newest first")
def audit_entries(
    caller: NamedDependency[Scope],
    admin: NamedDependency[Admin],
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: FromQuery[Offset] = 0,
    action: FromQuery[str | None] = None,
    key_id: FromQuery[str | None] = None,
) -> list[dict]:
    return admin.audit_entries(caller, limit, offset, action, key_id)


audit_router = Router(
    "/api/v1/audit", route_handlers=[audit_entries], tags=["observability"], guards=[admin_only]
)
