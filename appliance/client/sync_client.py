"""ApplianceClient: the API over a blocking httpx.Client, for the CLI, doctor and backup."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx

from appliance.client.base import BaseClient, auth_headers, read_answer, sse_event
from appliance.client.calls import Call
from appliance.client.errors import ApiError


class ApplianceClient(BaseClient):
    """Methods return the answer's JSON; streams are iterators of events."""

    def __init__(
        self,
        url: str,
        key: str,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=auth_headers(key), timeout=timeout, transport=transport, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApplianceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, **call.options())
        except httpx.TransportError as exc:
            raise ApiError.from_transport(exc, self.url) from None
        return read_answer(call, response)

    def _stream(self, call: Call) -> Iterator[dict]:
        try:
            with self._http.stream(call.method, call.path, **call.options()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.from_response(response)
                for line in response.iter_lines():
                    event = sse_event(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise ApiError.from_transport(exc, self.url) from None
