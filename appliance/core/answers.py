"""Answers: cited answers over the knowledge base, and conversations that keep their history."""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import numpy as np

from appliance.config import AnswerSettings, CacheSettings
from appliance.core.access import Scope
from appliance.core.gateway import Gateway
from appliance.core.knowledge import Knowledge
from appliance.db.conversations import ConversationStore
from appliance.errors import InvalidInput
from appliance.generate.answer import Answerer, AnswerEvents, AnswerPlan, answer_event
from appliance.generate.prompts import ANSWER_PROMPT_VERSION, NO_ANSWER
from appliance.generate.support import CitationVerifier
from appliance.models.router import RouteDecision
from appliance.models.served import ServedModel
from appliance.observability.metrics import Metrics
from appliance.records import Answer, Conversation, GivenSource, RetrievedChunk, Trace, Usage
from appliance.retrieve.cache import LRUCache
from appliance.retrieve.search import SearchResult

log = logging.getLogger(__name__)

_STAGES = {"generation_ms": "generation", "first_token_ms": "first_token", "total_ms": "total"}


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


@dataclass(slots=True)
class AnswerTrace:
    """One answer on its way: its id, the model, the plan, the query retrieval ran with and what it
    found, the collections searched, stage timings."""

    id: str
    runtime: ServedModel
    plan: AnswerPlan
    query: str
    retrieval: SearchResult
    collections: list[str]
    conversation_id: str | None
    started: float
    timings: dict[str, float] = field(default_factory=dict)
    route: RouteDecision | None = None  # how the model was chosen (`auto` routes on the question)


# Keeps an answer's trace (the feedback service's `record`): called once the answer is complete.
RecordTrace = Callable[[Trace, np.ndarray | None], None]


@dataclass(frozen=True, slots=True)
class _CachedAnswer:
    answer: Answer
    # The model load that wrote it: a reload (or another model under the same name) never
    # serves an answer it did not write.
    runtime: weakref.ref


def _cached_bytes(entry: _CachedAnswer) -> int:
    answer = entry.answer
    return 1024 + 2 * len(answer.answer) + sum(800 for _ in answer.citations) + 200 * len(answer.sentences)


