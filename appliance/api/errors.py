"""Maps every error to RFC 9457 problem details, in one place."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, errors: list | None = None, headers: dict | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def appliance_error(_: Request, exc: ApplianceError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem(exc.status, exc.title, exc.detail, errors=exc.extra.get("errors"), headers=headers)  # type: ignore[arg-type]


def validation_error(_: Request, exc: ValidationException) -> Response:
    extra = exc.extra if isinstance(exc.extra, list) else None
    detail = exc.detail or "the request is malformed"
    if extra:
        detail = "; ".join(f"{e.get('key', 'body')}: {e.get('message')}" for e in extra if isinstance(e, dict)) or detail
    return problem(400, "Malformed request", detail, errors=extra)


def http_error(_: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large", 401: "Unauthorized"}
    detail = exc.detail
    if status == 413:
        detail = "request body exceeds the size limit (limits.max_body_bytes)"
    return problem(status, titles.get(status, "HTTP error"), detail, headers=exc.headers)


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "Internal error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS = {
    ApplianceError: appliance_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: internal_error,
}
