"""Limits on the wire, below the routes: a deadline for each request's headers, and caps on their count and size."""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from appliance.api.errors import PROBLEM_JSON, problem_body

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b"the request headers did not arrive in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol plus one rule uvicorn lacks: while the server waits on a client for
    something no handler is working on (a request's line and headers, or the rest of a body whose
    answer already went out, such as an early 413), the client has `header_timeout` seconds in
    all, else the connection is closed. Without it a client sending a byte now and then
    (slowloris) holds a socket and a parser forever: uvicorn's keep-alive timeout only runs while a
    connection sits idle after a response, and is cancelled by the first byte of the next request."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Bytes that do not complete what is awaited do not move the deadline.
        self._arm() if self._waiting() else self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._waiting():
            self._arm()  # the next request, or the rest of an unread body, is due in time too

    def _waiting(self) -> bool:
        """Whether the client owes what no handler waits for: h11 leaves IDLE once a request's
        headers are parsed; a body still coming after our answer is only being discarded."""
        their = self.conn.their_state
        return their is h11.IDLE or (their is h11.SEND_BODY and self.conn.our_state is h11.DONE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_deadline is None and not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _expire(self) -> None:
        self._header_deadline = None
        if not self._waiting() or self.transport.is_closing():
            return
        pending, _ = self.conn.trailing_data
        if pending and self.conn.their_state is h11.IDLE:
            # Part of a request came: say why the connection ends (a bare idle one just closes).
            log.warning(
                "request headers not received in time; closing the connection",
                extra={"client": self.client[0] if self.client else None, "timeout_s": self.header_timeout},
            )
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def header_deadline_protocol(header_timeout: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to give uvicorn (`Config(http=...)`) with this deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout})


class HeaderLimits:
    """Answers 431 to a request with more header fields than `max_headers`, or whose request line
    and headers exceed `max_header_bytes`, before any route or middleware sees it. (h11's own
    buffer limit only catches headers that arrive in pieces; a whole block in one read passes.)"""

    def __init__(self, app: ASGIApp, max_headers: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in headers)  # ": " and CRLF
            if len(headers) > self.max_headers or size > self.max_header_bytes:
                detail = (
                    f"the request has {len(headers)} header fields and {size} bytes of request line and "
                    f"headers; the limits are {self.max_headers} and {self.max_header_bytes} "
                    "(server.max_headers, server.max_header_bytes)"
                )
                body = json.dumps(problem_body(431, "Request header fields too large", detail)).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
