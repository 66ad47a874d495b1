"""Tool and agent calls of a run, each through the gate: input and output checked against the tool's
schemas, retries with exponential backoff and jitter, circuit breakers and fallbacks, and the ledger
that keeps a non-idempotent tool to one invocation."""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from typing import Any

from appliance.models.runtime import ChatMessage
from appliance.workflows.breaker import Breakers
from appliance.workflows.builtins import Interrupted, Invocation, ToolFailure
from appliance.workflows.context import RunContext, StepFailed
from appliance.workflows.gate import Refused
from appliance.workflows.llm import LLM
from appliance.workflows.memory import AGENT_SCOPE, text_of
from appliance.workflows.memory import config as memory_config
from appliance.workflows.tools import implementation

MAX_AGENT_TURNS = 8


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


def _validate(value: Any, schema: dict | None, what: str) -> str | None:
    if not schema:
        return None
    err = next(iter(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value)), None)
    if err is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"{what}{where}: {err.message}"


class Caller:
    """Makes the calls of every run of one appliance (breakers are shared by all runs)."""

    def __init__(
        self, llm: LLM | None, breakers: Breakers, on_retry=None, rng: random.Random | None = None
    ) -> None:
        self.llm = llm
        self.breakers = breakers
        self.on_retry = on_retry  # (tool) -> None, for metrics
        self.rng = rng or random.Random()

    # -- tools ---------------------------------------------------------------------------------
    def tool(
        self,
        ctx: RunContext,
        key: str,
        step_id: str,
        parent: str | None,
        ordinal: int,
        name: str,
        args: dict,
        agent: str | None = None,
        narrowed: list[str] | None = None,
        step_retry: dict | None = None,
    ) -> Any:
        def work(attempt: int) -> Any:
            ctx.gate.before_tool(agent, name, narrowed)
            return self._with_fallback(ctx, key, name, args, step_retry, agent)

        return ctx.durable(
            key,
            step_id,
            parent,
            ordinal,
            "tool",
            {"tool": name, "with": args},
            work,
            count_step=agent or True,
        )

    def _with_fallback(self, ctx: RunContext, key: str, name: str, args: dict, step_retry, agent) -> Any:
        spec = ctx.bundle["tools"][name]
        try:
            if self.breakers.is_open(name):
                raise ToolFailure(f"the circuit breaker of {name!r} is open", retryable=False)
            return self._attempts(ctx, key, name, spec, args, step_retry, agent)
        except ToolFailure as exc:
            fallback = spec.get("fallback")
            if fallback is None:
                raise StepFailed(f"tool {name!r}: {exc}") from None
            ctx.gate.before_tool(agent, fallback)
            ctx.degraded = True
            ctx.flag("fallbacks", {"step": key, "tool": name, "fallback": fallback, "reason": str(exc)})
            try:
                return self._attempts(
                    ctx, key + "~fallback", fallback, ctx.bundle["tools"][fallback], args, None, agent
                )
            except ToolFailure as again:
                raise StepFailed(f"tool {name!r}: {exc}; its fallback {fallback!r}: {again}") from None

    def _attempts(
        self, ctx: RunContext, key: str, name: str, spec: dict, args: dict, step_retry, agent
    ) -> Any:
        problem = _validate(args, spec.get("input_schema"), f"input of {name}")
        if problem:
            raise StepFailed(problem)
        retry = step_retry or spec.get("retry") or {}
        attempts = retry.get("attempts", 1)
        retry_on = set(retry.get("on", ["error", "timeout"]))
        for attempt in range(1, attempts + 1):
            try:
                output = self._once(ctx, key, name, spec, args, agent)
            except ToolFailure as exc:
                opened = self.breakers.failure(name, spec.get("breaker"))
                if opened:
                    ctx.flag("breakers_opened", name)
                if attempt == attempts or not exc.retryable or exc.kind not in retry_on or opened:
                    raise
                if self.on_retry:
                    self.on_retry(name)
                ctx.store.count_attempt(ctx.run_id, key.split("~")[0])
                delay = min(
                    retry.get("max_backoff_s", 30.0), retry.get("backoff_s", 0.5) * 2 ** (attempt - 1)
                )
                delay *= 1 + retry.get("jitter", 0.2) * self.rng.random()
                if ctx.stop.wait(delay):
                    raise Interrupted("stopped between retries") from None
                continue
            problem = _validate(output, spec.get("output_schema"), f"output of {name}")
            if problem:
                raise ToolFailure(problem, retryable=False)
            self.breakers.success(name)
            return output
        raise AssertionError("unreachable")

    def _once(self, ctx: RunContext, key: str, name: str, spec: dict, args: dict, agent: str | None) -> Any:
        impl = implementation(spec)
        invocation_id = f"{ctx.run_id}:{key}"
        effectful = spec.get("side_effects") == "non_idempotent"
        if effectful:
            # The ledger is checked before every call: a recorded call is never made again.
            entry = ctx.store.ledger_entry(invocation_id)
            if entry is not None and entry["state"] == "done":
                return json.loads(entry["output"])
            if entry is not None and not impl.honours_invocation_id:
                raise ToolFailure(
                    f"{name} was called before an interruption and its outcome is unknown; not calling it again",
                    retryable=False,
                )
            ctx.store.ledger_begin(invocation_id, ctx.run_id, key, name)
        inv = Invocation(
            ctx.run_id,
            key,
            invocation_id,
            ctx.stop,
            ctx.services,
            _readable(ctx, agent),
            complete=lambda messages, schema: self._gated_llm(ctx, agent, messages, schema),
            before_llm=lambda: ctx.gate.before_llm(agent),
            charge=lambda tokens: ctx.gate.charge_tokens(agent, tokens),
        )
        # A python tool's sandbox kills its own child at the timeout (and audits it); a thread's
        # timeout here would leave the child running until then.
        timeout = None if spec.get("type") == "python" else spec.get("timeout_s")
        output = self._timed(impl.run, inv, args, timeout)
        if effectful:
            ctx.store.ledger_end(invocation_id, "done", output)
        return output

    def _gated_llm(
        self, ctx: RunContext, agent: str | None, messages: list[tuple[str, str]], schema: dict | None
    ) -> str:
        """A tool's own model call: through the same gate as an agent's (budget before, tokens after)."""
        llm = ctx.llm or self.llm
        if llm is None:
            raise ToolFailure("no language model is available to this appliance's workflows", retryable=False)
        left = ctx.gate.before_llm(agent)
        model = ctx.bundle["agents"][agent].get("model", "auto") if agent else "auto"
        reply = llm.complete(model, [ChatMessage(r, c) for r, c in messages], left, schema)
        ctx.gate.charge_tokens(agent, reply.prompt_tokens + reply.completion_tokens)
        return reply.text

    @staticmethod
    def _timed(run, inv: Invocation, args: dict, timeout: float | None) -> Any:
        if timeout is None:
            return run(inv, args)
        # The call gets a stop of its own, set at its timeout (and when the run stops), so a tool
        # that waits (builtin.sleep) ends instead of lingering after the run moved on.
        parent, inv.stop = inv.stop, threading.Event()
        box: dict = {}

        def target() -> None:
            try:
                box["out"] = run(inv, args)
            except BaseException as exc:  # handed to the caller's thread
                box["err"] = exc

        thread = threading.Thread(target=target, daemon=True, name=f"tool-{inv.step}")
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(min(0.05, max(0.0, deadline - time.monotonic())))
            if parent.is_set():
                inv.stop.set()
        if thread.is_alive():
            inv.stop.set()
            if parent.is_set():
                raise Interrupted("stopped during a call")
            raise ToolFailure(f"timed out after {timeout:g} s", kind="timeout")
        if "err" in box:
            raise box["err"]
        return box["out"]

    # -- agents --------------------------------------------------------------------------------
    def agent(
        self,
        ctx: RunContext,
        key: str,
        step_id: str,
        parent: str | None,
        ordinal: int,
        name: str,
        args: dict,
        narrowed: list[str] | None = None,
    ) -> Any:
        def work(attempt: int) -> Any:
            return self._converse(ctx, key, ordinal, name, args, narrowed)

        return ctx.durable(
            key, step_id, parent, ordinal, "agent", {"agent": name, "with": args}, work, count_step=name
        )

    def _converse(self, ctx: RunContext, key: str, ordinal: int, name: str, args: dict, narrowed) -> Any:
        """The engine drives: each turn the model fills one typed decision (a tool call or the
        answer); every tool it names passes the gate, and a refused one is never called."""
        llm = ctx.llm or self.llm
        if llm is None:
            raise StepFailed("no language model is available to this appliance's workflows")
        spec = ctx.bundle["agents"][name]
        tools = [t for t in spec.get("tools", []) if narrowed is None or t in narrowed]
        output_schema = spec.get("output_schema")
        task = _task(args)
        memory = memory_config(spec)
        if memory is not None:
            recalled = ctx.recall(f"{key}/memory", key, ordinal, AGENT_SCOPE + name, memory, text_of(args))
            if recalled:
                task += "\n\nNotes from your earlier runs (most relevant first):\n" + "\n".join(
                    "- " + m["summary"] for m in recalled
                )
        messages = [
            ChatMessage("system", _instructions(spec, tools, ctx.bundle["tools"])),
            ChatMessage("user", task),
        ]
        refused: list[dict] = []
        for turn in range(MAX_AGENT_TURNS):
            left = ctx.gate.before_llm(name)
            schema = _decision_schema(tools, output_schema)

            def call(attempt: int, messages=messages, left=left, schema=schema) -> dict:
                reply = llm.complete(spec.get("model", "auto"), messages, left, schema)
                ctx.gate.charge_tokens(name, reply.prompt_tokens + reply.completion_tokens)
                return {
                    "text": reply.text,
                    "model": reply.model,
                    "tokens": reply.prompt_tokens + reply.completion_tokens,
                }

            reply = ctx.durable(
                f"{key}/llm{turn}", f"{key}/llm{turn}", key, ordinal, "llm", {"turn": turn}, call
            )
            decision = _parse(reply["text"])
            wanted = decision.get("tool") if isinstance(decision, dict) else None
            if isinstance(wanted, str) and tools:
                tool_args = decision.get("args") if isinstance(decision.get("args"), dict) else {}
                messages.append(ChatMessage("assistant", reply["text"]))
                try:
                    ctx.gate.allow_tool(name, wanted, narrowed)
                    if wanted not in ctx.bundle["tools"]:
                        raise Refused(f"tool {wanted!r} is not pinned to this run")
                except Refused as exc:
                    refused.append({"tool": wanted, "reason": str(exc)})
                    ctx.flag("refused_calls", {"step": key, "tool": wanted})
                    messages.append(ChatMessage("user", f"Refused: {exc}. Give your answer."))
                    continue
                result = self.tool(
                    ctx,
                    f"{key}/tool{turn}",
                    f"{key}/tool{turn}",
                    key,
                    ordinal,
                    wanted,
                    tool_args,
                    agent=name,
                    narrowed=narrowed,
                )
                messages.append(ChatMessage("user", "Tool result: " + json.dumps(result)[:4000]))
                continue
            answer = decision.get("answer", decision) if isinstance(decision, dict) and tools else decision
            if output_schema is not None:
                problem = _validate(answer, output_schema, f"agent {name}'s answer")
                if problem:
                    raise StepFailed(problem)
                out = answer
            else:
                out = {"text": answer if isinstance(answer, str) else reply["text"]}
            if refused and isinstance(out, dict):
                out = {**out, "refused_tools": refused}
            return out
        raise StepFailed(f"agent {name!r} gave no answer in {MAX_AGENT_TURNS} turns")


