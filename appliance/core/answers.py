"""Answers: cited answers over the knowledge base, and conversations that keep their history."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from appliance.config import AnswerSettings
from appliance.core.access import Scope
from appliance.core.gateway import Gateway
from appliance.core.knowledge import Knowledge
from appliance.db.conversations import ConversationStore
from appliance.errors import InvalidInput
from appliance.generate.answer import Answerer, AnswerEvents, AnswerPlan
from appliance.models.served import ServedModel
from appliance.observability.metrics import Metrics
from appliance.records import Answer, Conversation, Usage

_STAGES = {"generation_ms": "generation", "first_token_ms": "first_token", "total_ms": "total"}


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


@dataclass(slots=True)
class AnswerTrace:
    """One answer on its way: the model, the plan, the query retrieval ran with, stage timings."""

    runtime: ServedModel
    plan: AnswerPlan
    query: str
    started: float
    timings: dict[str, float] = field(default_factory=dict)


class Answers:
    """Plans an answer (rewrite with the history, retrieve, build the prompt), runs it on the
    gateway's model and records the turn in its conversation."""

    def __init__(
        self,
        settings: AnswerSettings,
        knowledge: Knowledge,
        gateway: Gateway,
        conversations: ConversationStore,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self.gateway = gateway
        self.conversations = conversations
        self.metrics = metrics
        self.answerer = Answerer(settings)

    # -- one answer ------------------------------------------------------------------------------
    def _trace(
        self,
        scope: Scope,
        question: str,
        collections,
        top_k: int | None,
        model: str | None,
        history: list[tuple[str, str]] | None,
    ) -> AnswerTrace:
        if not question.strip():
            raise InvalidInput("question is empty")
        # The key's scope first: a collection it cannot see is a 404 whatever state the model is in.
        scope.collections(collections)
        started = time.perf_counter()
        runtime = self.gateway.runtime_for(model or "default")
        timings: dict[str, float] = {}
        query = question
        if history:
            t = time.perf_counter()
            query = self.answerer.rewrite(runtime, history, question)
            timings["rewrite_ms"] = _ms_since(t)
        retrieval = self.knowledge.search(scope, query, collections, top_k=top_k or self.settings.top_k)
        timings["retrieval_ms"] = retrieval.timings.get("total_ms", 0.0)
        if "rerank_ms" in retrieval.timings:
            timings["rerank_ms"] = retrieval.timings["rerank_ms"]
        return AnswerTrace(runtime, self.answerer.plan(runtime, question, retrieval), query, started, timings)

    def answer(
        self,
        scope: Scope,
        question: str,
        collections=None,
        top_k: int | None = None,
        model: str | None = None,
        history=None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        trace = self._trace(scope, question, collections, top_k, model, history)
        result = self.answerer.answer(trace.runtime, trace.plan, cancel)
        timings = {**trace.timings, **result.timings, "total_ms": _ms_since(trace.started)}
        self._observe(scope, trace.runtime, result.usage, timings)
        return msgspec.structs.replace(result, query=trace.query, timings=timings)

    def open_stream(
        self,
        scope: Scope,
        question: str,
        collections=None,
        top_k: int | None = None,
        model: str | None = None,
        history=None,
        cancel: threading.Event | None = None,
        on_position=None,
    ) -> AnswerEvents:
        """Retrieve, plan and take a model slot (waiting in the queue if need be; `on_position`
        hears the place), then return the events for SSE: "sources", "token"..., "answer"."""
        trace = self._trace(scope, question, collections, top_k, model, history)
        stream = self.answerer.open_stream(trace.runtime, trace.plan, cancel, on_position)
        return AnswerEvents(self._events(scope, trace, stream), stream.close if stream is not None else None)

    def _events(self, scope: Scope, trace: AnswerTrace, stream) -> Iterator[dict]:
        yield {
            "type": "sources",
            "query": trace.query,
            "sources": len(trace.plan.sources),
            "timings": dict(trace.timings),
        }
        for event in self.answerer.stream_events(trace.runtime, trace.plan, stream):
            if event["type"] == "answer":
                event["timings"] = {**trace.timings, **event["timings"], "total_ms": _ms_since(trace.started)}
                event["query"] = trace.query
                self._observe(scope, trace.runtime, msgspec.convert(event["usage"], Usage), event["timings"])
            yield event

    def _observe(self, scope: Scope, runtime: ServedModel, usage: Usage, timings: dict) -> None:
        self.metrics.observe_query(
            "answer", {_STAGES[k]: v / 1000 for k, v in timings.items() if k in _STAGES and v is not None}
        )
        if usage.completion_tokens:
            ttft = timings.get("first_token_ms")
            self.gateway.account(
                scope,
                runtime,
                "answer",
                usage.prompt_tokens,
                usage.completion_tokens,
                ttft / 1000 if ttft is not None else None,
                timings.get("generation_ms", 0) / 1000,
            )

    # -- conversations ---------------------------------------------------------------------------
    def create_conversation(
        self, scope: Scope, collections: list[str] | None, title: str = ""
    ) -> Conversation:
        if collections is not None:
            scope.collections(collections)
        return self.conversations.create(scope.principal, collections, title)

    def get_conversation(self, scope: Scope, conv_id: str) -> Conversation:
        return self.conversations.get(scope.principal, conv_id, with_messages=True)

    def list_conversations(self, scope: Scope) -> list[Conversation]:
        return self.conversations.list(scope.principal)

    def delete_conversation(self, scope: Scope, conv_id: str) -> None:
        self.conversations.delete(scope.principal, conv_id)

    def converse(
        self,
        scope: Scope,
        conv_id: str,
        question: str,
        top_k: int | None = None,
        model: str | None = None,
        stream: bool = False,
        cancel: threading.Event | None = None,
        on_position=None,
    ):
        """The next turn of a conversation: its Answer, or (stream=True) the events of
        `open_stream`. The turn is stored once its answer is complete."""
        conv = self.conversations.get(scope.principal, conv_id)
        history = self.conversations.history(conv_id)
        if not stream:
            result = self.answer(scope, question, conv.collections, top_k, model, history, cancel)
            self.conversations.append(
                conv_id, ("user", question, None), ("assistant", result.answer, result.citations)
            )
            return result
        events = self.open_stream(
            scope, question, conv.collections, top_k, model, history, cancel, on_position
        )
        return AnswerEvents(self._stored_turn(conv_id, question, events), events.close)

    def _stored_turn(self, conv_id: str, question: str, events: Iterator[dict]) -> Iterator[dict]:
        for event in events:
            if event["type"] == "answer":
                self.conversations.append(
                    conv_id, ("user", question, None), ("assistant", event["answer"], event["citations"])
                )
            yield event
