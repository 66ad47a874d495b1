"""Validations of applied plans: predicted against measured, what each teaches a model's refit
(appliance/planner/validation.py), the verdict on each promised SLO, and the rollback a miss offers
or, when asked, does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from appliance.core.access import Scope
from appliance.db.plans import PlanStore
from appliance.errors import ApplianceError, Conflict, NotFound
from appliance.observability.audit import AuditLog
from appliance.plan_records import Calibration, PlanApply, Refit, RefitPoint, RollbackOutcome, Validation
from appliance.planner.validation import combine, point, verdicts


class PlanValidations:
    """The validation history and the refit factors it yields; `calibration` is the planner's current
    one, `rollback` its undo of the applied plan."""

    def __init__(
        self,
        store: PlanStore,
        audit: AuditLog | None,
        calibration: Callable[[], Calibration],
        rollback: Callable[[Scope], PlanApply],
    ) -> None:
        self.store = store
        self.audit = audit
        self._calibration = calibration
        self._rollback = rollback

    def record(self, caller: Scope, validation: dict, auto_rollback: bool = False) -> Validation:
        """Store what `plan validate` measured against what was predicted, with what it teaches (the
        model's refit: appliance/planner/validation.py) and the verdict on each promised SLO. A promise
        missed by more than its interval on the applied configuration offers the rollback, or with
        `auto_rollback` does it; either way the record and the audit log say which."""
        caller.require_admin()
        record = msgspec.convert(
            {**validation, "id": uuid.uuid4().hex[:12], "created_at": datetime.now(UTC).isoformat()},
            Validation,
        )
        learned = point(record)
        if learned is not None:
            earlier = self._points(learned.model)
            refit = combine(learned.model, learned.calibration_id, [(record.id, learned), *earlier])
            learned = msgspec.structs.replace(learned, factors_after=refit)
        applied = self._applied_match(record)
        promises: dict[str, tuple[float, str]] = {}
        if applied is not None:
            intent = applied.intent or {}
            if intent.get("p95_ttft_ms"):
                promises["p95 ttft ms"] = (float(intent["p95_ttft_ms"]), f"plan {applied.config_id}")
            if intent.get("tokens_per_s_per_user"):
                promises["tokens/s per user"] = (
                    float(intent["tokens_per_s_per_user"]),
                    f"plan {applied.config_id}",
                )
        if record.slo_p95_ttft_ms is not None:
            promises["p95 ttft ms"] = (record.slo_p95_ttft_ms, "the command line")
        judged = verdicts(record, promises)
        rollback = None
        if any(v.verdict == "missed" for v in judged):
            rollback = self._missed(caller, applied, auto_rollback)
        record = msgspec.structs.replace(record, refit=learned, verdicts=judged, rollback=rollback)
        self.store.save_validation(record)
        if self.audit is not None:
            self.audit.append(
                "plan.validate",
                principal=caller.principal,
                outcome="ok" if all(v.verdict != "missed" for v in judged) else "error",
                target=record.config_id,
                detail={
                    "validation_id": record.id,
                    "verdicts": {v.slo: v.verdict for v in judged},
                    "rollback": rollback.state if rollback else None,
                    "refit": msgspec.to_builtins(learned.factors_after) if learned else None,
                },
            )
        return record

    def _missed(self, caller: Scope, applied: PlanApply | None, auto: bool) -> RollbackOutcome:
        if applied is None:
            return RollbackOutcome(
                state="not applicable",
                detail="the validated configuration is not the applied plan's: nothing to roll back",
            )
        if not auto:
            return RollbackOutcome(
                state="offered",
                command="appliance plan rollback",
                apply_id=applied.id,
                config_id=applied.config_id,
            )
        try:
            done = self._rollback(caller)
        except ApplianceError as exc:
            return RollbackOutcome(
                state="failed", apply_id=applied.id, config_id=applied.config_id, detail=exc.detail
            )
        return RollbackOutcome(state="done", apply_id=done.id, config_id=done.config_id, health=done.health)

    def _applied_match(self, record: Validation) -> PlanApply | None:
        """The apply in force when the validated configuration is the one it applied (model, slots and
        context; the threads are llama.cpp's resolved count, not always the plan's 0)."""
        last = self.store.latest_applied()
        if last is None or not record.model or not last.after.default_model:
            return None
        after = last.after
        same = (
            record.model.lower() == after.default_model.lower()
            and record.slots == after.slots
            and record.context == after.context_length
        )
        return last if same else None

    def _points(self, model: str) -> list[tuple[str, RefitPoint]]:
        return [
            (v.id, v.refit)
            for v in self.store.validations(limit=200)
            if v.refit is not None and v.refit.model.lower() == model.lower()
        ]

    def refit(self, model: str, cal: Calibration | None = None) -> Refit | None:
        """The factors in force for a model on the current calibration; None while no validation counts."""
        cal = cal or self._calibration()
        factors = combine(model, cal.id, self._points(model))
        return factors if factors.validations else None

    def refits(self, cal: Calibration | None = None) -> list[Refit]:
        cal = cal or self._calibration()
        models = {v.refit.model for v in self.store.validations(limit=200) if v.refit is not None}
        return [r for m in sorted(models) if (r := self.refit(m, cal)) is not None]

    def drop_refit(self, caller: Scope, validation_id: str, dropped: bool = True) -> Validation:
        """Undo (or redo) what one validation taught: its ratios leave the model's factors."""
        caller.require_admin()
        record = self.store.validation(validation_id)
        if record is None:
            raise NotFound(f"no validation {validation_id!r}: see `appliance plan validations`")
        if record.refit is None:
            raise Conflict(f"validation {validation_id} taught nothing to refit")
        record = msgspec.structs.replace(record, refit=msgspec.structs.replace(record.refit, dropped=dropped))
        self.store.save_validation(record)
        if self.audit is not None:
            self.audit.append(
                "plan.refit.drop" if dropped else "plan.refit.restore",
                principal=caller.principal,
                outcome="ok",
                target=validation_id,
                detail={"model": record.refit.model},
            )
        return record

    def all(self) -> list[Validation]:
        return self.store.validations()
