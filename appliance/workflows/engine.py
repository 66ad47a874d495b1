"""The engine: walks a pinned workflow's steps (calls, foreach and parallel fan-out with a reduce,
conditions, bounded loops, approvals), every step durable, and ends the run with its outcome."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.workflows.builtins import Interrupted, RunServices
from appliance.workflows.calls import Caller
from appliance.workflows.context import RunContext, StepFailed, Waiting
from appliance.workflows.gate import Budget, BudgetExceeded, Gate, Refused
from appliance.workflows.memory import AGENT_SCOPE, text_of
from appliance.workflows.memory import config as memory_config
from appliance.workflows.refs import RefError, holds, resolve
from appliance.workflows.store import ACTIVE_RUN_STATES, WorkflowStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # succeeded | degraded | failed | waiting | interrupted
    outputs: dict | None = None
    error: str | None = None
    approvals: tuple[str, ...] = ()


# The recall's step key: not a valid step id, so it never meets one of the workflow's steps.
MEMORY_STEP = "@memory"


class Escalated(Exception):
    """A budget ran out under `on_limit: escalate`: a person decides whether the run goes on."""


class Engine:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    def resume(
        self,
        store: WorkflowStore,
        run_id: str,
        stop: threading.Event,
        services: RunServices,
        llm: Any,
        keep_going: Callable[[], bool],
        on_step: Callable[[str, str, float], None] | None = None,
    ) -> Outcome:
        """Run a stored run from its pinned bundle and its step records: completed steps are read
        back, the first unfinished one runs next."""
        row = store.run_row(run_id)
        if row["state"] not in ACTIVE_RUN_STATES:
            return Outcome(row["state"])
        bundle = json.loads(row["bundle"])
        policy = bundle["policy"]
        workflow = bundle["workflow"]
        gate = Gate(
            Budget.of(workflow.get("budget"), policy.get("max_budget")),
            workflow.get("on_limit", "fail"),
            store.latest_usage(run_id) or json.loads(row["usage"]),
            set(policy["tools"]) if policy.get("tools") is not None else None,
            bundle["agents"],
        )
        if not store.set_state(run_id, "running"):
            return Outcome(store.run_row(run_id)["state"])
        ctx = RunContext(
            run_id=run_id,
            key_id=row["key_id"],
            bundle=bundle,
            inputs=json.loads(row["inputs"]),
            rows=store.steps(run_id),
            gate=gate,
            stop=stop,
            services=services,
            store=store,
            collections=policy.get("collections"),
            llm=llm,
            on_step=on_step,
            degraded=bool(row["degraded"]),
            flags=json.loads(row["flags"]) if row["flags"] else {},
        )
        outcome = self.execute(ctx, keep_going)
        if outcome.state in ("waiting", "interrupted"):
            store.save_progress(run_id, gate.snapshot(), ctx.degraded, ctx.flags)
        if outcome.state == "waiting":
            store.set_state(run_id, "waiting", ("running",))
        return outcome

    def execute(self, ctx: RunContext, keep_going: Callable[[], bool]) -> Outcome:
        """Run (or resume) a run to its end, a wait, or an interruption; records the outcome."""
        workflow = ctx.bundle["workflow"]
        state: dict[str, Any] = {"inputs": _with_defaults(workflow.get("inputs"), ctx.inputs), "steps": {}}
        try:
            self._escalations(ctx)
            remember = memory_config(workflow)
            if remember is not None:
                name = workflow["name"]
                state["memory"] = ctx.recall(MEMORY_STEP, None, -1, name, remember, text_of(state["inputs"]))
            for ordinal, step in enumerate(workflow["steps"]):
                if not keep_going():
                    raise Interrupted("the run's job was cancelled or taken over")
                sid = step["id"]
                if "when" in step and not ctx.done(sid)[0] and not holds(step["when"], state):
                    ctx.skip(sid, sid, ordinal, "skipped")
                    state["steps"][sid] = {"output": None, "skipped": True}
                    continue
                state["steps"][sid] = {"output": self._step(ctx, step, ordinal, state)}
                if step.get("end"):
                    break
            outputs = resolve(workflow.get("outputs") or {}, state)
        except Interrupted:
            return Outcome("interrupted")
        except Waiting as wait:
            return Outcome("waiting", approvals=tuple(wait.approvals))
        except BudgetExceeded as exc:
            return self._limit(ctx, exc, state)
        except (StepFailed, Refused, RefError) as exc:
            return self._end(ctx, "failed", None, str(exc))
        return self._end(ctx, "degraded" if ctx.degraded else "succeeded", outputs, None)

    def _end(self, ctx: RunContext, state: str, outputs: dict | None, error: str | None) -> Outcome:
        ended = ctx.store.finish_run(
            ctx.run_id,
            state,
            outputs,
            error,
            ctx.degraded or state == "degraded",
            ctx.flags,
            ctx.gate.snapshot(),
        )
        # Only a run that succeeded is remembered: a failed or degraded one would teach the next
        # run a wrong or partial answer. `ended` guards a run ended twice (a cancel racing us).
        if ended and state == "succeeded":
            self._remember(ctx, outputs)
        return Outcome(state, outputs, error)

    def _remember(self, ctx: RunContext, outputs: dict | None) -> None:
        """The workflow's memory of this run (its inputs and outputs), and each agent's with memory
        of its succeeded calls (their input and answer), under the run's key."""
        workflow = ctx.bundle["workflow"]
        if memory_config(workflow) is not None:
            ctx.remember(workflow["name"], ctx.inputs, outputs)
        agents = ctx.bundle["agents"]
        if not any(memory_config(spec) for spec in agents.values()):
            return
        for row in ctx.store.steps(ctx.run_id).values():
            if row["kind"] != "agent" or row["state"] != "succeeded" or row["input"] is None:
                continue
            called = json.loads(row["input"])
            if memory_config(agents.get(called["agent"], {})) is not None:
                output = json.loads(row["output"]) if row["output"] is not None else None
                ctx.remember(f"{AGENT_SCOPE}{called['agent']}", called.get("with"), output)

    # -- budgets ---------------------------------------------------------------------------------
    def _limit(self, ctx: RunContext, exc: BudgetExceeded, state: dict) -> Outcome:
        ctx.flag("limits", {"owner": exc.owner, "dimension": exc.dimension, "limit": exc.limit})
        if exc.on_limit == "degrade":
            ctx.degraded = True
            partial = _partial(ctx.bundle["workflow"].get("outputs") or {}, state)
            return self._end(ctx, "degraded", partial, str(exc))
        if exc.on_limit == "escalate":
            # One approval per dimension and grant: answered `continue`, the next resume grants it.
            key = f"budget:{exc.dimension}:{int(ctx.gate.extra.get(exc.dimension, 0))}"
            row = ctx.store.approval_for(ctx.run_id, key) or ctx.store.create_approval(
                ctx.run_id,
                key,
                ctx.key_id,
                ["owner", "admin"],
                f'{exc}. Answer {{"continue": true}} to grant the same again, or false to end the run.',
                {"type": "object", "properties": {"continue": {"type": "boolean"}}, "required": ["continue"]},
                None,
            )
            return Outcome("waiting", approvals=(row["id"],))
        return self._end(ctx, "failed", None, str(exc))

    def _escalations(self, ctx: RunContext) -> None:
        """Answers to budget escalations: `continue` grants the spent dimension its limit once more."""
        for key in ctx.store.approval_keys(ctx.run_id, "budget:"):
            row = ctx.store.approval_for(ctx.run_id, key)
            dim = key.split(":")[1]
            granted = int(ctx.gate.extra.get(dim, 0))
            if row is None or row["state"] != "answered" or int(key.split(":")[2]) != granted:
                continue
            if json.loads(row["answer"]).get("continue"):
                ctx.gate.grant(dim)
            else:
                raise StepFailed(f"the budget escalation {row['id']} was answered: do not continue")

    # -- steps -----------------------------------------------------------------------------------
    def _step(self, ctx: RunContext, step: dict, ordinal: int, state: dict) -> Any:
        sid = step["id"]
        if "tool" in step or "agent" in step or "dispatch" in step:
            return self._call(ctx, step, sid, sid, None, ordinal, state)
        if "approval" in step:
            return self._approval(ctx, step, ordinal, state)
        finished, output = ctx.done(sid)
        if finished:
            return output

        def block(attempt: int) -> Any:
            if "foreach" in step:
                return self._foreach(ctx, step, ordinal, state)
            if "parallel" in step:
                return self._parallel(ctx, step, ordinal, state)
            return self._loop(ctx, step, ordinal, state)

        kind = next(k for k in ("foreach", "parallel", "loop") if k in step)
        return ctx.durable(sid, sid, None, ordinal, kind, None, block)

    def _call(
        self,
        ctx: RunContext,
        call: dict,
        key: str,
        step_id: str,
        parent: str | None,
        ordinal: int,
        state: dict,
    ) -> Any:
        finished, output = ctx.done(key)
        if finished:
            return output
        # A null argument counts as not given: an optional input left out passes through as absent.
        args = {k: v for k, v in resolve(call.get("with") or {}, state).items() if v is not None}
        if "tool" in call:
            return self.caller.tool(
                ctx, key, step_id, parent, ordinal, call["tool"], args, step_retry=call.get("retry")
            )
        name = call.get("agent")
        if "dispatch" in call:
            name = resolve(call["dispatch"]["agent"], state)
            if name not in call["dispatch"]["among"]:
                raise StepFailed(
                    f"step {step_id!r}: the plan chose {name!r}, not one of {call['dispatch']['among']}"
                )
        return self.caller.agent(ctx, key, step_id, parent, ordinal, name, args, call.get("tools"))

    def _fan(self, ctx: RunContext, jobs: list[Callable[[], Any]], width: int) -> list[Any]:
        """Run branches `width` at a time; every branch finishes (or waits) before an error is raised,
        so a resumed run finds each completed branch recorded."""
        if width <= 1 or len(jobs) <= 1:
            results = []
            waits: list[str] = []
            for job in jobs:
                try:
                    results.append(job())
                except Waiting as w:
                    waits.extend(w.approvals)
                    results.append(None)
            if waits:
                raise Waiting(waits)
            return results
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix=f"wf-{ctx.run_id[-6:]}") as pool:
            futures = [pool.submit(job) for job in jobs]
            outcomes = []
            for f in futures:
                try:
                    outcomes.append((f.result(), None))
                except BaseException as exc:  # re-raised below, after every branch ended
                    outcomes.append((None, exc))
        waits = [a for _, e in outcomes if isinstance(e, Waiting) for a in e.approvals]
        errors = [e for _, e in outcomes if e is not None and not isinstance(e, Waiting)]
        for kind in (Interrupted, BudgetExceeded):
            for e in errors:
                if isinstance(e, kind):
                    raise e
        if errors:
            raise errors[0]
        if waits:
            raise Waiting(waits)
        return [r for r, _ in outcomes]

    def _foreach(self, ctx: RunContext, step: dict, ordinal: int, state: dict) -> Any:
        sid = step["id"]
        items = step["foreach"]
        items = resolve(items, state) if isinstance(items, str) else resolve(items, state)
        if not isinstance(items, list):
            raise StepFailed(f"step {sid!r}: foreach needs a list, got {type(items).__name__}")
        name = step.get("as", "item")

        def branch(i: int, item: Any) -> Callable[[], Any]:
            local = {**state, name: item}
            return lambda: self._call(ctx, step["do"], f"{sid}[{i}]", sid, sid, ordinal, local)

        outputs = self._fan(
            ctx, [branch(i, it) for i, it in enumerate(items)], step.get("max_concurrency", 1)
        )
        reduce = step.get("reduce", "list")
        if reduce == "concat":
            return [x for out in outputs for x in (out if isinstance(out, list) else [out])]
        if reduce == "merge":
            merged: dict = {}
            for out in outputs:
                if isinstance(out, dict):
                    merged.update(out)
            return merged
        return outputs

    def _parallel(self, ctx: RunContext, step: dict, ordinal: int, state: dict) -> Any:
        sid = step["id"]
        branches = step["parallel"]
        jobs = [
            (lambda b=b: self._call(ctx, b, f"{sid}.{b['id']}", b["id"], sid, ordinal, state))
            for b in branches
        ]
        outputs = self._fan(ctx, jobs, step.get("max_concurrency", len(branches)))
        return {b["id"]: out for b, out in zip(branches, outputs, strict=True)}

    def _loop(self, ctx: RunContext, step: dict, ordinal: int, state: dict) -> Any:
        sid = step["id"]
        loop = step["loop"]
        previous = None
        for i in range(loop["max_loops"]):
            local = {**state, "loop": {"index": i, "previous": previous}}
            previous = self._call(ctx, loop["do"], f"{sid}#{i}", sid, sid, ordinal, local)
            if "until" in loop and holds(
                loop["until"], {**local, "loop": {**local["loop"], "output": previous}}
            ):
                break
        return previous

    def _approval(self, ctx: RunContext, step: dict, ordinal: int, state: dict) -> Any:
        sid = step["id"]
        spec = step["approval"]

        def work(attempt: int) -> Any:
            row = ctx.store.approval_for(ctx.run_id, sid)
            if row is None:
                prompt = resolve(spec.get("prompt", f"Approve step {sid!r} of run {ctx.run_id}?"), state)
                row = ctx.store.create_approval(
                    ctx.run_id,
                    sid,
                    ctx.key_id,
                    spec.get("approvers", ["owner"]),
                    str(prompt),
                    spec.get("schema"),
                    spec.get("expires_in_s"),
                )
            if (
                row["state"] == "pending"
                and row["expires_at"] is not None
                and row["expires_at"] <= datetime.now(UTC)
            ):
                ctx.store.expire_approval(row["id"])
                row = ctx.store.approval_row(row["id"])
            if row["state"] == "answered":
                return json.loads(row["answer"])
            if row["state"] == "expired":
                if spec.get("on_expiry", "fail") == "continue":
                    ctx.flag("expired_approvals", row["id"])
                    return spec.get("default")
                raise StepFailed(f"approval {row['id']} of step {sid!r} expired unanswered")
            raise Waiting([row["id"]])

        return ctx.durable(sid, sid, None, ordinal, "approval", None, work)


def _with_defaults(schema: dict | None, inputs: dict) -> dict:
    """The run's inputs with each property the caller left out set to its schema's `default`, or
    null, so `${inputs.optional}` resolves (to null) instead of failing the run."""
    props = (schema or {}).get("properties") or {}
    filled = {k: spec.get("default") if isinstance(spec, dict) else None for k, spec in props.items()}
    return {**filled, **inputs}


def _partial(outputs: dict, state: dict) -> dict:
    """The outputs that can be resolved from what completed; the rest are null."""
    out = {}
    for name, expr in outputs.items():
        try:
            out[name] = resolve(expr, state)
        except RefError:
            out[name] = None
    return out
