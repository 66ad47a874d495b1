"""The model registry service: families and versions, intake (import and the inbox), promotion through
eval gates, rollback, history; every alias move audited. Reads need any key, changes an admin key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.evals import Evals
from appliance.db.registry import RegistryStore
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound
from appliance.models.builtin_models import import_builtins
from appliance.models.inbox import ModelInbox
from appliance.models.manifest import ModelSpec
from appliance.models.pool import Resolve
from appliance.models.probe import ProbeLimits
from appliance.models.registry import (
    GATED_ALIASES,
    IntakeLimits,
    ModelRegistry,
    check_alias,
    default_memory_budget,
)
from appliance.models.remote import redacted
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.records import GateReport
from appliance.registry_records import AliasMove, ModelFamily, ModelVersion, RemoteEndpoint, ResolvedModel

log = logging.getLogger(__name__)


def intake_limits(settings: Settings) -> IntakeLimits:
    reg = settings.registry
    budget = reg.probe_memory_mb * 1024**2 if reg.probe_memory_mb > 0 else default_memory_budget()
    return IntakeLimits(
        max_bytes=reg.max_model_bytes or budget,
        probe=ProbeLimits(
            memory_bytes=budget,
            timeout_s=reg.probe_timeout_seconds,
            context_length=reg.probe_context_length,
            max_tokens=reg.probe_max_tokens,
        ),
    )


class Registry:
    """The registry as a capability: `resolve` is the one call serving needs."""

    def __init__(
        self,
        settings: Settings,
        store: RegistryStore,
        models: ModelService,
        evals: Evals,
        audit: AuditLog,
        data_dir: Path,
    ) -> None:
        self.settings = settings
        self.models = models
        self.evals = evals
        self.audit = audit
        self.data_dir = data_dir
        self.registry = ModelRegistry(store, models.models_dir, intake_limits(settings), models.remotes)
        # Told of every promotion and rollback (the rollout service keeps its view of aliases fresh).
        self.listeners: list[Callable[[AliasMove], None]] = []
        self.inbox = ModelInbox(
            self.registry.models_dir / "inbox",
            self.registry.take_from_inbox,
            settings.registry.inbox_poll_seconds,
        )

    def start(self) -> None:
        """Import the built-in and manifest models (idempotent), then watch the inbox."""
        try:
            import_builtins(
                self.registry,
                self.data_dir,
                self.settings.llm.model,
                self.models.embedder.name if not self.settings.embedding.model_dir else None,
            )
        except Exception:
            log.exception("the built-in models could not be imported into the registry")
        if self.settings.registry.watch_inbox:
            self.inbox.start()

    def close(self) -> None:
        self.inbox.stop()

    # -- reading ---------------------------------------------------------------------------------
    def list(self, scope: Scope) -> list[ModelFamily]:
        return self.registry.families()

    def get(self, scope: Scope, name: str) -> ModelFamily:
        return self.registry.family(name)

    def history(self, scope: Scope, name: str) -> list[AliasMove]:
        return self.registry.history(name)

    def resolve(self, reference: str, kind: str | None = None) -> ResolvedModel:
        """Serving's door: the verified version a reference names (see ModelRegistry.resolve)."""
        return self.registry.resolve(reference, kind)

    def serving_resolver(self, fallback: Resolve, known: Callable[[], list[ModelSpec]]) -> Resolve:
        """The pool's resolver: a registry reference (`name@3`, `name@staging`, an alias) becomes
        its verified weights, served under the reference's family name (`name@version` when the
        reference named a version or alias, so two versions can be resident side by side). A
        built-in keeps its own spec (an inline chat template); what the registry does not know
        (a manifest name before the registry has it, an admin's file path) goes to `fallback`."""

        def resolve(reference: str) -> tuple[ModelSpec, Path]:
            try:
                found = self.registry.resolve(reference, "chat")
            except NotFound:
                return fallback(reference)
            named = found.name if "@" not in reference else f"{found.name}@{found.version}"
            if found.remote is not None:  # served by another server: no file, no memory here
                spec = ModelSpec(
                    name=named,
                    file="",
                    sha256=found.sha256,
                    size=0,
                    context_length=found.context_length,
                    capabilities=tuple(found.tags),
                    family=found.name,
                    source=f"registry {found.name}@{found.version} (remote {found.remote.model})",
                    remote=found.remote,
                )
                return spec, Path()
            base = next((m for m in known() if m.name.lower() == found.name.lower()), None)
            if base is not None and base.sha256 == found.sha256:
                return replace(base, name=named), Path(found.path)
            spec = ModelSpec(
                name=named,
                file=Path(found.path).name,
                sha256=found.sha256,
                size=Path(found.path).stat().st_size,
                context_length=found.context_length,
                capabilities=tuple(found.tags),
                family=found.name,
                source=f"registry {found.name}@{found.version}",
            )
            return spec, Path(found.path)

        return resolve

    def default_chat(self) -> str | None:
        """What the chat model loads at start: the `default` alias's model, as ModelService names it
        (a built-in or manifest name, else the file's path); None: the settings decide (an explicit
        `llm.model` always does: a registered family named there already holds `default`)."""
        if self.settings.llm.model.strip():
            return None
        try:
            return self._default_reference()
        except Exception as exc:
            log.warning("the default alias cannot be served; the settings decide", extra={"error": str(exc)})
            return None

    def _default_reference(self) -> str:
        resolved = self.registry.resolve("default", "chat")  # refuses changed weights
        known = {m["name"].lower() for m in self.models.available()}
        return resolved.name if resolved.name.lower() in known else resolved.path

    # -- changes (admin) -------------------------------------------------------------------------
    def import_model(self, scope: Scope, path: str, name: str | None = None) -> ModelVersion:
        """Register, verify and probe a GGUF file on the server (blocking while the probe runs)."""
        scope.require_admin()
        if not path or "\x00" in path:
            raise InvalidInput("give the path of a GGUF file on the server", param="path")
        version = self.registry.register_file(Path(path), name)
        self.audit.append(
            "model.import",
            principal=scope.principal,
            outcome="ok" if version.state != "rejected" else "error",
            target=f"{version.name}@{version.version}",
            detail={"state": version.state, "reason": version.reason, "sha256": version.sha256},
        )
        return version

    def import_remote(
        self,
        scope: Scope,
        endpoint: RemoteEndpoint,
        name: str | None = None,
        context_length: int | None = None,
    ) -> ModelVersion:
        """Register a model an OpenAI-compatible server serves at an allow-listed URL, and probe it
        (blocking while the probe runs); a URL outside network.allow is refused before anything connects."""
        scope.require_admin()
        try:
            version = self.registry.register_remote(endpoint, name, context_length)
        except InvalidInput as exc:  # refused by the network policy (or a bad field): on record too
            self.audit.append(
                "model.import",
                principal=scope.principal,
                outcome="denied",
                target=name or endpoint.model,
                detail={"backend": "remote", "remote": redacted(endpoint.url), "error": exc.detail},
            )
            raise
        self.audit.append(
            "model.import",
            principal=scope.principal,
            outcome="ok" if version.state != "rejected" else "error",
            target=f"{version.name}@{version.version}",
            detail={
                "state": version.state,
                "reason": version.reason,
                "backend": "remote",
                "remote": endpoint.url,
                "remote_model": endpoint.model,
            },
        )
        return version

    def set_gate(self, scope: Scope, name: str, gate: str | None) -> ModelFamily:
        """The eval gate a promotion of this family to staging or production must pass (None: ungated)."""
        scope.require_admin()
        family = self.registry.family(name)
        if gate is not None and gate not in {g.name for g in self.evals.list_gates(scope)}:
            raise NotFound(f"gate {gate!r} does not exist: create it with `appliance eval gate-create`")
        self.registry.store.set_gate(family.name, gate)
        self.audit.append("model.gate", principal=scope.principal, target=family.name, detail={"gate": gate})
        return self.registry.family(name)

    def promote(
        self,
        scope: Scope,
        name: str,
        version: int,
        alias: str,
        reason: str = "",
        run_id: str | None = None,
        wait: float | None = None,
    ) -> AliasMove:
        """Point `alias` at `version`. To staging or production through the family's eval gate when it
        has one (the gate's set run on `name@version`, or the finished run `run_id`); the history row
        keeps the report, or says the move was ungated."""
        scope.require_admin()
        check_alias(alias)
        family = self.registry.family(name)
        target = self.registry.store.version(family.name, version)
        if target.state == "rejected":
            self._audit_move(scope, family.name, alias, version, "denied", {"reason": target.reason})
            raise Conflict(
                f"{family.name} version {version} was rejected ({target.reason}): it can never be promoted"
            )
        # Refused before a gate spends an eval run on it.
        if target.state != "ready":
            raise Conflict(
                f"{family.name} version {version} is {target.state}: only a ready version is promoted"
            )
        if family.aliases.get(alias) == version:
            raise Conflict(f"{alias!r} of {family.name} is already version {version}")
        report = self.gate_report(scope, family, alias, version, run_id, wait)
        preloaded = self.preload(family.name, version) if alias == "production" else None
        move = self.registry.move_alias(
            family.name,
            alias,
            version,
            actor=_actor(scope),
            reason=reason,
            gated=report is not None,
            gate=family.gate if report is not None else None,
            report_id=report.run_id if report is not None else None,
            report=msgspec.to_builtins(report) if report is not None else None,
        )
        if preloaded is not None:
            self.flip_production(family.name, version, preloaded)
        self._audit_move(scope, family.name, alias, version, "ok", _move_detail(move))
        self._serve_if_default(move)
        self.moved(move)
        return move

    def gate_report(
        self,
        scope: Scope,
        family: ModelFamily,
        alias: str,
        version: int,
        run_id: str | None = None,
        wait: float | None = None,
    ) -> GateReport | None:
        """The passing report of the family's gate for moving `alias` to `version` (None: no gate
        applies); a failed, pending or impossible check is refused (Conflict) and audited."""
        if alias not in GATED_ALIASES or not family.gate:
            return None
        try:
            report = self._check_gate(scope, family.gate, family.name, version, run_id, wait)
        except ApplianceError as exc:  # the run failed (e.g. the candidate could not be served)
            self._audit_move(
                scope, family.name, alias, version, "denied", {"gate": family.gate, "error": exc.detail}
            )
            raise Conflict(
                f"gate {family.gate!r} could not check {family.name}@{version}: {exc.detail}"
            ) from None
        if report.state != "passed":
            detail = {"gate": family.gate, "run": report.run_id, "state": report.state}
            self._audit_move(scope, family.name, alias, version, "denied", detail)
            if report.state == "pending":
                raise Conflict(
                    f"gate {family.gate!r}: run {report.run_id} has not finished; promote again with "
                    f"--run {report.run_id} once it has"
                )
            failed = "; ".join(c.detail for c in report.checks if not c.passed)
            raise Conflict(f"blocked by gate {family.gate!r} (run {report.run_id}): {failed}")
        return report

    def rollback(self, scope: Scope, name: str, alias: str = "production", reason: str = "") -> AliasMove:
        """Move `alias` back to the version it held before (no gate: going back is always allowed)."""
        scope.require_admin()
        check_alias(alias)
        family = self.registry.family(name)
        target = self.registry.rollback_target(family.name, alias)
        preloaded = self.preload(family.name, target) if alias == "production" else None
        move = self.registry.move_alias(
            family.name, alias, target, actor=_actor(scope), reason=reason or "rollback", action="rollback"
        )
        if preloaded is not None:
            self.flip_production(family.name, target, preloaded)
        self._audit_move(scope, family.name, alias, target, "ok", _move_detail(move))
        self._serve_if_default(move)
        self.moved(move)
        return move

    # -- blue-green ------------------------------------------------------------------------------
    def preload(self, family: str, version: int) -> bool:
        """Before production moves to `version`: load it beside the version serving the family now,
        when that one is resident (else nothing serves the family yet, and the next request loads
        the new version) and the pool's memory budget allows. True: loaded and ready to flip to."""
        pool = self.models.pool
        if pool.resident(family) is None or self.models.serves_default(family):
            return False
        try:
            spec, path = pool.resolve(f"{family}@{version}")
            pool.get_spec(spec, path, wait=True, timeout_s=self.settings.llm.load_timeout_s)
        except ApplianceError as exc:  # no room, or it failed to load: the flip is cold instead
            log.warning(
                "the new production version was not preloaded; its first request loads it",
                extra={"model": family, "version": version, "error": exc.detail},
            )
            return False
        return True

    def flip_production(self, family: str, version: int, preloaded: bool) -> None:
        """After production moved to `version`: requests for the family go to the new version at once
        (preloaded: the pool serves the family's name by it, atomically) or from the next load; either
        way requests running on the old version finish there, and it leaves once they have."""
        pool = self.models.pool
        if self.models.serves_default(family):
            return  # the default chat model follows the `default` alias (_serve_if_default)
        if not (preloaded and pool.flip(family, f"{family}@{version}")):
            pool.retire(family)
        log.info("production flipped", extra={"model": family, "version": version, "preloaded": preloaded})

    def moved(self, move: AliasMove) -> None:
        """Tell the listeners (the rollout service) that an alias moved."""
        for listener in self.listeners:
            try:
                listener(move)
            except Exception:
                log.exception("an alias-move listener failed")

    # -- helpers ---------------------------------------------------------------------------------
    def _check_gate(
        self, scope: Scope, gate_name: str, family: str, version: int, run_id: str | None, wait: float | None
    ) -> GateReport:
        if run_id is None:
            gate = next((g for g in self.evals.list_gates(scope) if g.name == gate_name), None)
            if gate is None:
                raise Conflict(f"the gate {gate_name!r} of {family} no longer exists: set another one")
            if gate.run_options is None:
                raise InvalidInput(
                    f"gate {gate_name!r} has no run options: give the finished eval run (--run)"
                )
            o = gate.run_options
            # The candidate answers the gate's set, not whatever model is serving now.
            model = None if o.retrieval_only else f"{family}@{version}"
            run = self.evals.start_run(
                scope, gate.set_name, o.collection, o.mode, o.top_k, o.limit, o.retrieval_only, model
            )
            self.evals.jobs.wait(run.job_id, wait)
            run_id = run.id
        return self.evals.check_gate(scope, gate_name, run_id, wait=0.01)

    def _audit_move(
        self, scope: Scope, family: str, alias: str, version: int, outcome: str, detail: dict
    ) -> None:
        self.audit.append(
            "model.alias",
            principal=scope.principal,
            outcome=outcome,
            target=f"{family}@{alias}",
            detail={"version": version, **detail},
        )

    def _serve_if_default(self, move: AliasMove) -> None:
        """The served chat model follows `default` (until the pool reads the registry itself)."""
        if move.alias != "default" or move.version is None:
            return
        if self.models.health().get("state") not in ("loaded", "failed"):
            return
        try:
            self.models.start_load(self._default_reference())
        except Exception as exc:
            log.warning(
                "default moved but the chat model could not be switched now",
                extra={
                    "model": move.name,
                    "version": move.version,
                    "error": getattr(exc, "detail", str(exc)),
                },
            )


def _actor(scope: Scope) -> str:
    p = scope.principal
    return f"{p.name} ({p.key_id})" if p.name else p.key_id


def _move_detail(move: AliasMove) -> dict:
    return {
        "history_id": move.id,
        "action": move.action,
        "previous_version": move.previous_version,
        "gated": move.gated,
        "gate": move.gate,
        "eval_report_id": move.eval_report_id,
        "reason": move.reason,
    }
