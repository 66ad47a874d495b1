"""What the OpenAPI document says that Litestar cannot infer from the handlers: the error answers of
each operation (RFC 9457 problem details under /api, OpenAI's error envelope under /v1) and which
operations need the bearer key.

Every operation documents the errors any request to it can meet; a route adds those only it can
answer with `errors=(...)` in its decorator. The schema fuzz test (tests/api/test_schema_fuzz.py)
fails on any status or body the document does not declare, so this stays true.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, Schema

from appliance.api.dependencies import admin_only
from appliance.api.errors import PROBLEM_JSON
from appliance.api.schemas import Problem

BEARER = [{"bearer": []}]

DESCRIPTIONS = {
    400: "Malformed request or invalid input",
    401: "Missing, invalid or revoked API key",
    403: "The key's role does not allow this",
    404: "Not found, or outside the key's collections (both look the same)",
    409: "Conflicts with the current state",
    413: "Body or file over its size limit",
    415: "Unsupported or unreadable format",
    422: "The document could not be ingested",
    429: "Rate limit or queue full; retry after `Retry-After` seconds",
    503: "A component is not ready yet (a model loading or not loaded)",
}
# The health probes answer without a key and take no input.
_PROBES = {"/healthz", "/readyz"}


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    """OpenAI's error envelope, as /v1 answers every error."""

    error: OpenAIErrorDetail


@dataclass
class StreamingOperation(Operation):
    """An operation whose 200 is JSON, or server-sent events when the request asks to `stream`."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            # In OpenAPI 3.1 an event stream's schema describes one event.
            event = Schema(
                type="object",
                description="one server-sent event; `data` is JSON, or `[DONE]` closing a /v1 stream",
                properties={"event": Schema(type="string"), "data": Schema(type="string")},
                required=["data"],
            )
            events = OpenAPIMediaType(schema=event)
            ok.content = {**(ok.content or {}), "text/event-stream": events}


def needs_key(handler: HTTPRouteHandler) -> bool:
    """Behind the bearer-key middleware, or a route that checks the key itself (`checks_key`)."""
    return not handler.opt.get("exclude_from_auth") or bool(handler.opt.get("checks_key"))


def error_statuses(handler: HTTPRouteHandler, path: str) -> set[int]:
    if path in _PROBES:
        return set(handler.opt.get("errors", ()))
    statuses = {400, *handler.opt.get("errors", ())}
    if needs_key(handler):
        statuses |= {401, 429}  # every keyed request is rate-limited per key
    if any(admin_only in (layer.guards or ()) for layer in handler.ownership_layers):
        statuses.add(403)
    if "{" in path:
        statuses.add(404)
    if handler.http_methods & {"POST", "PUT", "PATCH"}:
        statuses.add(413)  # limits.max_body_bytes
    return statuses


def _spec(status: int, openai: bool) -> ResponseSpec:
    if openai:
        return ResponseSpec(OpenAIError, description=DESCRIPTIONS[status], generate_examples=False)
    return ResponseSpec(
        Problem, description=DESCRIPTIONS[status], media_type=PROBLEM_JSON, generate_examples=False
    )


def document_operations(app: Litestar) -> None:
    """Declare each operation's error answers and security requirement on its handler."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            openai = route.path.startswith("/v1/")
            declared = {s: _spec(s, openai) for s in sorted(error_statuses(handler, route.path))}
            handler.responses = {**declared, **(handler.responses or {})}
            if needs_key(handler):
                handler.security = BEARER
            if handler.opt.get("streams"):
                handler.operation_class = StreamingOperation
