"""Admission per class of work: bounded concurrency, a bounded FIFO wait, 429 with Retry-After beyond.

Each class (search, embeddings, generation, ingest) admits at most `concurrency` requests at once and
lets `queue` more wait their turn on the event loop (a waiting request holds no thread); a newcomer
beyond that is refused at once with TooManyRequests, whose Retry-After estimates when a place frees.
An admitted request's blocking calls run on its class's own threads (`blocking()`), as many as the
class admits, so one busy class can never take the threads another needs, and the class limit, not
a shared pool, is what bounds the work.

A route joins a class through its handler's `opt={"work": "<class>"}`; AdmissionMiddleware takes the
place before the handler runs and gives it back when the response has been sent (a stream's last
byte included), or earlier where a handler calls `leave_early()` (an upload that then waits for its
ingest job holds nothing).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from appliance.config import Settings
from appliance.errors import TooManyRequests

T = TypeVar("T")

WORK_CLASSES = ("search", "embeddings", "generation", "ingest")
# Before any request finished, assume this many seconds per request for the Retry-After estimate.
_DEFAULT_SERVICE_S = 1.0


class Overloaded(TooManyRequests):
    """Every place of a class of work is taken and its wait queue is full: 429 with Retry-After."""


class Permit:
    """One admitted request's place in its gate; `release()` is idempotent."""

    __slots__ = ("_gate", "_since", "released")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._since = time.monotonic()
        self.released = False

    @property
    def gate(self) -> Gate:
        return self._gate

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._gate._leave(time.monotonic() - self._since)


class Gate:
    """One class of work. Used from the event loop only (no lock): admission, waiting and handing a
    freed place to the head waiter all happen on the loop; only `blocking()` work goes to threads.

    `limited=False` admits everyone and runs blocking work on the loop's default executor: the
    behaviour before admission existed (the load bench compares the two).
    """

    def __init__(self, name: str, concurrency: int, queue: int, limited: bool = True) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError(f"{name}: concurrency must be >= 1 and queue >= 0")
        self.name = name
        self.concurrency = concurrency
        self.queue = queue
        self.limited = limited
        self._waiters: deque[asyncio.Future] = deque()
        self._running = 0
        self.admitted = 0
        self.rejected = 0
        self._avg_service_s: float | None = None
        # One thread per admitted request: a request runs one blocking call at a time.
        self._executor = (
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"work-{name}")
            if limited
            else None
        )

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> float:
        """Seconds until a newcomer would likely be admitted: the work ahead of it over the places."""
        per_request = self._avg_service_s or _DEFAULT_SERVICE_S
        return per_request * (self._running + len(self._waiters)) / self.concurrency

    async def enter(self) -> Permit:
        """Admitted at once, or after waiting in FIFO order; Overloaded when the wait queue is full.
        A waiter that is cancelled leaves the queue (and passes on a place granted meanwhile)."""
        if not self.limited or (self._running < self.concurrency and not self._waiters):
            self._running += 1
            self.admitted += 1
            return Permit(self)
        if len(self._waiters) >= self.queue:
            self.rejected += 1
            retry = self.retry_after_s()
            raise Overloaded(
                f"the server is busy with {self.name} requests: {self._running} running, "
                f"{len(self._waiters)} waiting (limit {self.queue}); retry in about {max(1.0, retry):.0f} s",
                retry_after=retry,
            )
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # Handed a place in the same instant: nobody will use it, so pass it on.
                self._leave(None)
            elif granted in self._waiters:  # _leave may have dropped it already
                self._waiters.remove(granted)
            raise
        self.admitted += 1
        return Permit(self)

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on this class's threads (the default executor when unlimited)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def snapshot(self) -> dict:
        return {
            "limited": self.limited,
            "concurrency": self.concurrency,
            "queue": self.queue,
            "running": self._running,
            "waiting": len(self._waiters),
            "admitted": self.admitted,
            "rejected": self.rejected,
            "avg_service_s": round(self._avg_service_s, 3) if self._avg_service_s else None,
        }

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _leave(self, service_s: float | None) -> None:
        if service_s is not None:
            # Exponential moving average: recent requests predict the next wait best.
            self._avg_service_s = (
                service_s if self._avg_service_s is None else 0.8 * self._avg_service_s + 0.2 * service_s
            )
        while self._waiters:
            head = self._waiters.popleft()
            if not head.done():  # a cancelled waiter removes itself later; skip it now
                # Handed over without decrementing: the place changes owner, nobody can barge in.
                head.set_result(None)
                return
        self._running -= 1


class Admission:
    """The gates of every class of work, built from the `[admission]` settings."""

    def __init__(self, gates: dict[str, Gate]) -> None:
        self.gates = gates

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        a, cores = settings.admission, os.cpu_count() or 1
        limits = {
            "search": (a.search_concurrency or cores, a.search_queue),
            "embeddings": (a.embeddings_concurrency or cores, a.embeddings_queue),
            # Everything the model queue can hold (running and waiting): the model's own 429 then
            # fires where it should, and waiting for a slot never runs short of threads.
            "generation": (
                a.generation_concurrency or settings.llm.slots + settings.llm.max_queue,
                a.generation_queue,
            ),
            "ingest": (a.ingest_concurrency or cores, a.ingest_queue),
        }
        return cls({name: Gate(name, c, q, limited=a.enabled) for name, (c, q) in limits.items()})

    def snapshot(self) -> dict[str, dict]:
        return {name: gate.snapshot() for name, gate in self.gates.items()}

    def close(self) -> None:
        for gate in self.gates.values():
            gate.close()

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(_AdmissionCollector(self))


_current: contextvars.ContextVar[Permit | None] = contextvars.ContextVar("admission_permit", default=None)


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call for the current request: on its class's threads when it was admitted to
    one, else on the loop's default executor (asyncio.to_thread)."""
    permit = _current.get()
    if permit is None or permit.released:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return await permit.gate.blocking(fn, *args, **kwargs)


def leave_early() -> None:
    """The current request's heavy part is over (e.g. an upload now only waits for its job): give
    its place to the next one now rather than when the response has been sent."""
    permit = _current.get()
    if permit is not None:
        permit.release()


class AdmissionMiddleware:
    """Takes a place in the gate of the route's class of work (its handler's `opt["work"]`) for the
    duration of the request; routes without one pass straight through. After routing and auth, so
    a refused or unknown request never takes a place; a refusal goes to the route's own exception
    handlers (problem details under /api, OpenAI's envelope under /v1)."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        work = handler.opt.get("work") if handler is not None and scope["type"] == "http" else None
        if work is None:
            await self.app(scope, receive, send)
            return
        permit = await self.admission.gates[work].enter()
        token = _current.set(permit)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
            permit.release()


class _AdmissionCollector:
    """admission_* metrics, read from the gates at scrape time."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self):
        admitted = CounterMetricFamily(
            "admission_admitted", "Requests admitted, by class of work.", labels=["work"]
        )
        rejected = CounterMetricFamily(
            "admission_rejected",
            "Requests refused with 429 (wait queue full), by class of work.",
            labels=["work"],
        )
        running = GaugeMetricFamily(
            "admission_running", "Requests admitted and not yet done.", labels=["work"]
        )
        waiting = GaugeMetricFamily(
            "admission_queue_depth", "Requests waiting for admission.", labels=["work"]
        )
        for name, gate in self.admission.gates.items():
            admitted.add_metric([name], gate.admitted)
            rejected.add_metric([name], gate.rejected)
            running.add_metric([name], gate.running)
            waiting.add_metric([name], gate.waiting)
        yield from (admitted, rejected, running, waiting)
