"""ApiError: every way a call of the API can fail, as one exception with status, title and detail."""

from __future__ import annotations

import httpx


class ApiError(Exception):
    """A failed call: the server's error answer (RFC 9457 problem details, or OpenAI's
    `{"error": {...}}` envelope on /v1), or no answer at all. `status` is the HTTP status; 0 means
    no answer (unreachable, timed out, connection lost), -1 a failure on this side (a file that
    cannot be read, an answer that cannot be understood)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title} ({status}): {detail}" if status > 0 else f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail

    @property
    def unreachable(self) -> bool:
        return self.status == 0

    @property
    def missing(self) -> bool:
        """404 or 405: no such object, or a route this (older) server does not have."""
        return self.status in (404, 405)

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """From an error answer; call `read()` first on a streamed one."""
        reason = response.reason_phrase or "Error"
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, reason, response.text.strip() or reason)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            # OpenAI's envelope has no title: the status's reason phrase stands in for one.
            return cls(response.status_code, reason, str(body["error"].get("message") or body["error"]))
        if isinstance(body, dict) and ("title" in body or "detail" in body):
            return cls(
                response.status_code, str(body.get("title") or reason), str(body.get("detail") or body)
            )
        return cls(response.status_code, reason, str(body))

    @classmethod
    def from_transport(cls, exc: httpx.TransportError, url: str) -> ApiError:
        """No answer: says what to check, instead of httpx's exception."""
        if isinstance(exc, httpx.TimeoutException):
            return cls(0, "Timeout", f"{url} did not answer in time")
        if isinstance(exc, httpx.ConnectError):
            return cls(0, "Server unreachable", f"nothing answers at {url}; is `appliance serve` running?")
        return cls(0, "Connection lost", f"the connection to {url} was lost ({type(exc).__name__})")

    @classmethod
    def from_event(cls, event: dict, title: str) -> ApiError:
        """From an `error` event of a stream (the failure came after the 200 was sent)."""
        return cls(int(event.get("status") or 500), title, str(event.get("detail") or "the stream failed"))
