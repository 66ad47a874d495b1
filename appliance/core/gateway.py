"""Gateway: the OpenAI-compatible model calls (chat, completions, embeddings) and their token accounting."""

from __future__ import annotations

import threading

from appliance.core.access import Access, Scope
from appliance.models.runtime import ChatMessage, Completion, GenerationParams, TokenStream
from appliance.models.served import ServedModel
from appliance.models.service import ModelService
from appliance.observability.metrics import Metrics


class Gateway:
    """Model calls on behalf of a caller: each one is measured and charged to the caller's key."""

    def __init__(self, models: ModelService, access: Access, metrics: Metrics) -> None:
        self.models = models
        self.access = access
        self.metrics = metrics

    def list_models(self) -> list[dict]:
        return self.models.list_models()

    def runtime_for(self, model: str) -> ServedModel:
        return self.models.runtime_for(model)

    def prepare_chat(self, model: str, messages: list[ChatMessage]) -> tuple[ServedModel, str]:
        return self.models.prepare_chat(model, messages)

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
