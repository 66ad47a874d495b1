"""MCP over streamable HTTP at /mcp: the knowledge base's tools for assistants, under the caller's key."""

from __future__ import annotations

import asyncio

import httpx
from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings

from appliance.client import AsyncApplianceClient
from appliance.errors import Unauthorized
from appliance.mcp.server import build_server

# The tools call the app itself through an in-process transport: no socket, and the request passes
# every layer a REST client's does (key, scope, admission, limits, audit, metrics).
INTERNAL_URL = "http://appliance.internal"


class McpEndpoint:
    """The MCP server and its HTTP session manager, started at the first MCP request (the server
    runs uvicorn with lifespan off, see server.py) and ended with the event loop."""

    def __init__(self) -> None:
        self.app: Litestar | None = None
        self._started: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self.server = build_server(self._client_for)
        # Stateless, JSON answers: each POST stands alone, carrying its own key, so a session can
        # never outlive or borrow a credential. No Host/Origin allow-list: every request needs the key.
        # (The Starlette app it builds is not used: the route below hands requests to its manager.)
        self.server.streamable_http_app(
            json_response=True,
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager = self.server.session_manager

    def _client_for(self, ctx: Context) -> AsyncApplianceClient:
        headers = ctx.headers or {}
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if self.app is None or scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key")  # the auth middleware refused it already
        return AsyncApplianceClient(
            INTERNAL_URL, key.strip(), timeout=120.0, transport=httpx.ASGITransport(app=self.app)
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._started is None:
            self.app = scope["app"]
            self._started = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="mcp-sessions")
        await self._started.wait()
        await self.manager.handle_request(scope, receive, send)  # type: ignore[arg-type]

    async def _run(self) -> None:
        assert self._started is not None
        async with self.manager.run():  # the task group every MCP request runs in
            self._started.set()
            await asyncio.Event().wait()  # until the loop cancels it at shutdown


def mcp_route(endpoint: McpEndpoint):
    """The /mcp route: behind the key rule of every route (the auth middleware runs first)."""

    @asgi("/mcp")
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint.handle(scope, receive, send)

    return mcp