class Answers:
    """Plans an answer (rewrite with the history, retrieve, build the prompt), runs it on the
    gateway's model, records the turn in its conversation, and hands the answer's trace (with its
    id, which the answer carries) to `record` once the answer is complete."""

    def __init__(
        self,
        settings: AnswerSettings,
        knowledge: Knowledge,
        gateway: Gateway,
        conversations: ConversationStore,
        metrics: Metrics,
        verifier: CitationVerifier | None = None,
        record: RecordTrace | None = None,
        cache: CacheSettings | None = None,
    ) -> None:
        self.settings = settings
        self.knowledge = knowledge
        self.gateway = gateway
        self.conversations = conversations
        self.metrics = metrics
        self.answerer = Answerer(settings, verifier)
        self.record = record
        cache = cache or CacheSettings(enabled=False)
        self.cache: LRUCache[_CachedAnswer] | None = (
            LRUCache("answer", cache.answer_mb << 20, _cached_bytes, metrics.count_cache_lookup)
            if cache.enabled and cache.answer_mb
            else None
        )
        if self.cache is not None:
            held = self.cache
            metrics.cache_bytes.labels(cache="answer").set_function(lambda: held.size_bytes)

    # -- one answer ------------------------------------------------------------------------------
    def _trace(
        self,
        scope: Scope,
        question: str,
        collections,
        top_k: int | None,
        model: str | None,
        history: list[tuple[str, str]] | None,
        conversation_id: str | None = None,
        route: RouteDecision | None = None,
        on_position=None,
        cache: bool = True,
    ) -> AnswerTrace:
        if not question.strip():
            raise InvalidInput("question is empty")
        # The key's scope first: a collection it cannot see is a 404 whatever state the model is in.
        scope.collections(collections)
        started = time.perf_counter()
        names = scope.collections(collections)
        if route is None:
            route = self.route_for(model, question, scope)
        runtime, route = self.gateway.runtime_for_route(route, on_position)
        timings: dict[str, float] = {}
        query = question
        if history:
            t = time.perf_counter()
            query = self.answerer.rewrite(runtime, history, question)
            timings["rewrite_ms"] = _ms_since(t)
        retrieval = self.knowledge.search(
            scope, query, names, top_k=top_k or self.settings.top_k, cache=cache
        )
        timings["retrieval_ms"] = retrieval.timings.get("total_ms", 0.0)
        if "rerank_ms" in retrieval.timings:
            timings["rerank_ms"] = retrieval.timings["rerank_ms"]
        plan = self.answerer.plan(runtime, question, retrieval)
        answer_id = "ans_" + uuid.uuid4().hex[:20]
        return AnswerTrace(
            answer_id, runtime, plan, query, retrieval, names, conversation_id, started, timings, route
        )

    def route_for(self, model: str | None, question: str, scope: Scope | None = None) -> RouteDecision:
        """Which model answers `question` and why: `auto` is routed on it (the same router as /v1), and
        a running canary of the named family's production splits it by the caller's key."""
        return self.gateway.choose(model or "default", question, scope)

    def answer(
        self,
        scope: Scope,
        question: str,
        collections=None,
        top_k: int | None = None,
        model: str | None = None,
        history=None,
        cancel: threading.Event | None = None,
        conversation_id: str | None = None,
        route: RouteDecision | None = None,
        cache: bool = True,
    ) -> Answer:
        trace = self._trace(
            scope, question, collections, top_k, model, history, conversation_id, route, cache=cache
        )
        key = self._cache_key(trace, history, cache)
        if key is not None and (answer := self._cached(scope, key, trace)) is not None:
            return answer
        result = self.answerer.answer(trace.runtime, trace.plan, cancel)
        timings = {**trace.timings, **result.timings, "total_ms": _ms_since(trace.started)}
        self._observe(scope, trace.runtime, result.usage, timings)
        answer = msgspec.structs.replace(result, query=trace.query, timings=timings, id=trace.id)
        self._keep(scope, trace, answer)
        if key is not None and not (cancel is not None and cancel.is_set()):
            self.cache.put(key, _CachedAnswer(answer, weakref.ref(trace.runtime)))
        return answer

    # -- the answer cache ------------------------------------------------------------------------
    def _cache_key(self, trace: AnswerTrace, history, cache: bool) -> str | None:
        # A conversation's turn depends on its history through the rewrite: not cached.
        if not cache or self.cache is None or history:
            return None
        return self.answerer.cache_key(trace.plan)

    def _cached(self, scope: Scope, key: str, trace: AnswerTrace) -> Answer | None:
        """The cached answer for this trace, as this request's own (its id, query and timings, no
        tokens spent), recorded like any answer; None on a miss."""
        entry = self.cache.get(key)
        if entry is None:
            return None
        if entry.runtime() is not trace.runtime:
            self.cache.discard(key)  # written by a model load that is gone
            return None
        timings = {**trace.timings, "generation_ms": 0.0, "total_ms": _ms_since(trace.started)}
        answer = msgspec.structs.replace(
            entry.answer,
            query=trace.query,
            timings=timings,
            id=trace.id,
            usage=Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0),
            cached=True,
        )
        self._observe(scope, trace.runtime, answer.usage, timings)
        self._keep(scope, trace, answer)
        return answer

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
        conversation_id: str | None = None,
        route: RouteDecision | None = None,
        cache: bool = True,
    ) -> AnswerEvents:
        """Retrieve, plan and take a model slot (waiting in the queue if need be; `on_position`
        hears the place), then return the events for SSE: "sources", "token"..., "answer"."""
        trace = self._trace(
            scope, question, collections, top_k, model, history, conversation_id, route, on_position, cache
        )
        key = self._cache_key(trace, history, cache)
        if key is not None and (answer := self._cached(scope, key, trace)) is not None:
            return AnswerEvents(self._replayed(trace, answer), None)
        stream = self.answerer.open_stream(trace.runtime, trace.plan, cancel, on_position)
        return AnswerEvents(
            self._events(scope, trace, stream, key, cancel), stream.close if stream is not None else None
        )

    def _sources_event(self, trace: AnswerTrace) -> dict:
        return {
            "type": "sources",
            "query": trace.query,
            "sources": len(trace.plan.sources),
            "timings": dict(trace.timings),
        }

    def _replayed(self, trace: AnswerTrace, answer: Answer) -> Iterator[dict]:
        """A cached answer as a stream: its text in one token event, then the answer."""
        yield self._sources_event(trace)
        yield {"type": "token", "text": answer.answer}
        yield answer_event(answer)

    def _events(
        self, scope: Scope, trace: AnswerTrace, stream, key: str | None, cancel: threading.Event | None
    ) -> Iterator[dict]:
        yield self._sources_event(trace)
        for event in self.answerer.stream_events(trace.runtime, trace.plan, stream):
            if event["type"] == "answer":
                event["timings"] = {**trace.timings, **event["timings"], "total_ms": _ms_since(trace.started)}
                event["query"] = trace.query
                event["id"] = trace.id
                self._observe(scope, trace.runtime, msgspec.convert(event["usage"], Usage), event["timings"])
                answer = msgspec.convert({k: v for k, v in event.items() if k != "type"}, Answer)
                self._keep(scope, trace, answer)
                if key is not None and not (cancel is not None and cancel.is_set()):
                    self.cache.put(key, _CachedAnswer(answer, weakref.ref(trace.runtime)))
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

    def _keep(self, scope: Scope, trace: AnswerTrace, answer: Answer) -> None:
        """Hand the answer's trace to be written after it; a failure here never fails the answer."""
        if self.record is None:
            return
        try:
            retrieval = trace.retrieval
            self.record(
                Trace(
                    id=trace.id,
                    created_at=datetime.now(UTC).isoformat(),
                    key_id=scope.key_id,
                    conversation_id=trace.conversation_id,
                    collections=trace.collections,
                    question=trace.plan.question,
                    query=trace.query,
                    model=answer.model,
                    prompt_version=ANSWER_PROMPT_VERSION,
                    answer=answer.answer,
                    refused=answer.answer.strip().strip('"') == NO_ANSWER,
                    citations=answer.citations,
                    retrieved=[
                        RetrievedChunk(
                            chunk_id=h.chunk_id,
                            document_id=h.document_id,
                            source_id=h.source_id,
                            score=h.score,
                        )
                        for h in retrieval.hits
                    ],
                    sources=[
                        GivenSource(
                            n=s.n,
                            chunk_id=s.hit.chunk_id,
                            document_id=s.hit.document_id,
                            source_id=s.hit.source_id,
                        )
                        for s in trace.plan.sources
                    ],
                    usage=answer.usage,
                    timings=answer.timings,
                    top_similarity=retrieval.best_similarity,
                    answer_chars=len(answer.answer),
                    latency_ms=float(answer.timings.get("total_ms") or 0.0),
                    route=trace.route.header() if trace.route is not None else None,
                ),
                retrieval.query_vector,
            )
        except Exception:
            self.metrics.count_trace("failed")
            log.exception("answer trace not recorded", extra={"answer_id": trace.id})

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
            result = self.answer(scope, question, conv.collections, top_k, model, history, cancel, conv_id)
            self.conversations.append(
                conv_id, ("user", question, None), ("assistant", result.answer, result.citations)
            )
            return result
        events = self.open_stream(
            scope, question, conv.collections, top_k, model, history, cancel, on_position, conv_id
        )
        return AnswerEvents(self._stored_turn(conv_id, question, events), events.close)

    def _stored_turn(self, conv_id: str, question: str, events: Iterator[dict]) -> Iterator[dict]:
        for event in events:
            if event["type"] == "answer":
                self.conversations.append(
                    conv_id, ("user", question, None), ("assistant", event["answer"], event["citations"])
                )
            yield event
