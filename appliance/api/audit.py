"""Records every API request in the audit log: who (key), what (route), on what (ids), and the outcome."""

from __future__ import annotations

import asyncio
import logging

from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.auth import AUTH_REFUSED
from appliance.db.keys import Principal
from appliance.limits import FailedAuthLimiter
from appliance.observability.audit import AuditLog

log = logging.getLogger(__name__)

UNAUDITED = frozenset({"/healthz", "/readyz", "/metrics"})


def _outcome(status: int) -> str:
    if status in (401, 403):
        return "denied"
    return "ok" if status < 400 else "error"


class AuditMiddleware:
    """Wraps the router (like the metrics middleware) so refused requests are recorded too. The
    entry is written after the response went out: auditing never delays the answer. Request
    bodies (queries, prompts) are never recorded here."""

    def __init__(self, app: ASGIApp, audit: AuditLog, failed_auth: FailedAuthLimiter) -> None:
        self.app = app
        self.audit = audit
        self.failed_auth = failed_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            user = scope.get("user")
            route = scope.get("path_template") or "unmatched"  # type: ignore[typeddict-item]
            params = scope.get("path_params") or {}
            client = scope.get("client")
            address = client[0] if client else None
            # Refusals for want of a valid credential cost one row each only up to the client's
            # allowance (api/auth.py counts them); the rest go into one summary row per window.
            individually = scope.get(AUTH_REFUSED, True)
            try:
                if individually:
                    await asyncio.to_thread(
                        self.audit.append,
                        f"{scope['method']} {route}",
                        outcome=_outcome(status),
                        principal=user if isinstance(user, Principal) else None,
                        target=",".join(str(v) for v in params.values()) or None,
                        status=status,
                        client=address,
                    )
                ended = self.failed_auth.summaries()
                if ended:
                    await asyncio.to_thread(self.audit.summarise_refusals, ended)
            except Exception:
                log.exception("audit entry could not be written", extra={"route": route, "status": status})


def audit_app(app: Litestar, audit: AuditLog, failed_auth: FailedAuthLimiter) -> Litestar:
    app.asgi_handler = AuditMiddleware(app.asgi_handler, audit, failed_auth)
    return app
