"""The one door to a tool's implementation: a Tool document's `type` picks it (a built-in by name, or a
`python` tool's code in the sandbox), and every call of a run reaches its tool through here."""

from __future__ import annotations

from appliance.workflows.builtins import BUILTINS, Builtin, Invocation, ToolFailure
from appliance.workflows.sandbox import Limits, SandboxError, run


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


KINDS = {"builtin": lambda spec: BUILTINS[spec["builtin"]], "python": _python}


def implementation(spec: dict) -> Builtin:
    """What a call of the tool `spec` (as pinned to a run) runs."""
    return KINDS[spec.get("type", "builtin")](spec)
