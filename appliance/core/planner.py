"""Planner: calibrates this box, predicts a configuration's latency, throughput and memory under a load,
recommends configurations for a deployment intent, renders them for a GPU cluster, applies one to this
box (and rolls it back), and keeps the validations' predicted-vs-measured history."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from pathlib import Path

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.gateway import Gateway
from appliance.core.plan_validations import PlanValidations
from appliance.core.registry import Registry
from appliance.db.plans import PlanStore
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound, NotReady
from appliance.models.runtime import GenerationParams
from appliance.models.service import ModelService
from appliance.observability.audit import AuditLog
from appliance.plan_records import (
    Calibration,
    DeploymentIntent,
    IntentDraft,
    PlanApply,
    Refit,
    ServingState,
)
from appliance.planner import predict as model
from appliance.planner.hardware import GPU_CATALOGUE, this_box
from appliance.planner.render import kserve_manifest, vllm_args
from appliance.planner.serving import ServingConfig, cpu_costs, gpu_costs
from appliance.planner.shape import ModelShape, read_shape
from appliance.planner.sweep import sweep

log = logging.getLogger(__name__)
REFERENCE_MODEL = "SmolLM2-135M-Instruct"  # small enough to calibrate in minutes on two cores
REFINED = 5  # the top recommendations re-predicted by simulation


class Planner:
    """The capacity planner over the stored calibrations (the model itself: appliance/planner/)."""

    def __init__(
        self,
        settings: Settings,
        store: PlanStore,
        models_dir: Path,
        knowledge=None,
        embedder=None,
        *,
        registry: Registry | None = None,
        models: ModelService | None = None,
        audit: AuditLog | None = None,
        gateway: Gateway | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.models_dir = models_dir
        self.knowledge = knowledge
        self.embedder = embedder
        self.registry = registry  # apply and rollback need these three; predictions do not
        self.models = models
        self.audit = audit
        self.gateway = gateway  # `plan chat` reads the intent through the appliance's own chat path
        self._applying = threading.Lock()
        self._calibrating = threading.Lock()
        self._stop = threading.Event()
        self._status: dict = {"state": "idle", "step": None, "error": None, "calibration_id": None}
        self.validations = PlanValidations(store, audit, self.calibration, self.rollback)

    # -- models ------------------------------------------------------------------------------------
    def model_files(self) -> dict[str, Path]:
        """The chat models whose weights are on this box (nothing is assembled or fetched to plan)."""
        from appliance.models.manifest import QWEN_CODER, SMOLLM2, list_models, smollm2_path

        found: dict[str, Path] = {}
        for spec in list_models(self.models_dir):
            if spec is SMOLLM2:
                try:
                    found[spec.name] = smollm2_path()
                except NotReady:
                    continue
            else:
                path = self.models_dir / spec.file
                if path.is_file() or (spec is QWEN_CODER and path.is_file()):
                    found[spec.name] = path
        return found

    def shape(self, name: str) -> ModelShape:
        files = self.model_files()
        for known, path in files.items():
            if known.lower() == name.lower():
                return read_shape(path, known)
        candidate = Path(name).expanduser()
        if candidate.suffix.lower() == ".gguf" and candidate.is_file():
            return read_shape(candidate, candidate.stem)
        raise NotFound(
            f"unknown model {name!r}: this box has {', '.join(files) or 'none'}, or give a .gguf path"
        )

    # -- calibration -------------------------------------------------------------------------------
    def start_calibration(self, caller: Scope, quick: bool = False, model_name: str | None = None) -> dict:
        """Calibrate on a thread of its own (minutes); `calibration_status` follows it. 409 while one runs."""
        caller.require_admin()
        self.model_path(model_name or REFERENCE_MODEL)  # a bad name is a 404 now, not a failure later
        if not self._calibrating.acquire(blocking=False):
            raise Conflict("a calibration is already running")

        def run() -> None:
            try:
                self._calibrate(caller, quick, model_name)
            except Exception as exc:  # noqa: BLE001 - reported through the status
                self._status = {**self._status, "state": "failed", "error": str(exc)}
                log.warning("calibration failed", extra={"error": str(exc)})
            finally:
                self._calibrating.release()

        self._status = {
            "state": "running",
            "step": "starting",
            "error": None,
            "calibration_id": None,
            "quick": quick,
        }
        threading.Thread(target=run, name="plan-calibrate", daemon=True).start()
        return self._status

    def calibration_status(self) -> dict:
        return dict(self._status)

    def close(self) -> None:
        self._stop.set()

    def model_path(self, name: str) -> Path:
        path = self.model_files().get(name)
        if path is None:
            raise NotFound(
                f"model {name!r} is not on this box: {', '.join(self.model_files()) or 'none'} are"
            )
        return path

    def _progress(self, step: str) -> None:
        if self._stop.is_set():
            raise NotReady("the appliance is stopping: calibration abandoned")
        self._status = {**self._status, "step": step}
        log.info("calibrating", extra={"step": step})

    def calibrate(self, caller: Scope, quick: bool = False, model_name: str | None = None) -> Calibration:
        """Calibrate now (blocking) and store the result."""
        caller.require_admin()
        if not self._calibrating.acquire(blocking=False):
            raise Conflict("a calibration is already running")
        try:
            return self._calibrate(caller, quick, model_name)
        finally:
            self._calibrating.release()

    def _calibrate(self, caller: Scope, quick: bool, model_name: str | None) -> Calibration:
        from appliance.models.loading import serving_threads
        from appliance.planner.calibrate import calibrate

        name = model_name or REFERENCE_MODEL
        path = self.model_path(name)
        overheads = {}
        if self.embedder is not None:
            overheads["embed_query"] = lambda: self.embedder.embed_query("how do I rotate a key")
        if self.knowledge is not None:
            overheads["retrieval"] = lambda: self.knowledge.search(caller, "how do I rotate a key", top_k=6)
        llm = self.settings.llm
        cal = calibrate(
            path,
            name,
            threads=llm.threads or serving_threads(),
            batch_threads=llm.batch_threads or this_box().cores,
            quick=quick,
            overheads=overheads,
            progress=self._progress,
        )
        self.store.save_calibration(cal)
        self._status = {**self._status, "state": "done", "step": None, "calibration_id": cal.id}
        return cal

    def calibration(self) -> Calibration:
        cal = self.store.latest_calibration(this_box().fingerprint)
        if cal is None:
            raise NotReady("this box is not calibrated: run `appliance plan calibrate` (about 5 minutes)")
        return cal

    def _costs_for(self, cal: Calibration, refit: bool = True):
        """Costs of a configuration; on this box, times the model's refit factors (unless `refit` is off)."""
        ref = ModelShape(
            **{k: v for k, v in cal.model_shape.items() if k not in ("bits_per_weight", "kv_bytes_per_token")}
        )
        shapes: dict[str, ModelShape] = {}
        gpus = {g.name: g for g in GPU_CATALOGUE}
        refits: dict[str, Refit | None] = {}  # read once per model: a sweep asks hundreds of times

        def costs_for(config: ServingConfig):
            shape = shapes.get(config.model) or self.shape(config.model)
            shapes[config.model] = shape
            if config.target == "cpu":
                costs = cpu_costs(cal, ref, shape, config)
                if refit and config.model not in refits:
                    refits[config.model] = self.validations.refit(config.model, cal)
                factors = refits.get(config.model)
                if factors is None:
                    return costs
                return dataclasses.replace(
                    costs,
                    prefill_per_token=tuple(t * factors.prefill_factor for t in costs.prefill_per_token),
                    prefill_fixed_s=costs.prefill_fixed_s * factors.prefill_factor,
                    decode_per_token=tuple(t * factors.decode_factor for t in costs.decode_per_token),
                )
            if config.target not in gpus:
                raise InvalidInput(
                    f"target {config.target!r}: cpu or one of {', '.join(gpus)}", param="target"
                )
            return gpu_costs(gpus[config.target], shape, config)

        return costs_for

    # -- prediction ----------------------------------------------------------------------------------
    def predict(
        self, config: ServingConfig, intent: DeploymentIntent, replications: int = 5, refit: bool = True
    ) -> dict:
        if config.slots < 1 or config.context < 64:
            raise InvalidInput("slots must be at least 1 and the context at least 64 tokens")
        cal = self.calibration()
        costs = self._costs_for(cal, refit)(config)
        work = model.workload(intent, cal.overheads_ms)
        if work.prompt_tokens + work.output_tokens > config.context:
            raise InvalidInput(
                f"prompt ({work.prompt_tokens}) + output ({work.output_tokens}) tokens exceed the context ({config.context})"
            )
        result = model.predict(costs, work, replications=replications, max_queue=self.settings.llm.max_queue)
        result["cost_usd_month"] = model.monthly_cost(costs, intent, result["utilisation"])
        result["calibration_id"] = cal.id
        factors = self.validations.refit(config.model, cal) if refit and config.target == "cpu" else None
        result["refit"] = msgspec.to_builtins(factors) if factors else None
        return result

    def recommend(self, intent: DeploymentIntent, top: int = 10, gpus: bool = True) -> dict:
        cal = self.calibration()
        started = time.perf_counter()
        work = model.workload(intent, cal.overheads_ms)
        shapes = {name: read_shape(path, name) for name, path in self.model_files().items()}
        try:
            rows = sweep(intent, work, shapes, self._costs_for(cal), int(cal.hardware.get("cores", 1)), gpus)
        except ValueError as exc:
            raise InvalidInput(str(exc), param="priority") from None
        swept_s = time.perf_counter() - started
        for row in rows[:REFINED]:
            config = ServingConfig(row["model"], row["target"], row["slots"], row["context"], row["threads"])
            sim = model.predict(self._costs_for(cal)(config), work, requests=300, replications=3)
            row["simulated"] = {
                k: sim[k] for k in ("ttft_ms", "e2e_ms", "itl_ms", "throughput_rps", "utilisation")
            }
        rec_id = uuid.uuid4().hex[:12]
        self.store.save_recommendation(rec_id, msgspec.to_builtins(intent), rows[: max(top, 50)])
        return {
            "id": rec_id,
            "intent": msgspec.to_builtins(intent),
            "assumed": list(work.assumed),
            "prompt_tokens": work.prompt_tokens,
            "output_tokens": work.output_tokens,
            "configurations": len(rows),
            "feasible": sum(r["feasible"] for r in rows),
            "sweep_seconds": round(swept_s, 3),
            "calibration_id": cal.id,
            "refits": [msgspec.to_builtins(r) for r in self.validations.refits(cal)],
            "candidates": rows[:top],
        }

    def render(self, config_id: str) -> dict:
        row = self.store.candidate(config_id)
        if row is None:
            raise NotFound(
                f"no recommended configuration {config_id!r}: run `appliance plan recommend` first"
            )
        if row["target"] == "cpu":
            return {
                "id": config_id,
                "target": "cpu",
                "settings": {
                    "llm.model": row["model"],
                    "llm.slots": row["slots"],
                    "llm.context_length": row["context"],
                    "llm.threads": row["threads"],
                },
            }
        return {
            "id": config_id,
            "target": row["target"],
            "vllm_args": vllm_args(f"/models/{row['model']}", row["model"], row["context"], row["slots"]),
            "kserve_yaml": kserve_manifest(
                config_id, row["model"], row["target"], row["context"], row["slots"]
            ),
        }

    @staticmethod
    def catalogue() -> list[dict]:
        return [g.to_dict() for g in GPU_CATALOGUE]

    # -- apply and rollback --------------------------------------------------------------------------
    def _serving_state(self) -> ServingState:
        assert self.registry is not None and self.models is not None, "apply needs the registry and models"
        holders = self.registry.registry.store.alias_holders("default")
        family, version = holders[0] if holders else (None, None)
        llm = self.models.settings.llm
        return ServingState(
            default_model=family,
            default_version=version,
            slots=llm.slots,
            context_length=llm.context_length,
            threads=llm.threads,
        )

    def _set_llm(self, state: ServingState) -> None:
        """The llm settings the next load uses. They are load-time settings of llama.cpp: taking
        effect needs a reload of the chat model (done by apply), not a restart of the server."""
        assert self.models is not None
        settings = self.models.settings
        llm = msgspec.structs.replace(
            settings.llm, slots=state.slots, context_length=state.context_length, threads=state.threads
        )
        self.models.settings = msgspec.structs.replace(settings, llm=llm)
        self.settings = self.models.settings

    def _point_default(self, caller: Scope, state: ServingState, reason: str) -> bool:
        """Move `default` to the state's family and version through the registry's promotion (its
        audit and history row, and its switch of the served model); False when it already is."""
        assert self.registry is not None
        if state.default_model is None or state.default_version is None:
            return False
        current = self._serving_state()
        if (
            current.default_model
            and current.default_model.lower() == state.default_model.lower()
            and current.default_version == state.default_version
        ):
            return False
        self.registry.promote(caller, state.default_model, state.default_version, "default", reason=reason)
        return True

    def _reload(self, serving: bool, moved: bool, wait_s: float) -> tuple[str, str | None]:
        """Reload the chat model if one was serving (an admin's unload is respected: the next load
        uses the configuration) and check it: loaded, then one token generated."""
        assert self.models is not None and self.registry is not None
        if not serving:
            return "unloaded", None
        if not moved:  # the registry's promotion switched the model itself when the alias moved
            self.models.start_load(self.registry.default_chat())
        deadline = time.monotonic() + wait_s
        while (health := self.models.health())["state"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.1)
        state = health["state"]
        if state != "loaded":
            return state, health.get("error")
        try:
            runtime = self.models.runtime()
            self.models.generate(runtime, "Hello", GenerationParams(max_tokens=1, temperature=0.0), None)
        except ApplianceError as exc:
            return "failed", exc.detail
        return "loaded", None

    def apply(self, caller: Scope, config_id: str, wait_s: float = 300.0) -> PlanApply:
        """Serve a recommended configuration of this box: `default` moves to its model (through the
        registry), the llm settings change, the chat model reloads and is checked. A failed check
        restores the previous state at once (409). The change is recorded for `rollback`."""
        caller.require_admin()
        row = self.store.candidate(config_id)
        if row is None:
            raise NotFound(
                f"no recommended configuration {config_id!r}: run `appliance plan recommend` first"
            )
        if row["target"] != "cpu":
            raise InvalidInput(
                f"{config_id} runs on a {row['target']}, not on this box: render it for vLLM or KServe "
                "(`appliance plan render`)",
                param="config_id",
            )
        assert self.registry is not None and self.models is not None
        if self.models.health()["state"] == "loading":  # that load would finish with the old settings
            raise Conflict("the chat model is loading: apply once it is done")
        if not self._applying.acquire(blocking=False):
            raise Conflict("an apply or rollback is already under way")
        try:
            family = self.registry.get(caller, row["model"])
            ready = [v.version for v in family.versions if v.state == "ready" and "chat" in v.tags]
            if not ready:
                raise Conflict(f"{family.name} has no ready chat version to serve")
            before = self._serving_state()
            version = family.aliases.get("production") or ready[-1]
            after = ServingState(
                default_model=family.name,
                default_version=version,
                slots=int(row["slots"]),
                context_length=int(row["context"]),
                threads=int(row["threads"]),
            )
            serving = self.models.health()["state"] in ("loaded", "failed")
            self._set_llm(after)
            moved = self._point_default(caller, after, f"plan apply {config_id}")
            health, error = self._reload(serving, moved, wait_s)
            record = PlanApply(
                id=uuid.uuid4().hex[:12],
                config_id=config_id,
                created_at=_now(),
                actor=_actor(caller),
                before=before,
                after=after,
                state="applied",
                health=health,
                health_error=error,
                notes=self._notes(after, health),
                intent=self.store.intent_for(config_id),
            )
            if health == "failed":
                self._restore(caller, before, f"plan apply {config_id} failed its health check", wait_s)
                record = msgspec.structs.replace(record, state="failed", rolled_back_at=_now())
            self.store.save_apply(record)
            self._audit("plan.apply", caller, record)
            if record.state == "failed":
                raise Conflict(
                    f"{config_id} failed its health check ({error}); the previous configuration was restored"
                )
            return record
        finally:
            self._applying.release()

    def rollback(self, caller: Scope, wait_s: float = 300.0) -> PlanApply:
        """Undo the newest apply still in force: its previous alias holder and settings, reloaded."""
        caller.require_admin()
        assert self.registry is not None and self.models is not None
        if self.models.health()["state"] == "loading":
            raise Conflict("the chat model is loading: roll back once it is done")
        if not self._applying.acquire(blocking=False):
            raise Conflict("an apply or rollback is already under way")
        try:
            last = self.store.latest_applied()
            if last is None:
                raise Conflict("no applied plan to roll back")
            health, error = self._restore(caller, last.before, f"plan rollback of {last.config_id}", wait_s)
            record = msgspec.structs.replace(
                last, state="rolled_back", rolled_back_at=_now(), health=health, health_error=error
            )
            self.store.save_apply(record)
            self._audit("plan.rollback", caller, record)
            return record
        finally:
            self._applying.release()

    def _restore(
        self, caller: Scope, state: ServingState, reason: str, wait_s: float
    ) -> tuple[str, str | None]:
        assert self.models is not None
        serving = self.models.health()["state"] in ("loaded", "failed")
        self._set_llm(state)
        moved = self._point_default(caller, state, reason)
        return self._reload(serving, moved, wait_s)

    def restore_applied(self) -> None:
        """At start: the llm settings of the plan in force (the alias lives in the registry)."""
        if self.models is None:
            return
        last = self.store.latest_applied()
        if last is not None:
            self._set_llm(last.after)
            log.info("applied plan's llm settings in force", extra={"config": last.config_id})

    def applies(self) -> list[PlanApply]:
        return self.store.applies()

    def _notes(self, after: ServingState, health: str) -> list[str]:
        notes = []
        configured = self.settings.llm.model.strip()
        if configured and after.default_model and configured.lower() != after.default_model.lower():
            notes.append(
                f"llm.model in the settings names {configured}: after a restart it wins over the "
                f"default alias; set it to {after.default_model} (or empty) to keep this plan"
            )
        if health == "unloaded":
            notes.append("no chat model was loaded: the configuration applies at the next load")
        elif health == "loading":
            notes.append("the chat model is still loading: follow GET /api/v1/admin/models")
        notes.append(
            "the llm settings are kept in the database and re-applied at start until "
            "`appliance plan rollback`; the settings file is not rewritten"
        )
        return notes

    def _audit(self, action: str, caller: Scope, record: PlanApply) -> None:
        if self.audit is None:
            return
        self.audit.append(
            action,
            principal=caller.principal,
            outcome="ok" if record.state != "failed" else "error",
            target=record.config_id,
            detail={
                "apply_id": record.id,
                "state": record.state,
                "health": record.health,
                "before": msgspec.to_builtins(record.before),
                "after": msgspec.to_builtins(record.after),
            },
        )

    # -- the intent from a conversation ----------------------------------------------------------------
    def extract_intent(
        self, caller: Scope, messages: list[tuple[str, str]], max_tokens: int = 256
    ) -> IntentDraft:
        """The default chat model reads the conversation into the intent's JSON schema (constrained
        output, as /v1/chat/completions with response_format json_schema); every number it gives
        that the user never said is dropped, and what is missing becomes the next question."""
        import json

        from appliance.generate.tools import OutputFormat
        from appliance.models.runtime import ChatMessage
        from appliance.planner import intent as reading

        caller.require_admin()
        if self.gateway is None:
            raise NotReady("no chat path: the planner was built without the gateway")
        said = [content for role, content in messages if role == "user"]
        if not said:
            raise InvalidInput("messages: give at least one user message", param="messages")
        chat = [ChatMessage("system", reading.SYSTEM_PROMPT)] + [ChatMessage(r, c) for r, c in messages]
        decision = self.gateway.route("default", chat)
        opened, done = self.gateway.chat(
            caller,
            decision,
            chat,
            None,
            OutputFormat("json_schema", reading.SCHEMA, "deployment_intent"),
            GenerationParams(max_tokens=max_tokens, temperature=0.0),
        )
        try:
            raw = json.loads(done.text)
        except ValueError:  # cut off at max_tokens: nothing of it is trusted
            raw = None
        fields, dropped = reading.guard(raw, said)
        needed, optional = reading.missing(fields)
        return IntentDraft(
            **fields,
            missing=needed,
            optional_missing=optional,
            question=reading.question(needed, optional),
            dropped=dropped,
            complete=not needed,
            model=opened.served.name,
        )


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


def _actor(scope: Scope) -> str:
    p = scope.principal
    return f"{p.name} ({p.key_id})" if p.name else p.key_id
