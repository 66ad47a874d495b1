"""Maps every error to HTTP in one place: RFC 9457 problem details, or OpenAI's error envelope on /v1."""

from __future__ import annotations

import logging
import math

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Malformed request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
           413: "Payload too large", 429: "Too many requests"}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
                 415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error"}


def _openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def error_response(request: Request, status: int, title: str, detail: str, *, errors: list | None = None,
                   headers: dict | None = None, param: str | None = None, code: str | None = None) -> Response:
    if _openai(request):
        body = {"error": {"message": detail, "type": _OPENAI_TYPES.get(status, "server_error"), "param": param,
                          "code": code or ("invalid_api_key" if status == 401 else None)}}
        return Response(content=body, status_code=status, media_type="application/json", headers=headers)
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def appliance_error(request: Request, exc: ApplianceError) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = getattr(exc, "retry_after", None) or exc.extra.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(float(retry_after))))
    return error_response(request, exc.status, exc.title, exc.detail, errors=exc.extra.get("errors"),  # type: ignore[arg-type]
                          headers=headers or None, param=exc.extra.get("param"), code=exc.extra.get("code"))  # type: ignore[arg-type]


def validation_error(request: Request, exc: ValidationException) -> Response:
    extra = exc.extra if isinstance(exc.extra, list) else None
    detail = exc.detail or "the request is malformed"
    if extra:
        detail = "; ".join(f"{e.get('key', 'body')}: {e.get('message')}" for e in extra if isinstance(e, dict)) or detail
    return error_response(request, 400, "Malformed request", detail, errors=extra)


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    detail = exc.detail
    if status == 413:
        detail = "request body exceeds the size limit (limits.max_body_bytes)"
    return error_response(request, status, _TITLES.get(status, "HTTP error"), detail, headers=exc.headers)


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(request, 500, "Internal error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS = {
    ApplianceError: appliance_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: internal_error,
}
