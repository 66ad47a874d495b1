"""Safe rollout of chat models: canaries (a sticky weight schedule, analysed per step, rolled back
automatically) and shadows (live requests mirrored to a version off the hot path, outputs paired).

Blue-green promotion is the registry's (core/registry.py, `promote` to production); this service
calls it when a canary passes its last step. Every change is an alias move in the family's history
(`canary` and `shadow` aliases) and an audit entry. The pure rules are appliance/models/rollout.py.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.registry import Registry
from appliance.core.shadows import Mirrored, Shadows, Watched, actor_of, audit_event, warm
from appliance.db.rollouts import RolloutStore
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound
from appliance.models.rollout import (
    CANCELLED,
    CANDIDATE,
    PROMOTED,
    ROLLED_BACK,
    RUNNING,
    STABLE,
    Criteria,
    Tally,
    analyse,
    arm_for,
    parse_steps,
    ready_to_analyse,
)
from appliance.models.router import RouteDecision
from appliance.models.runtime import ChatMessage, GenerationParams, StreamStats, TokenStream
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.registry_records import (
    AliasMove,
    Canary,
    CanaryStep,
    ModelFamily,
)

log = logging.getLogger(__name__)

CANARY_ALIAS, SHADOW_ALIAS, PRODUCTION = "canary", "shadow", "production"


@dataclass
class _Live:
    """A running canary as the hot path sees it."""

    row: dict
    tally: Tally
    analysing: threading.Lock

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def family(self) -> str:
        return self.row["family"]

    @property
    def weight(self) -> int:
        return self.row["steps"][self.row["step"]]


class Rollouts:
    """Canary and shadow for chat model families. The hot path (`assign`, `watch`, `failed`) reads
    in-memory state only; analysis, promotion and rollback run on their own thread."""

    def __init__(
        self,
        settings: Settings,
        store: RolloutStore,
        registry: Registry,
        models: ModelService,
        audit: AuditLog,
        ratings: Callable[[list[str], str], tuple[int, int]] | None = None,
    ) -> None:
        self.settings = settings
        # (thumbs down, ratings) of the answers given by some model names since a time: the
        # feedback store's, so a canary's arms are compared on what users thought of their answers.
        self.ratings = ratings
        self.store = store
        self.registry = registry
        self.models = models
        self.audit = audit
        r = settings.registry
        self.criteria = Criteria(
            min_samples=r.canary_min_samples,
            alpha=r.canary_alpha,
            max_error_rate=r.canary_max_error_rate,
            latency_tolerance=r.canary_latency_tolerance,
        )
        self._lock = threading.Lock()
        self._starting = threading.Lock()  # one canary start at a time decides "one per family"
        self._canaries: dict[str, _Live] = {}  # family key -> running canary
        self._by_id: dict[str, _Live] = {}
        self._holders: dict[str, str] = {}  # alias -> the one family key holding it (production, default)
        self.shadows = Shadows(settings, store, registry, models, audit, self._family_of)
        self.analysis_threads: list[threading.Thread] = []
        registry.listeners.append(self._alias_moved)

    def start(self) -> None:
        """Pick up the canaries that were running and the shadow settings (a step's numbers start over)."""
        for row in self.store.running():
            live = _Live(row, Tally(), threading.Lock())
            self._canaries[row["family"]] = live
            self._by_id[row["id"]] = live
        self._refresh_holders()
        self.shadows.start()

    def close(self) -> None:
        self.shadows.close()
        if self._alias_moved in self.registry.listeners:
            self.registry.listeners.remove(self._alias_moved)

    # -- reading ---------------------------------------------------------------------------------
    def decorate(self, family: ModelFamily) -> ModelFamily:
        """The family with its canary (running, else the last) and its shadow."""
        return msgspec.structs.replace(
            family, canary=self.canary(family.name), shadow=self.shadows.state(family.name)
        )

    def arms(self, family: str) -> tuple[int, int] | None:
        """(candidate, stable) versions of the family's running canary; None when none runs."""
        live = self._canaries.get(family.lower())
        return None if live is None else (live.row["candidate_version"], live.row["stable_version"])

    def canary(self, name: str) -> Canary | None:
        live = self._canaries.get(name.lower())
        row = live.row if live is not None else self.store.latest(name)
        return None if row is None else self._record(row, live)

    def _record(self, row: dict, live: _Live | None) -> Canary:
        traffic: dict = {}
        if live is not None and row["state"] == RUNNING:
            c, s = live.tally.snapshot()
            traffic = {CANDIDATE: c.summary(), STABLE: s.summary()}
        return Canary(
            id=row["id"],
            name=self.registry.registry.family(row["family"]).name,
            candidate_version=row["candidate_version"],
            stable_version=row["stable_version"],
            steps=row["steps"],
            step=row["step"],
            weight=row["steps"][row["step"]] if row["state"] == RUNNING else 0,
            min_samples=row["min_samples"],
            state=row["state"],
            reason=row["reason"],
            actor=row["actor"],
            analyses=[msgspec.convert(a, CanaryStep) for a in row["analyses"]],
            traffic=traffic,
            started_at=row["started_at"],
            updated_at=row["updated_at"],
        )

    # -- canary: changes -------------------------------------------------------------------------
    def start_canary(
        self,
        scope: Scope,
        name: str,
        version: int,
        steps: str | Sequence[int],
        min_samples: int | None = None,
        reason: str = "",
        run_id: str | None = None,
        wait: float | None = None,
    ) -> Canary:
        """Send the schedule's first share of `name`'s production traffic to `version`. The family's
        eval gate (if any) must pass first, as for a promotion to production: a canary that passes
        every step ends there."""
        scope.require_admin()
        schedule = parse_steps(steps)
        if min_samples is not None and not 1 <= min_samples <= 100_000:
            raise InvalidInput("min_samples must be from 1 to 100000", param="min_samples")
        family = self.registry.registry.family(name)
        if family.kind != "chat":
            raise InvalidInput(f"{family.name} is a {family.kind} model: canaries are for chat models")
        target = self.registry.registry.store.version(family.name, version)
        if target.state != "ready":
            raise Conflict(
                f"{family.name} version {version} is {target.state}: only a ready version gets traffic"
            )
        stable = family.aliases.get(PRODUCTION)
        if stable is None:
            raise Conflict(
                f"{family.name} has no production version to compare a canary against: promote one first "
                f"(appliance models promote {family.name} VERSION --to production)"
            )
        if stable == version:
            raise Conflict(f"{family.name} version {version} is already production")
        self._refuse_second(family.name)
        report = self.registry.gate_report(scope, family, PRODUCTION, version, run_id, wait)
        rollout_id = "canary_" + uuid.uuid4().hex[:16]
        with self._starting:  # checked again: another start may have begun while the gate ran
            self._refuse_second(family.name)
            row = self.store.add_canary(
                rollout_id,
                family.name,
                version,
                stable,
                schedule,
                min_samples or self.criteria.min_samples,
                actor_of(scope),
            )
            move = self.registry.registry.store.move_alias(
                family.name,
                CANARY_ALIAS,
                version,
                action="canary",
                actor=actor_of(scope),
                reason=reason
                or f"canary {rollout_id}: steps {','.join(map(str, schedule))}%, starting at {schedule[0]}%",
                gated=report is not None,
                gate=family.gate if report is not None else None,
                eval_report_id=report.run_id if report is not None else None,
                eval_report=msgspec.to_builtins(report) if report is not None else None,
            )
            live = _Live(row, Tally(), threading.Lock())
            with self._lock:  # published last: traffic splits from here on
                self._canaries[row["family"]] = live
                self._by_id[rollout_id] = live
        self._refresh_holders()
        warm(self.models, family.name, version)
        audit_event(
            self.audit,
            scope.principal,
            "start",
            family.name,
            version,
            {"rollout": rollout_id, "steps": schedule, "history_id": move.id, "stable": stable},
        )
        return self._record(row, live)

    def _refuse_second(self, family: str) -> None:
        with self._lock:
            running = self._canaries.get(family.lower())
        if running is not None:
            raise Conflict(
                f"{family} already has a canary running (version {running.row['candidate_version']}, "
                f"rollout {running.id}): let it finish or roll it back (appliance models rollback "
                f"{family} --alias canary)"
            )

    def rollback(self, scope: Scope, name: str, alias: str = PRODUCTION, reason: str = "") -> AliasMove:
        """`appliance models rollback`: alias `canary` stops the running canary (its candidate gets no
        more traffic); any other alias moves back as the registry does, and a production rollback
        also stops a canary measured against the production that is leaving."""
        scope.require_admin()
        if alias == CANARY_ALIAS:
            live = self._canaries.get(name.lower())
            if live is None:
                raise Conflict(f"{name} has no canary running")
            return self._end(live, ROLLED_BACK, reason or "rolled back by an admin", actor_of(scope), None)
        move = self.registry.rollback(scope, name, alias, reason)
        live = self._canaries.get(name.lower())
        if live is not None and alias == PRODUCTION:
            self._end(
                live,
                CANCELLED,
                f"production was rolled back to version {move.version}",
                actor_of(scope),
                None,
            )
        return move

    # -- canary: the hot path --------------------------------------------------------------------
    def assign(self, scope: Scope | None, decision: RouteDecision) -> RouteDecision:
        """The decision, split by a running canary when it names that family's production: the
        caller's key decides its arm (sticky); the candidate arm tries the candidate first, with the
        stable model as its fallback before the first token (a failing candidate is counted against
        it, the caller still gets an answer)."""
        if not self._canaries or scope is None or decision.route != "explicit":
            return decision
        family = self._family_of(decision.model, self._canaries)
        if family is None:
            return decision
        live = self._canaries.get(family)
        if live is None:
            return decision
        if arm_for(scope.key_id, live.id, live.weight) == STABLE:
            return replace(decision, rollout=f"{live.id}/{STABLE}")
        candidate = f"{family}@{live.row['candidate_version']}"
        return replace(
            decision,
            model=candidate,
            candidates=(candidate, *decision.candidates),
            reason=f"canary {live.id}: {live.weight}% of production",
            rollout=f"{live.id}/{CANDIDATE}",
        )

    def _family_of(self, model: str, active: dict) -> str | None:
        """The family key whose production `model` names (`fam`, `fam@production`, or a bare
        `production` held by one family), among `active`. A request for `default` arrives here as
        the default model's name, which is its family's for the built-ins."""
        name, _, qualifier = model.strip().lower().partition("@")
        if name in active and qualifier in ("", PRODUCTION):
            return name
        if not qualifier and name == PRODUCTION:
            held = self._holders.get(PRODUCTION)
            return held if held in active else None
        return None

    def watch(
        self,
        decision: RouteDecision,
        stream: TokenStream,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        plain: bool,
    ) -> TokenStream:
        """The opened chat's stream, told to the canary's tally and the shadow mirror when it ends
        (the stream itself is passed through untouched); the stream as is when neither applies."""
        live = self._by_id.get(decision.rollout.partition("/")[0]) if decision.rollout else None
        shadow = None
        if plain and not decision.rollout.endswith(f"/{CANDIDATE}"):
            shadow = self.shadows.pick(decision.model)
        if live is None and shadow is None:
            return stream
        if live is not None and decision.fallback_from and decision.rollout.endswith(f"/{CANDIDATE}"):
            # The candidate failed before its first token and stable answered: the candidate's failure.
            self._observe(live, CANDIDATE, False, None, None)
            live = None
            if shadow is None:
                return stream

        def ended(ok: bool, text: str, stats: StreamStats | None) -> None:
            if live is not None:
                arm = decision.rollout.rpartition("/")[2]
                self._observe(
                    live,
                    arm,
                    ok,
                    stats.time_to_first_token_s if stats else None,
                    stats.total_s if stats else None,
                )
            if ok and shadow is not None:
                self.shadows.mirror.offer(
                    Mirrored(
                        shadow[0],
                        shadow[1],
                        decision.model,
                        tuple(messages),
                        params,
                        text,
                        round(stats.total_s * 1000, 2) if stats else None,
                    )
                )

        return Watched(stream, ended)

    def failed(self, decision: RouteDecision, error: BaseException) -> None:
        """A chat of a canary's arm could not even start (the model's fault, not the request's)."""
        if not decision.rollout or not _models_fault(error):
            return
        rollout_id, _, arm = decision.rollout.partition("/")
        live = self._by_id.get(rollout_id)
        if live is not None:
            self._observe(live, arm, False, None, None)

    def _observe(self, live: _Live, arm: str, ok: bool, ttft_s: float | None, total_s: float | None) -> None:
        if live.row["state"] != RUNNING:
            return
        live.tally.add(arm, ok, ttft_s, total_s)
        c, s = live.tally.candidate, live.tally.stable
        if ready_to_analyse(c, s, live.weight, self._criteria(live)) and live.analysing.acquire(
            blocking=False
        ):
            # Off the request's thread: analysis writes the store and may promote or roll back.
            thread = threading.Thread(
                target=self._analyse, args=(live,), name=f"canary-{live.id}", daemon=True
            )
            self.analysis_threads.append(thread)
            thread.start()

    def _criteria(self, live: _Live) -> Criteria:
        return replace(self.criteria, min_samples=live.row["min_samples"])

    def _analyse(self, live: _Live) -> None:
        try:
            if live.row["state"] != RUNNING:
                return
            criteria = self._criteria(live)
            c, s = live.tally.snapshot()
            if not ready_to_analyse(c, s, live.weight, criteria):
                return
            ratings = self._arm_ratings(live)
            passed, checks = analyse(c, s, criteria, ratings)
            step, last = live.row["step"], live.row["step"] == len(live.row["steps"]) - 1
            outcome = "rolled_back" if not passed else ("promoted" if last else "advanced")
            entry = {
                "step": step,
                "weight": live.weight,
                "passed": passed,
                "candidate": c.summary(ratings[0] if ratings else None),
                "stable": s.summary(ratings[1] if ratings else None),
                "checks": checks,
                "outcome": outcome,
                "at": datetime.now(UTC).isoformat(),
            }
            actor = f"canary controller ({live.row['actor']})"
            if not passed:
                failed = "; ".join(f"{k['name']}: {k['detail']}" for k in checks if k["passed"] is False)
                self._end(
                    live, ROLLED_BACK, f"step {step + 1} ({live.weight}%) failed: {failed}", actor, entry
                )
            elif last:
                self._end(live, PROMOTED, f"every step passed ({len(live.row['steps'])})", actor, entry)
            else:
                self._advance(live, entry, actor)
        except Conflict:
            pass  # an admin ended it while this step was analysed
        except Exception:
            log.exception("canary analysis failed", extra={"rollout": live.id})
        finally:
            live.analysing.release()
        # Requests that arrived while this ran may already make the next step ready.
        c, s = live.tally.candidate, live.tally.stable
        if live.row["state"] == RUNNING and ready_to_analyse(c, s, live.weight, self._criteria(live)):
            if live.analysing.acquire(blocking=False):
                self._analyse(live)

    def _arm_ratings(self, live: _Live) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Thumbs-down counts of the answers each arm gave since the canary began (knowledge answers
        are rated; their model names say the arm), None when no ratings can be read."""
        if self.ratings is None:
            return None
        row = live.row
        family = row["family"]
        try:
            candidate = self.ratings([f"{family}@{row['candidate_version']}"], row["started_at"])
            stable = self.ratings([family, f"{family}@{row['stable_version']}"], row["started_at"])
        except Exception:  # ratings are evidence when there; their absence never stalls a canary
            log.exception("ratings could not be read for a canary")
            return None
        return candidate, stable

    def _advance(self, live: _Live, entry: dict, actor: str) -> None:
        row = live.row
        step = row["step"] + 1
        analyses = [*row["analyses"], entry]
        new = self.store.update_canary(live.id, step, RUNNING, "", analyses)
        live.tally.next_step()
        live.row = new  # published last: the hot path reads the new weight from here on
        family = self.registry.registry.family(row["family"]).name
        move = self.registry.registry.store.move_alias(
            family,
            CANARY_ALIAS,
            row["candidate_version"],
            action="canary-step",
            actor=actor,
            reason=f"canary {live.id}: step {step} passed, now step {step + 1} of {len(row['steps'])} "
            f"at {row['steps'][step]}%",
        )
        audit_event(
            self.audit,
            None,
            "step",
            family,
            row["candidate_version"],
            {"rollout": live.id, "history_id": move.id, "analysis": entry},
            actor,
        )

    def _end(self, live: _Live, state: str, reason: str, actor: str, entry: dict | None) -> AliasMove:
        """Stop the canary (no traffic reaches the candidate from here on), then record it: the
        `canary` alias leaves the candidate; a promotion moves production to it (blue-green)."""
        with self._lock:
            row = live.row
            if row["state"] != RUNNING:  # ended meanwhile (its analysis, or another admin)
                raise Conflict(f"canary {live.id} has already {row['state'].replace('_', ' ')}")
            live.row = {**row, "state": state}  # the hot path stops splitting now
            self._canaries.pop(row["family"], None)
        analyses = [*row["analyses"], entry] if entry is not None else row["analyses"]
        live.row = self.store.update_canary(live.id, row["step"], state, reason, analyses)
        family = self.registry.registry.family(row["family"])
        version = row["candidate_version"]
        move = self.registry.registry.store.move_alias(
            family.name,
            CANARY_ALIAS,
            None,
            action="rollback" if state == ROLLED_BACK else "remove",
            actor=actor,
            reason=f"canary {live.id} {state.replace('_', ' ')}: {reason}",
        )
        if state == PROMOTED:
            move = self._promote(family, live, actor)
        self._refresh_holders()
        detail = {"rollout": live.id, "state": state, "reason": reason, "history_id": move.id}
        audit_event(
            self.audit,
            None,
            state,
            family.name,
            version,
            detail,
            actor,
            outcome="ok" if state != ROLLED_BACK else "error",
        )
        log.info(
            "canary ended", extra={"model": family.name, "rollout": live.id, "state": state, "reason": reason}
        )
        return move

    def _promote(self, family: ModelFamily, live: _Live, actor: str) -> AliasMove:
        """The last step passed: production moves to the candidate, blue-green (preloaded, flipped)."""
        version = live.row["candidate_version"]
        start = next(
            (
                m
                for m in self.registry.registry.history(family.name)
                if m.action == "canary" and m.version == version
            ),
            None,
        )
        preloaded = self.registry.preload(family.name, version)
        move = self.registry.registry.move_alias(
            family.name,
            PRODUCTION,
            version,
            actor=actor,
            reason=f"canary {live.id} passed every step",
            action="promote",
            gated=bool(start and start.gated),
            gate=start.gate if start else None,
            report_id=start.eval_report_id if start else None,
            report=start.eval_report if start else None,
        )
        self.registry.flip_production(family.name, version, preloaded)
        self.registry.moved(move)
        return move

    # -- helpers ---------------------------------------------------------------------------------
    def _alias_moved(self, move: AliasMove) -> None:
        self._refresh_holders()
        live = self._canaries.get(move.name.lower())
        if live is not None and move.alias == PRODUCTION and move.version != live.row["stable_version"]:
            # Production changed under the canary: what it was measured against is gone.
            self._end(live, CANCELLED, f"production moved to version {move.version}", move.actor, None)

    def _refresh_holders(self) -> None:
        holders = self.registry.registry.store.alias_holders(PRODUCTION)
        self._holders = {PRODUCTION: holders[0][0].lower()} if len(holders) == 1 else {}


def _models_fault(error: BaseException) -> bool:
    if isinstance(error, ApplianceError):
        return error.status >= 500 and not isinstance(error, NotFound)
    return True
