"""Cited answers: numbered sources in, a model's answer out, every citation checked."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from appliance.config import AnswerSettings
from appliance.generate.attribution import attribute
from appliance.generate.citations import check_citations
from appliance.generate.context import Source, build_context
from appliance.generate.prompts import NO_ANSWER, answer_messages, rewrite_messages
from appliance.generate.support import CitationVerifier
from appliance.models.runtime import ChatMessage, GenerationParams, LLMRuntime, TokenStream
from appliance.models.served import ServedModel
from appliance.records import Answer, Citation, Usage
from appliance.retrieve.search import SearchResult

SNIPPET_CHARS = 300
# Room kept for the system prompt, the question and the template's own tokens.
PROMPT_OVERHEAD_TOKENS = 160


@dataclass(slots=True)
class AnswerPlan:
    """Everything decided before generation: the sources, the prompt, or that there is no answer."""

    question: str
    sources: list[Source]
    prompt: str | None  # None: retrieval found nothing relevant, answer NO_ANSWER without the model
    max_tokens: int


def citation(source: Source) -> Citation:
    hit = source.hit
    snippet = " ".join(hit.text.split())
    return Citation(
        n=source.n,
        document_id=hit.document_id,
        source_id=hit.source_id,
        title=hit.title,
        chunk_id=hit.chunk_id,
        location=hit.location,
        snippet=snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else ""),
    )


class Answerer:
    """Builds the cited-answer prompt from retrieved chunks, runs it, and checks the citations."""

    def __init__(self, settings: AnswerSettings, verifier: CitationVerifier | None = None) -> None:
        self.settings = settings
        self.verifier = verifier

    def plan(self, runtime: LLMRuntime, question: str, retrieval: SearchResult) -> AnswerPlan:
        relevant = retrieval.hits and (
            retrieval.best_similarity is None or retrieval.best_similarity >= self.settings.min_relevance
        )
        if not relevant:
            return AnswerPlan(question, [], None, 0)
        max_tokens = min(self.settings.max_answer_tokens, runtime.context_length // 4)
        budget = runtime.context_length - max_tokens - PROMPT_OVERHEAD_TOKENS - runtime.count_tokens(question)
        if self.settings.context_tokens:
            # Prompt processing dominates the time to first token on a CPU: a smaller context
            # answers sooner (answer.context_tokens, chosen by measurement with scripts/bench/rag.py).
            budget = min(budget, self.settings.context_tokens)
        sources = build_context(
            retrieval.hits[: self.settings.top_k], max(budget, 0), runtime.count_tokens, question
        )
        if not sources:
            return AnswerPlan(question, [], None, 0)
        prompt = runtime.render_chat([ChatMessage(r, c) for r, c in answer_messages(question, sources)])
        return AnswerPlan(question, sources, prompt, max_tokens)

    def cache_key(self, plan: AnswerPlan) -> str | None:
        """What makes two answers the same (for one loaded model): the exact prompt, the sources
        the citations point at, the generation parameters and the verification; None when there
        is nothing to generate."""
        if plan.prompt is None:
            return None
        digest = hashlib.sha256()
        verifier = self.verifier.name if self.verifier is not None else ""
        settings = (self.settings.unsupported_sentences, self.settings.refuse_unsupported, verifier)
        for part in (plan.prompt, repr(self._params(plan)), repr(settings)):
            digest.update(part.encode())
            digest.update(b"\0")
        for s in plan.sources:
            hit = s.hit
            digest.update(msgspec.json.encode((s.n, hit.chunk_id, hit.document_id, hit.title, hit.location)))
        return digest.hexdigest()

    def _params(self, plan: AnswerPlan) -> GenerationParams:
        return GenerationParams(max_tokens=plan.max_tokens, temperature=self.settings.temperature, top_p=0.95)

    def finish(self, plan: AnswerPlan, text: str, runtime: LLMRuntime, usage: Usage, timings: dict) -> Answer:
        checked = check_citations(text, len(plan.sources))
        by_n = {s.n: s for s in plan.sources}
        answer, cited = checked.text or NO_ANSWER, checked.cited
        sentences, unsupported, verifier = [], [], ""
        if self.verifier is not None and checked.text and checked.text != NO_ANSWER:
            t = time.perf_counter()
            verified = attribute(
                checked.text,
                {n: s.hit.text for n, s in by_n.items()},
                self.verifier,
                self.settings.unsupported_sentences,
            )
            timings = {**timings, "verify_ms": round((time.perf_counter() - t) * 1000, 2)}
            answer, cited, sentences = verified.text or NO_ANSWER, verified.cited, verified.sentences
            unsupported = [i for i, s in enumerate(sentences) if not s.supported]
            verifier = self.verifier.name
            claims = [s for s in sentences if s.claim]
            if self.settings.refuse_unsupported and claims and not any(s.supported for s in claims):
                answer, cited = NO_ANSWER, []
        return Answer(
            answer=answer,
            citations=[citation(by_n[n]) for n in cited],
            invalid_citations=checked.invalid,
            model=runtime.name,
            usage=usage,
            timings=timings,
            sentences=sentences,
            unsupported_sentences=unsupported,
            verifier=verifier,
        )

    def answer(self, runtime: LLMRuntime, plan: AnswerPlan, cancel: threading.Event | None = None) -> Answer:
        if plan.prompt is None:
            return Answer(
                answer=NO_ANSWER,
                citations=[],
                invalid_citations=[],
                model=runtime.name,
                usage=_usage(0, 0),
                timings={"generation_ms": 0.0},
            )
        done = runtime.generate(plan.prompt, self._params(plan), cancel)
        timings = {
            "first_token_ms": round(done.time_to_first_token_s * 1000, 2),
            "generation_ms": round(done.total_s * 1000, 2),
        }
        return self.finish(
            plan, done.text, runtime, _usage(done.prompt_tokens, done.completion_tokens), timings
        )

    def open_stream(
        self,
        runtime: ServedModel,
        plan: AnswerPlan,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> TokenStream | None:
        """Take a model slot for the answer (this may wait in the queue: admission is ServedModel's,
        and `on_position` hears the place). None: no model needed."""
        if plan.prompt is None:
            return None
        return runtime.stream(plan.prompt, self._params(plan), cancel, on_position)

    def stream_events(
        self, runtime: LLMRuntime, plan: AnswerPlan, stream: TokenStream | None
    ) -> Iterator[dict]:
        """Events: {"type": "token", "text"} ... then {"type": "answer", ...Answer}."""
        if stream is None:
            yield {"type": "token", "text": NO_ANSWER}
            yield answer_event(self.answer(runtime, plan))
            return
        started = time.perf_counter()
        parts: list[str] = []
        try:
            for delta in stream:
                if delta.text:
                    parts.append(delta.text)
                    yield {"type": "token", "text": delta.text}
        finally:
            stream.close()
        stats = stream.stats
        timings = {
            "first_token_ms": round(stats.time_to_first_token_s * 1000, 2) if stats else None,
            "generation_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        usage = _usage(stats.prompt_tokens, stats.completion_tokens) if stats else _usage(0, 0)
        yield answer_event(self.finish(plan, "".join(parts), runtime, usage, timings))

    def rewrite(self, runtime: LLMRuntime, history: Sequence[tuple[str, str]], question: str) -> str:
        """A follow-up like "and in Asia?" becomes a standalone question for retrieval."""
        if not history:
            return question
        prompt = runtime.render_chat([ChatMessage(r, c) for r, c in rewrite_messages(history, question)])
        try:
            out = runtime.generate(
                prompt, GenerationParams(max_tokens=64, temperature=0.0, stop=("\n",))
            ).text.strip()
        except Exception:
            out = ""
        last_user = next((c for r, c in reversed(history) if r == "user"), "")
        # A small model may echo nothing useful; the previous question plus this one still
        # retrieves better than the fragment alone.
        if not out or len(out) > 4 * max(len(question), 40):
            return f"{last_user} {question}".strip()
        return out


class AnswerEvents(Iterator[dict]):
    """The events of a streamed answer, holding a model slot. `close()` frees the slot even when
    iteration never started (closing an unstarted generator runs none of its cleanup)."""

    def __init__(self, events: Iterator[dict], release: Callable[[], None] | None) -> None:
        self._events = events
        self._release = release

    def __next__(self) -> dict:
        return next(self._events)

    def close(self) -> None:
        if self._release is not None:
            self._release()  # thread-safe: may be called while another thread is inside next()
        try:
            self._events.close()  # type: ignore[attr-defined]
        except ValueError:
            pass  # running on another thread right now: it ends by itself at the next token


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def answer_event(answer: Answer) -> dict:
    """The stream's last event: the answer's JSON fields under {"type": "answer"}."""
    return {"type": "answer", **msgspec.to_builtins(answer)}
