"""Feedback: every answer's trace, written after the answer, and the ratings users give answers."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from appliance.config import FeedbackSettings
from appliance.core.access import Scope
from appliance.db.traces import TraceStore, Visibility
from appliance.errors import InvalidInput, NotFound
from appliance.observability.metrics import Metrics
from appliance.records import FeedbackCount, FeedbackItem, FeedbackPage, Rating, Trace

log = logging.getLogger(__name__)

RATINGS = ("up", "down")
# A rating that arrives right after its answer may find the trace still queued: it waits this long.
PENDING_WAIT_SECONDS = 5.0
PRUNE_EVERY = timedelta(hours=1)
_BATCH = 100


class TraceWriter:
    """Writes traces on one background thread, in batches, after their answers: an answer never
    waits for DuckDB, and a failed write is logged and counted, never raised to the caller. A
    trace without a query embedding (a keyword search ran) gets one here, off the answer's path."""

    def __init__(
        self,
        store: TraceStore,
        embed: Callable[[str], np.ndarray],
        metrics: Metrics,
        size: int,
    ) -> None:
        self.store = store
        self.embed = embed
        self.metrics = metrics
        self._queue: queue.Queue[tuple[Trace, np.ndarray | None] | None] = queue.Queue(maxsize=size)
        self._pending: set[str] = set()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
        self._thread.start()

    def submit(self, trace: Trace, vector: np.ndarray | None) -> None:
        """Queue a trace; never blocks: when the queue is full the trace is dropped (and counted)."""
        with self._done:
            self._pending.add(trace.id)
        try:
            self._queue.put_nowait((trace, vector))
        except queue.Full:
            self._settle([trace.id])
            self.metrics.count_trace("dropped")
            log.warning("answer trace dropped: the write queue is full", extra={"answer_id": trace.id})

    def _settle(self, ids: list[str]) -> None:
        with self._done:
            self._pending.difference_update(ids)
            self._done.notify_all()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < _BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True  # after this batch
                    break
                batch.append(nxt)
            self._write(batch)

    def _write(self, batch: list[tuple[Trace, np.ndarray | None]]) -> None:
        try:
            rows = [(trace, self._vector(trace, vector)) for trace, vector in batch]
            self.store.insert(rows)
            self.metrics.count_trace("written", len(rows))
        except Exception:
            self.metrics.count_trace("failed", len(batch))
            log.exception("answer traces could not be written", extra={"traces": len(batch)})
        finally:
            self._settle([trace.id for trace, _ in batch])

    def _vector(self, trace: Trace, vector: np.ndarray | None) -> np.ndarray | None:
        if vector is not None:
            return vector
        try:
            return self.embed(trace.query)
        except Exception:  # the trace is still worth keeping; drift skips it
            log.exception("query embedding for a trace failed", extra={"answer_id": trace.id})
            return None

    def wait(self, answer_id: str | None = None, timeout: float | None = None) -> bool:
        """Until `answer_id`'s trace (None: every queued trace) is written or given up on."""
        with self._done:
            return self._done.wait_for(
                lambda: (answer_id not in self._pending) if answer_id else not self._pending, timeout
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most `timeout` seconds), then end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("trace writer stopping with a full queue: its traces are lost")
        self._thread.join(timeout)
        self._thread = None


