"""Maps errors to HTTP: RFC 9457 problem details (the app's handlers) or OpenAI's envelope (the /v1 router's).

One serializer per wire format, used by the exception handlers and by streams that fail after
their response started (api/sse.py).
"""

from __future__ import annotations

import errno
import logging
import math
import re
from collections.abc import Callable

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Malformed request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    429: "Too many requests",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def problem_body(status: int, title: str, detail: str, errors: list | None = None) -> dict:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def openai_body(status: int, detail: str, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {
            "message": detail,
            "type": _OPENAI_TYPES.get(status, "server_error"),
            "param": param,
            "code": code or ("invalid_api_key" if status == 401 else None),
        }
    }


def error_of(exc: ApplianceError, openai: bool) -> dict:
    """An ApplianceError as the body of either wire format (also inside SSE streams)."""
    if openai:
        return openai_body(exc.status, exc.detail, exc.extra.get("param"), exc.extra.get("code"))
    return problem_body(exc.status, exc.title, exc.detail, exc.extra.get("errors"))


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def _param_of(errors: list | None) -> str | None:
    """The request field a validation error is about, as OpenAI's `param` names it (`messages[0].foo`)."""
    for e in errors or ():
        if not isinstance(e, dict):
            continue
        key = e.get("key")
        path = "" if key in (None, "data", "body") else str(key)
        unknown = _UNKNOWN_FIELD.search(str(e.get("message", "")))
        if unknown:
            return f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        if path:
            return path
    return None


def storage_failure(exc: BaseException) -> tuple[int, str, str] | None:
    """A full data disk, or the database stopped by an earlier storage failure, as (status, title,
    detail): the operator's problem to fix, not a bug, and never a 500 with "unexpected error"."""
    seen: BaseException | None = exc
    for _ in range(8):  # the exception and what it was raised from
        if seen is None:
            break
        text = str(seen)
        if "database has been invalidated" in text:
            return (
                503,
                "Database stopped",
                "the database stopped after a fatal storage error (is the data disk full?): "
                "free space, then restart the server",
            )
        # SQLite (the job queue's Huey storage) says SQLITE_FULL in its own words.
        if (
            (isinstance(seen, OSError) and seen.errno == errno.ENOSPC)
            or "No space left on device" in text
            or "database or disk is full" in text
        ):
            return 507, "Insufficient storage", "the data disk is full: free space, then retry"
        seen = seen.__cause__ or seen.__context__
    return None


class _Format:
    """One wire format's exception handlers."""

    def __init__(self, openai: bool) -> None:
        self.openai = openai

    def respond(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list | None = None,
        headers: dict | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> Response:
        if self.openai:
            return Response(
                openai_body(status, detail, param, code),
                status_code=status,
                media_type="application/json",
                headers=headers,
            )
        return Response(
            problem_body(status, title, detail, errors),
            status_code=status,
            media_type=PROBLEM_JSON,
            headers=headers,
        )

    def appliance_error(self, request: Request, exc: ApplianceError) -> Response:
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        retry_after = getattr(exc, "retry_after", None) or exc.extra.get("retry_after")
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
        return self.respond(
            exc.status,
            exc.title,
            exc.detail,
            errors=exc.extra.get("errors"),  # type: ignore[arg-type]
            headers=headers or None,
            param=exc.extra.get("param"),  # type: ignore[arg-type]
            code=exc.extra.get("code"),
        )  # type: ignore[arg-type]

    def validation_error(self, request: Request, exc: ValidationException) -> Response:
        extra = exc.extra if isinstance(exc.extra, list) else None
        detail = exc.detail or "the request is malformed"
        if extra:
            detail = (
                "; ".join(f"{e.get('key', 'body')}: {e.get('message')}" for e in extra if isinstance(e, dict))
                or detail
            )
        return self.respond(400, "Malformed request", detail, errors=extra, param=_param_of(extra))

    def http_error(self, request: Request, exc: HTTPException) -> Response:
        status = exc.status_code
        detail = exc.detail
        if status == 413:
            detail = "request body exceeds the size limit (limits.max_body_bytes)"
        return self.respond(status, _TITLES.get(status, "HTTP error"), detail, headers=exc.headers)

    def internal_error(self, request: Request, exc: Exception) -> Response:
        storage = storage_failure(exc)
        if storage is not None:
            status, title, detail = storage
            log.error(detail, extra={"path": request.url.path, "error": str(exc)[:500]})
            return self.respond(status, title, detail)
        log.exception("unhandled error", extra={"path": request.url.path})
        return self.respond(500, "Internal error", "an unexpected error occurred; it has been logged")

    def handlers(self) -> dict[type[Exception], Callable]:
        return {
            ApplianceError: self.appliance_error,
            ValidationException: self.validation_error,
            HTTPException: self.http_error,
            Exception: self.internal_error,
        }


OPENAI_HANDLERS = _Format(openai=True).handlers()
_PROBLEMS = _Format(openai=False)
_UNROUTED_OPENAI = _Format(openai=True)


def _unrouted_http_error(request: Request, exc: HTTPException) -> Response:
    # A request no route matched (404, 405) has no router to pick its format: its path does.
    if request.scope.get("route_handler") is None and request.url.path.startswith("/v1/"):
        return _UNROUTED_OPENAI.http_error(request, exc)
    return _PROBLEMS.http_error(request, exc)


PROBLEM_HANDLERS = {**_PROBLEMS.handlers(), HTTPException: _unrouted_http_error}
