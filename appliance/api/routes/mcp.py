"""MCP over streamable HTTP at /mcp: the knowledge base's tools for assistants, under the caller's key."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from litestar import asgi
from litestar.types import Receive, Scope, Send

from appliance.errors import NotReady, Unauthorized

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from appliance.client import AsyncApplianceClient

# The tools call the app itself through an in-process transport: no socket, and the request passes
# every layer a REST client's does (key, scope, admission, limits, audit, metrics).
INTERNAL_URL = "http://appliance.internal"


class McpEndpoint:
    """The MCP server and its HTTP session manager. Both are built, and the manager's task group
    started, at the first MCP request: the SDK costs most of a second to import, which a server
    nobody asks over MCP should not pay, and uvicorn runs with lifespan off (server.py). The task
    group ends with the event loop."""

    def __init__(self) -> None:
        self._app: Any = None
        self._manager: Any = None
        self._started: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None  # a strong reference: the loop keeps only weak ones

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._started is None:
            self._app = scope["app"]
            self._manager = self._build()
            self._started = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="mcp-sessions")
        await self._started.wait()
        if self._runner is not None and self._runner.done():
            raise NotReady("the MCP endpoint could not start; see the server log")
        await self._manager.handle_request(scope, receive, send)

    def _build(self) -> Any:
        from mcp.server.transport_security import TransportSecuritySettings

        from appliance.mcp.server import build_server

        server = build_server(self._client_for)
        # Stateless, JSON answers: each POST stands alone and carries its own key, so no session
        # outlives or borrows a credential. No Host/Origin allow-list: every request needs the key.
        # (The Starlette app this builds is not used: the route below hands requests to its manager.)
        server.streamable_http_app(
            json_response=True,
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        return server.session_manager

    def _client_for(self, ctx: Context) -> AsyncApplianceClient:
        import httpx

        from appliance.client import AsyncApplianceClient

        scheme, _, key = (ctx.headers or {}).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key")  # the auth middleware refused it already
        # The inner call is the outer caller's, in the audit log and the failed-auth accounting too.
        peer = getattr(ctx.request_context.request, "client", None)
        transport = httpx.ASGITransport(
            app=self._app, client=(peer.host, peer.port) if peer else ("unknown", 0)
        )
        return AsyncApplianceClient(INTERNAL_URL, key.strip(), timeout=120.0, transport=transport)

    async def _run(self) -> None:
        assert self._started is not None
        try:
            async with self._manager.run():  # the task group every MCP request runs in
                self._started.set()
                await asyncio.Event().wait()  # until the loop cancels it at shutdown
        finally:
            self._started.set()  # a failed start answers 503 instead of leaving requests waiting


def mcp_route(endpoint: McpEndpoint):
    """The /mcp route, behind the key rule of every route (the auth middleware runs first)."""

    # The scope itself, not a copy: what Litestar 2 does when this is unset (and then warns about).
    @asgi("/mcp", copy_scope=False)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint.handle(scope, receive, send)

    return mcp