class Feedback:
    """Answer traces (recorded by the answers service, read back by id) and users' ratings of them.

    A user key reaches only the answers it asked itself over collections it still sees; anything
    else is NotFound, exactly like an id that never existed. Admin keys reach every answer."""

    def __init__(
        self,
        settings: FeedbackSettings,
        store: TraceStore,
        embed: Callable[[str], np.ndarray],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.writer = TraceWriter(store, embed, metrics, settings.queue_size)
        self._last_prune: datetime | None = None

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()

    # -- traces ------------------------------------------------------------------------------------
    @property
    def keeps_traces(self) -> bool:
        return self.settings.trace_retention_days > 0

    def record(self, trace: Trace, vector: np.ndarray | None) -> None:
        """Keep an answer's trace; called once the answer is complete, returns at once."""
        if self.keeps_traces:
            self.writer.submit(trace, vector)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every trace recorded so far is written (tests; an orderly stop)."""
        return self.writer.wait(None, timeout)

    def get_answer(self, scope: Scope, answer_id: str) -> Trace:
        self.writer.wait(answer_id, PENDING_WAIT_SECONDS)
        trace = self.store.get(answer_id)
        missing = f"answer {answer_id!r} does not exist"
        if trace is None or (not scope.is_admin and trace.key_id != scope.key_id):
            raise NotFound(missing)
        for collection in trace.collections:
            scope.check(collection, missing)
        return trace

    def prune(self, now: datetime | None = None) -> int:
        """Delete traces (and their ratings) older than the retention; returns how many."""
        if not self.keeps_traces:
            return 0
        before = (now or datetime.now(UTC)) - timedelta(days=self.settings.trace_retention_days)
        removed = self.store.prune(before)
        if removed:
            log.info("answer traces pruned", extra={"traces": removed, "before": before.isoformat()})
        return removed

    def tick(self, now: datetime | None = None) -> int:
        """Called every minute by the scheduler: prunes at most once an hour."""
        now = now or datetime.now(UTC)
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return 0
        self._last_prune = now
        return self.prune(now)

    # -- ratings -----------------------------------------------------------------------------------
    def rate(
        self,
        scope: Scope,
        answer_id: str,
        rating: str,
        comment: str | None = None,
        correct_answer: str | None = None,
        confirmed_sources: list[str] | None = None,
    ) -> Rating:
        """Rate an answer up or down; the same key rating it again replaces its rating.
        `confirmed_sources` are source ids of the answer's sources that hold the right answer."""
        if rating not in RATINGS:
            raise InvalidInput(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        limit = self.settings.max_comment_chars
        for name, text in (("comment", comment), ("correct_answer", correct_answer)):
            if text is not None and len(text) > limit:
                raise InvalidInput(f"{name} is {len(text)} characters; the limit is {limit}")
        trace = self.get_answer(scope, answer_id)
        given = {s.source_id for s in trace.sources}
        confirmed = list(dict.fromkeys(confirmed_sources or []))
        unknown = [s for s in confirmed if s not in given]
        if unknown:
            raise InvalidInput(
                f"confirmed_sources {unknown} were not among the answer's sources "
                f"({', '.join(sorted(given)) or 'none'})"
            )
        saved = self.store.rate(
            answer_id, scope.key_id, rating, comment or None, correct_answer or None, confirmed
        )
        self.metrics.count_feedback(trace.collections, trace.model, rating)
        return saved

    def _visibility(self, scope: Scope) -> Visibility:
        return Visibility(None if scope.is_admin else scope.key_id, scope.visible())

    def counts(self, scope: Scope, days: int = 7, now: datetime | None = None) -> list[FeedbackCount]:
        """Ratings up and down, and answers given, per collection over the last `days` days (a user
        key: its own answers)."""
        if not 1 <= days <= 365:
            raise InvalidInput("days must be between 1 and 365", param="days")
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        rows = self.store.rating_counts(self._visibility(scope), since)
        return [
            FeedbackCount(collection=c, up=up, down=down, answers=answers, days=days)
            for c, up, down, answers in rows
        ]

    def list_feedback(
        self,
        scope: Scope,
        collection: str | None = None,
        rating: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> FeedbackPage:
        """Ratings, newest first, with the answers they rate (a user key: its own)."""
        if rating is not None and rating not in RATINGS:
            raise InvalidInput(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        if not 1 <= limit <= 1000 or offset < 0:
            raise InvalidInput("limit must be between 1 and 1000 and offset >= 0")
        if collection is not None:
            scope.collections([collection])
        rows, total = self.store.list_ratings(self._visibility(scope), collection, rating, limit, offset)
        items = [
            FeedbackItem(
                answer_id=r.answer_id,
                rating=r.rating,
                comment=r.comment,
                correct_answer=r.correct_answer,
                rated_at=r.created_at,
                key_id=r.key_id,
                question=t.question,
                answer=t.answer,
                model=t.model,
                collections=t.collections,
                answered_at=t.created_at,
            )
            for r, t in rows
        ]
        return FeedbackPage(items=items, total=total, limit=limit, offset=offset)

    def regression_items(self, scope: Scope, collection: str | None = None, limit: int = 1000) -> list[dict]:
        """Answers rated down, as items of a QA eval set (the JSONL format of `eval import`):
        the question, the rater's correct answer when given (as the short and the long answer),
        kind answerable, and as gold the source ids the rater confirmed. Newest first, one item
        per question."""
        if collection is not None:
            scope.collections([collection])
        rows, _ = self.store.list_ratings(self._visibility(scope), collection, "down", limit, 0)
        items: dict[str, dict] = {}
        for rated, trace in rows:
            key = " ".join(trace.question.lower().split())
            if key in items:
                continue
            item = {
                "id": f"feedback-{trace.id}",
                "question": trace.question,
                "answers": [rated.correct_answer] if rated.correct_answer else [],
                "kind": "answerable",
                "gold": list(rated.confirmed_sources),
            }
            if rated.correct_answer:
                item["answer"] = rated.correct_answer
            items[key] = item
        return list(items.values())
