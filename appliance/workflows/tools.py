"""The one door to a tool's implementation: a Tool document's `type` picks it (a built-in by name, a
`python` tool's code in the sandbox, an `http` request to an allowed host, an `sql` query over the
exposed views), and every call of a run reaches its tool through here."""

from __future__ import annotations

from appliance.workflows.builtins import BUILTINS, Builtin, Invocation, ToolFailure
from appliance.workflows.http import RequestRefused, check_template
from appliance.workflows.http import call as http_call
from appliance.workflows.sandbox import Limits, SandboxError, run
from appliance.workflows.sql import QueryRefused
from appliance.workflows.sql import output_schema as sql_output_schema

HTTP_TIMEOUT_S = 30.0
SQL_MAX_ROWS = 100


def _python(spec: dict) -> Builtin:
    name = spec["name"]

    def call(inv: Invocation, args: dict) -> dict:
        limits = Limits.of(spec.get("sandbox"), spec.get("timeout_s"))
        try:
            return run(spec["code"], args, limits, inv.stop).result
        except SandboxError as exc:
            if exc.escape:
                # Escapes and limits are audited as the run's key, and never retried.
                inv.services.sandbox_refused(inv.run_id, inv.step, name, exc.kind, str(exc), exc.blocked)
            kind = "timeout" if exc.kind == "timeout" else "error"
            raise ToolFailure(
                f"python tool {name}: {exc}", retryable=exc.kind == "error", kind=kind
            ) from None

    return Builtin(
        name,
        spec.get("side_effects", "none"),
        spec.get("input_schema") or {"type": "object"},
        spec.get("output_schema") or {"type": "object"},
        call,
    )


def _http(spec: dict) -> Builtin:
    name = spec["name"]

    def call(inv: Invocation, args: dict) -> dict:
        try:
            host = check_template(spec["http"]["url"])
        except RequestRefused as exc:
            raise ToolFailure(f"http tool {name}: {exc}", retryable=False) from None
        # Checked at every call, against the settings of now: an address the admin has since
        # removed from network.allow is no longer called.
        if not inv.services.reachable(host):
            raise ToolFailure(
                f"http tool {name}: host {host!r} is not loopback nor in settings network.allow",
                retryable=False,
            )
        return http_call(spec, args, inv.invocation_id, float(spec.get("timeout_s") or HTTP_TIMEOUT_S))

    return Builtin(
        name,
        spec.get("side_effects", "none"),
        spec.get("input_schema") or {"type": "object"},
        spec.get("output_schema") or {"type": "object"},
        call,
        # A server that honours the idempotency header may be called again under the same key.
        honours_invocation_id=bool(spec["http"].get("idempotency_header")),
    )


def _sql(spec: dict) -> Builtin:
    name = spec["name"]
    query = spec["sql"]["query"]
    max_rows = int(spec["sql"].get("max_rows", SQL_MAX_ROWS))

    def call(inv: Invocation, args: dict) -> dict:
        try:
            return inv.services.query(query, args, max_rows, inv.stop)
        except QueryRefused as exc:
            raise ToolFailure(f"sql tool {name}: {exc}", retryable=False) from None

    return Builtin(
        name,
        "none",  # read-only by construction, whatever the document says
        spec.get("input_schema") or {"type": "object"},
        sql_output_schema(spec.get("output_schema")),
        call,
    )


KINDS = {
    "builtin": lambda spec: BUILTINS[spec["builtin"]],
    "python": _python,
    "http": _http,
    "sql": _sql,
}


def implementation(spec: dict) -> Builtin:
    """What a call of the tool `spec` (as pinned to a run) runs."""
    return KINDS[spec.get("type", "builtin")](spec)
