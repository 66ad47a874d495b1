"""Gateway: the OpenAI-compatible model calls (chat, completions, embeddings) and their token accounting."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Protocol

from appliance.core.access import Access, Scope
from appliance.errors import InvalidInput
from appliance.generate.tools import ChatPlan, OutputFormat, ToolRequest, plan_chat
from appliance.models.fallback import Opened
from appliance.models.router import RouteDecision
from appliance.models.runtime import ChatMessage, Completion, GenerationParams, TokenStream, collect
from appliance.models.served import ServedModel
from appliance.models.service import ModelService
from appliance.observability.metrics import Metrics


class TrafficSplit(Protocol):
    """What the gateway asks of safe rollout (core/rollout.py's `Rollouts`, which sits above the
    gateway: its gates run evals, which call models through the gateway)."""

    def assign(self, scope: Scope | None, decision: RouteDecision) -> RouteDecision:
        """The decision, split by a running canary."""

    def watch(
        self,
        decision: RouteDecision,
        stream: TokenStream,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        plain: bool,
    ) -> TokenStream:
        """The stream, reported to the canary and the shadow mirror when it ends."""

    def failed(self, decision: RouteDecision, error: BaseException) -> None:
        """A chat of a canary's arm that could not start."""


class Gateway:
    """Model calls on behalf of a caller: each one is measured and charged to the caller's key."""

    def __init__(self, models: ModelService, access: Access, metrics: Metrics) -> None:
        self.models = models
        self.access = access
        self.metrics = metrics
        # Canary splits and shadow mirroring (set by the composition root once the registry exists).
        self.rollouts: TrafficSplit | None = None

    def list_models(self) -> list[dict]:
        return self.models.list_models()

    def runtime_for(self, model: str) -> ServedModel:
        return self.models.runtime_for(model)

    @staticmethod
    def _plan(
        runtime: ServedModel,
        messages: list[ChatMessage],
        tools: ToolRequest | None,
        output: OutputFormat | None,
    ) -> tuple[str, ChatPlan]:
        offering = tools is not None and tools.choice.mode != "none"
        wants_json = output is not None and output.kind != "text"
        if (offering or wants_json) and not runtime.constrained_decoding:
            raise InvalidInput(
                f"{runtime.name} on {runtime.backend} cannot constrain its output, so it offers no "
                + ("tool calls" if offering else "JSON output"),
                param="tools" if offering else "response_format",
            )
        plan = plan_chat(
            messages,
            tools,
            output,
            native=runtime.native_tools,
            constrained=runtime.constrained_decoding,
            api_tools=runtime.backend == "remote",
        )
        return runtime.render_chat(plan.messages, plan.tools), plan

    # -- routed chat: `model` may be `auto`; fallbacks until the first token -------------------------
    def route(
        self,
        model: str,
        messages: list[ChatMessage],
        tools: ToolRequest | None = None,
        scope: Scope | None = None,
    ) -> RouteDecision:
        """Which model serves this chat and why (the `x-appliance-route` header); a running canary of
        the named family's production splits it by the caller's key."""
        text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        offering = tools is not None and tools.choice.mode != "none"
        decision = self.models.choose(model, text, offering)
        if self.rollouts is not None:
            decision = self.rollouts.assign(scope, decision)
        return decision

    def choose(self, model: str, text: str, scope: Scope | None = None) -> RouteDecision:
        """Which model serves a request about `text` (the knowledge query's question) and why; split
        by a running canary like a chat (its answers' ratings are the canary's thumbs-down rate)."""
        decision = self.models.choose(model, text)
        if self.rollouts is not None:
            decision = self.rollouts.assign(scope, decision)
        return decision

    def runtime_for_route(
        self, decision: RouteDecision, on_position=None
    ) -> tuple[ServedModel, RouteDecision]:
        """The first of the decision's models that is healthy and loads (a cold load's waiters hear
        their place through `on_position`); the decision as served."""
        return self.models.runtime_for_route(decision, on_position)

    def open_chat(
        self,
        decision: RouteDecision,
        messages: list[ChatMessage],
        tools: ToolRequest | None,
        output: OutputFormat | None,
        params: GenerationParams,
        cancel: threading.Event | None = None,
        on_position=None,
    ) -> Opened:
        """The chat's generation opened on the first of the decision's models that starts it (its
        `extra` is the ChatPlan); waits for a cold load or a slot, hearing the place."""
        self.models.check_messages(messages)

        def build(runtime: ServedModel):
            prompt, plan = self._plan(runtime, messages, tools, output)
            grammar = plan.grammar
            return prompt, plan, params if grammar is None else dataclasses.replace(params, grammar=grammar)

        try:
            opened = self.models.open_routed(decision, build, cancel, on_position)
        except Exception as exc:
            if self.rollouts is not None:
                self.rollouts.failed(decision, exc)
            raise
        if self.rollouts is not None:
            # Told how it ends (canary analysis, shadow mirroring); the stream itself is unchanged.
            plain = (tools is None or tools.choice.mode == "none") and (
                output is None or output.kind == "text"
            )
            opened.stream = self.rollouts.watch(opened.decision, opened.stream, messages, params, plain)
        return opened

    def chat(
        self,
        scope: Scope,
        decision: RouteDecision,
        messages: list[ChatMessage],
        tools: ToolRequest | None,
        output: OutputFormat | None,
        params: GenerationParams,
        cancel: threading.Event | None = None,
    ) -> tuple[Opened, Completion]:
        """A whole routed chat completion, measured and charged like `generate`."""
        try:
            opened = self.open_chat(decision, messages, tools, output, params, cancel)
        except Exception:
            self.metrics.observe_llm(decision.model, "chat", 0, 0, None, 0.0, outcome="error")
            raise
        try:
            done = collect(opened.stream)
        except Exception:
            self.metrics.observe_llm(opened.served.name, "chat", 0, 0, None, 0.0, outcome="error")
            raise
        self.account(
            scope,
            opened.served,
            "chat",
            done.prompt_tokens,
            done.completion_tokens,
            done.time_to_first_token_s,
            done.total_s,
            "cancelled" if done.finish_reason == "cancelled" else "ok",
        )
        return opened, done

    def generate(
        self,
        scope: Scope,
        runtime: ServedModel,
        prompt: str,
        params: GenerationParams,
        endpoint: str,
        cancel: threading.Event | None = None,
    ) -> Completion:
        try:
            done = self.models.generate(runtime, prompt, params, cancel)
        except Exception:
            self.metrics.observe_llm(runtime.name, endpoint, 0, 0, None, 0.0, outcome="error")
            raise
        self.account(
            scope,
            runtime,
            endpoint,
            done.prompt_tokens,
            done.completion_tokens,
            done.time_to_first_token_s,
            done.total_s,
            # A client that left got nothing: counted apart, like a stream it abandoned.
            "cancelled" if done.finish_reason == "cancelled" else "ok",
        )
        return done

    def open_stream(
        self,
        runtime: ServedModel,
        prompt: str,
        params: GenerationParams,
        cancel: threading.Event | None = None,
        on_position=None,
    ) -> TokenStream:
        return self.models.open_stream(runtime, prompt, params, cancel, on_position)

    def record_stream(
        self, scope: Scope, runtime: ServedModel, stream: TokenStream, endpoint: str, completed: bool
    ) -> None:
        """Called when a stream ends or its client leaves: metrics and the key's token budget
        (tokens generated before a disconnect were spent all the same)."""
        stats = stream.stats
        outcome = "ok" if completed else "cancelled"
        if stats is None:
            self.metrics.observe_llm(runtime.name, endpoint, 0, 0, None, 0.0, outcome=outcome)
            return
        self.account(
            scope,
            runtime,
            endpoint,
            stats.prompt_tokens,
            stats.completion_tokens,
            stats.time_to_first_token_s,
            stats.total_s,
            outcome,
        )

    def account(
        self,
        scope: Scope,
        runtime: ServedModel,
        endpoint: str,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        total_s: float,
        outcome: str = "ok",
    ) -> None:
        self.metrics.observe_llm(
            runtime.name, endpoint, prompt_tokens, completion_tokens, ttft_s, total_s, outcome
        )
        self.access.charge_tokens(scope.principal, prompt_tokens + completion_tokens)

    def embed(self, model: str, inputs: list[str], dimensions: int | None):
        return self.models.embed(model, inputs, dimensions)