def _readable(ctx: RunContext, agent: str | None) -> list[str] | None:
    """What a call may read: the agent's collections and the policy's, both (None: the key's own).
    The key's scope is applied below this, by the services the run was given."""
    allowed = ctx.collections
    own = ctx.bundle["agents"][agent].get("collections") if agent is not None else None
    if own is not None:
        allowed = list(own) if allowed is None else [c for c in own if c in allowed]
    return allowed


def _instructions(spec: dict, tools: list[str], catalogue: dict) -> str:
    text = spec["instructions"]
    if tools:
        listed = "\n".join(
            f"- {t}: {json.dumps((catalogue.get(t) or {}).get('input_schema', {}))}" for t in tools
        )
        text += (
            "\n\nYou may use these tools:\n"
            + listed
            + '\nTo use one, reply only with {"tool": NAME, "args": {...}}; '
            'to finish, reply only with {"answer": ...}.'
        )
    return text


def _task(args: dict) -> str:
    if set(args) == {"prompt"} and isinstance(args["prompt"], str):
        return args["prompt"]
    return json.dumps(args, ensure_ascii=False)


def _decision_schema(tools: list[str], output_schema: dict | None) -> dict | None:
    if not tools:
        return output_schema
    answer = output_schema or {"type": "string"}
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"tool": {"enum": tools}, "args": {"type": "object"}},
                "required": ["tool", "args"],
            },
            {"type": "object", "properties": {"answer": answer}, "required": ["answer"]},
        ]
    }


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(text[start : end + 1])
            except ValueError:
                pass
    return text
