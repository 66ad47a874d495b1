"""The FIFO slot queue: bounded concurrency, a bounded wait in strict order, 429 beyond it."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from appliance.errors import ApplianceError, InvalidInput, NotReady, TooManyRequests

# Before any request finished, assume this many seconds a request for the Retry-After estimate.
_DEFAULT_SERVICE_S = 2.0
# How often a queued waiter looks at its cancel event: threading.Event cannot be waited on jointly.
_CANCEL_POLL_S = 0.02


class QueueFull(TooManyRequests):
    """Every slot is busy and `max_queue` requests already wait: answer 429 with Retry-After."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail, retry_after=retry_after_s)
        self.retry_after_s = retry_after_s


class Cancelled(ApplianceError):
    """The caller cancelled before generation started (while queued); there is nothing to return."""

    status = 499  # nginx's "client closed request": nobody is left to read it
    title = "Cancelled"


class _Waiter:
    __slots__ = ("granted", "refused", "ticket")

    def __init__(self, ticket: int) -> None:
        self.ticket = ticket
        self.granted = threading.Event()
        self.refused: str | None = None  # set with `granted` when the queue closed instead


class SlotLease:
    """One slot, held from `__enter__` (which waits its turn) until `release()` or `__exit__`.

    Streams enter the lease when the request is made and release it when the stream ends or is
    closed, so that a full queue is reported to the caller before any response starts.
    """

    def __init__(
        self, queue: SlotQueue, cancel: threading.Event | None, on_position: Callable[[int], None] | None
    ) -> None:
        self._queue = queue
        self._cancel = cancel
        self._on_position = on_position
        self._held = False
        self._lock = threading.Lock()
        self.waited_s = 0.0
        self.ticket: int | None = None

    def __enter__(self) -> SlotLease:
        start = time.monotonic()
        self._queue._wait(self)
        self.waited_s = time.monotonic() - start
        self._held = True
        self._acquired_at = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        """Give the slot back (to the next waiter in line); idempotent and safe from any thread."""
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._queue._release(time.monotonic() - self._acquired_at)

    @property
    def position(self) -> int:
        """1-based place in the queue while waiting; 0 once the slot is held (or never queued)."""
        return 0 if self.ticket is None or self._held else self._queue.position(self.ticket)


class SlotQueue:
    """Bounded concurrency in strict FIFO order.

    `slots` requests run at once, up to `max_queue` more wait; beyond that `acquire` raises QueueFull
    with a Retry-After estimated from recent service times. A freed slot is handed to the head waiter
    directly, so a newcomer can never overtake a request that was already waiting. `close()` turns
    everyone away from then on and waits for the slots in use.
    """

    def __init__(self, slots: int, max_queue: int) -> None:
        if slots < 1 or max_queue < 0:
            raise InvalidInput("slots must be >= 1 and max_queue >= 0")
        self.slots = slots
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the last slot in use is released
        self._waiters: deque[_Waiter] = deque()
        self._in_use = 0
        self._next_ticket = 0
        self._avg_service_s: float | None = None
        self._served = 0
        self._rejected = 0
        self._closed: str | None = None  # why requests are refused, once closed

    def acquire(
        self,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> SlotLease:
        """A lease to use as `with queue.acquire(cancel):`; entering waits for a slot in FIFO order.

        Raises QueueFull when `max_queue` requests already wait, Cancelled when `cancel` is set while
        waiting, NotReady once the queue is closed (also to a request that was waiting). A request that
        has to wait hears `on_position(n)` on its own thread with its 1-based place at once, then each
        time it changes, and `on_position(0)` when the slot is granted.
        """
        return SlotLease(self, cancel, on_position)

    @property
    def depth(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    @property
    def in_use(self) -> int:
        return self._in_use

    def position(self, ticket: int) -> int:
        """1-based position of the waiter holding `ticket`, or 0 if it is no longer waiting."""
        with self._lock:
            for i, waiter in enumerate(self._waiters, 1):
                if waiter.ticket == ticket:
                    return i
        return 0

    def retry_after_s(self) -> float:
        """Estimated seconds until a newcomer could be served: the work ahead of it, spread over the slots."""
        per_request = self._avg_service_s or _DEFAULT_SERVICE_S
        return per_request * (self.depth + self._in_use) / self.slots

    def snapshot(self) -> dict:
        """Counters for health and metrics."""
        with self._lock:
            return {
                "slots": self.slots,
                "in_use": self._in_use,
                "waiting": len(self._waiters),
                "max_queue": self.max_queue,
                "served": self._served,
                "rejected": self._rejected,
                "avg_service_s": round(self._avg_service_s, 3) if self._avg_service_s else None,
            }

    def close(self, detail: str) -> None:
        """Refuse every request from now on with NotReady(detail), the waiting ones included, and
        return once the slots in use have all been released."""
        with self._lock:
            self._closed = detail
            for waiter in self._waiters:
                waiter.refused = detail
                waiter.granted.set()
            self._waiters.clear()
            self._idle.wait_for(lambda: self._in_use == 0)

    # -- internals used by SlotLease --

    def _wait(self, lease: SlotLease) -> None:
        cancel = lease._cancel
        if cancel is not None and cancel.is_set():
            raise Cancelled("the request was cancelled before it started")
        with self._lock:
            if self._closed is not None:
                raise NotReady(self._closed)
            if self._in_use < self.slots and not self._waiters:
                self._in_use += 1
                return
            if len(self._waiters) >= self.max_queue:
                self._rejected += 1
                retry = self.retry_after_s()
                raise QueueFull(
                    f"the model is busy: {self._in_use} running, {len(self._waiters)} waiting "
                    f"(limit {self.max_queue}); retry in about {retry:.0f} s",
                    retry_after_s=retry,
                )
            waiter = _Waiter(self._next_ticket)
            self._next_ticket += 1
            self._waiters.append(waiter)
            lease.ticket = waiter.ticket
            last_position = len(self._waiters)
        report = lease._on_position
        if report is not None:
            # At once, before the first wait: however soon the slot comes, the caller knew it queued.
            report(last_position)
        while not waiter.granted.wait(_CANCEL_POLL_S):
            if cancel is not None and cancel.is_set():
                with self._lock:
                    if not waiter.granted.is_set():
                        self._waiters.remove(waiter)
                        raise Cancelled("the request was cancelled while waiting for the model")
                if waiter.refused is not None:
                    raise NotReady(waiter.refused)
                # Granted in the same instant: we hold a slot nobody will use, so pass it on.
                self._release(None)
                raise Cancelled("the request was cancelled while waiting for the model")
            if report is not None:
                position = self.position(waiter.ticket)
                if position and position != last_position:
                    last_position = position
                    report(position)
        if waiter.refused is not None:
            raise NotReady(waiter.refused)
        if report is not None:
            report(0)

    def _release(self, service_s: float | None) -> None:
        with self._lock:
            if service_s is not None:
                self._served += 1
                # Exponential moving average: recent requests predict the next wait best.
                self._avg_service_s = (
                    service_s if self._avg_service_s is None else 0.8 * self._avg_service_s + 0.2 * service_s
                )
            if self._waiters:
                # Hand over without decrementing: the slot changes owner, it is never free to barge into.
                self._waiters.popleft().granted.set()
            else:
                self._in_use -= 1
                if self._in_use == 0:
                    self._idle.notify_all()
