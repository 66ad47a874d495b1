"""AsyncApplianceClient: the API over httpx.AsyncClient, for the console."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from appliance.client.base import BaseClient, auth_headers, read_answer, sse_event
from appliance.client.calls import Call
from appliance.client.errors import ApiError


class AsyncApplianceClient(BaseClient):
    """Methods return awaitables of the answer's JSON; streams are async iterators of events."""

    def __init__(
        self,
        url: str,
        key: str,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=auth_headers(key), timeout=timeout, transport=transport, verify=verify
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncApplianceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, **call.options())
        except httpx.TransportError as exc:
            raise ApiError.from_transport(exc, self.url) from None
        return read_answer(call, response)

    async def _stream(self, call: Call) -> AsyncIterator[dict]:
        try:
            async with self._http.stream(call.method, call.path, **call.options()) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ApiError.from_response(response)
                async for line in response.aiter_lines():
                    event = sse_event(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise ApiError.from_transport(exc, self.url) from None
