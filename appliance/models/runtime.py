"""The LLM runtime protocol, its shared request/result types, and the FIFO slot queue backends share."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from appliance.errors import ApplianceError, InvalidInput, TooManyRequests

ROLES = ("system", "user", "assistant")
# "cancelled" is ours, not OpenAI's: only a caller that cancelled (and so no longer listens) sees it.
FINISH_REASONS = ("stop", "length", "cancelled")
# The context a runtime allocates when nobody says: a KV cache for a model's full trained context
# (32k for Qwen 1.5B, ~0.9 GB) slows every CPU step, and RAG prompts fit well within this.
DEFAULT_CONTEXT_LENGTH = 8192
# Before any request finished, assume this many seconds a request for the Retry-After estimate.
_DEFAULT_SERVICE_S = 2.0
# How often a queued waiter looks at its cancel event: threading.Event cannot be waited on jointly.
_CANCEL_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput(f"unknown message role {self.role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(self.content, str):
            raise InvalidInput(f"message content must be text, not {type(self.content).__name__}")


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int | None = None  # None: up to the context left after the prompt
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        # Checked here so the API turns a bad request into a 400 before it ever queues for a slot.
        problems = []
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            problems.append("max_tokens must be >= 1")
        if not 0.0 <= self.temperature <= 2.0:
            problems.append("temperature must be within [0, 2]")
        if not 0.0 < self.top_p <= 1.0:
            problems.append("top_p must be within (0, 1]")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append("stop must be a tuple of non-empty strings")
        elif len(self.stop) > 16:
            problems.append("at most 16 stop sequences")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            problems.append("seed must be within [0, 2**32)")
        if problems:
            raise InvalidInput("invalid generation parameters: " + "; ".join(problems))


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float  # from the call, queueing included: what the caller waited
    total_s: float
    queued_s: float = 0.0  # of which waiting for a slot


@dataclass(frozen=True, slots=True)
class TokenDelta:
    text: str
    finish_reason: str | None = None  # set on the last delta only


@dataclass(frozen=True, slots=True)
class StreamStats:
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_s: float
    queued_s: float = 0.0


class QueueFull(TooManyRequests):
    """Every slot is busy and `max_queue` requests already wait: answer 429 with Retry-After."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail, retry_after=retry_after_s)
        self.retry_after_s = retry_after_s


class Cancelled(ApplianceError):
    """The caller cancelled before generation started (while queued); there is nothing to return."""

    status = 499  # nginx's "client closed request": nobody is left to read it
    title = "Cancelled"


def check_prompt_length(prompt_tokens: int, context_length: int, max_tokens: int | None) -> int:
    """The rule every backend applies: refuse a prompt that fills the context, clamp max_tokens to the rest."""
    if prompt_tokens >= context_length:
        raise InvalidInput(
            f"the prompt is {prompt_tokens} tokens but the model's context holds {context_length}: "
            "shorten the prompt (fewer or shorter messages or context passages)",
            prompt_tokens=prompt_tokens,
            context_length=context_length,
        )
    room = context_length - prompt_tokens
    return room if max_tokens is None else min(max_tokens, room)


class _Waiter:
    __slots__ = ("granted", "ticket")

    def __init__(self, ticket: int) -> None:
        self.ticket = ticket
        self.granted = threading.Event()


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
    """Bounded concurrency in strict FIFO order, for backends that cannot take concurrent calls.

    `slots` requests run at once, up to `max_queue` more wait; beyond that `acquire` raises QueueFull
    with a Retry-After estimated from recent service times. A freed slot is handed to the head waiter
    directly, so a newcomer can never overtake a request that was already waiting.
    """

    def __init__(self, slots: int, max_queue: int) -> None:
        if slots < 1 or max_queue < 0:
            raise InvalidInput("slots must be >= 1 and max_queue >= 0")
        self.slots = slots
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self._in_use = 0
        self._next_ticket = 0
        self._avg_service_s: float | None = None
        self._served = 0
        self._rejected = 0

    def acquire(
        self,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> SlotLease:
        """A lease to use as `with queue.acquire(cancel):`; entering waits for a slot in FIFO order.

        Raises QueueFull when `max_queue` requests already wait, Cancelled when `cancel` is set while
        waiting. `on_position(n)` is called on the waiting thread with the 1-based queue position each
        time it changes (a stream can relay it to the client; 0 means the slot is now held).
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

    # -- internals used by SlotLease --

    def _wait(self, lease: SlotLease) -> None:
        cancel = lease._cancel
        if cancel is not None and cancel.is_set():
            raise Cancelled("the request was cancelled before it started")
        with self._lock:
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
        last_position = -1
        while not waiter.granted.wait(_CANCEL_POLL_S):
            if cancel is not None and cancel.is_set():
                with self._lock:
                    if not waiter.granted.is_set():
                        self._waiters.remove(waiter)
                        raise Cancelled("the request was cancelled while waiting for the model")
                # Granted in the same instant: we hold a slot nobody will use, so pass it on.
                self._release(None)
                raise Cancelled("the request was cancelled while waiting for the model")
            if lease._on_position is not None:
                position = self.position(waiter.ticket)
                if position and position != last_position:
                    last_position = position
                    lease._on_position(position)
        if lease._on_position is not None:
            lease._on_position(0)

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


class TokenStream(Iterator[TokenDelta]):
    """What `LLMRuntime.stream` returns: an iterator of TokenDelta; the last carries finish_reason.

    `stats` is filled once the stream is exhausted. `close()` stops generation and frees the slot: at
    once when called between deltas, else within one token when called from another thread while a
    delta is being produced (the API calls it from its event loop when the HTTP client goes away).
    Backends pass a factory that, given this stream, returns a generator which checks `stopped()`
    between tokens, sets `stats` and calls `release` before yielding its last delta (a caller may
    stop reading there), and an idempotent `release` that frees the slot.
    """

    def __init__(
        self,
        source: Callable[[TokenStream], Iterator[TokenDelta]],
        release: Callable[[], None],
        cancel: threading.Event | None = None,
    ) -> None:
        self._release = release
        self._caller_cancel = cancel
        self.cancelled = threading.Event()  # set by close()
        self.stats: StreamStats | None = None
        self._busy = threading.Lock()
        self._done = False
        self._source = source(self)

    def stopped(self) -> bool:
        """True once the stream was closed or the caller's cancel event was set."""
        return self.cancelled.is_set() or (self._caller_cancel is not None and self._caller_cancel.is_set())

    def release(self) -> None:
        self._release()

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> TokenDelta:
        with self._busy:
            if self._done:
                raise StopIteration
            try:
                return next(self._source)
            except BaseException:
                self._finish()
                raise

    def _finish(self) -> None:
        self._done = True
        try:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def close(self) -> None:
        self.cancelled.set()
        # If a delta is being produced on another thread, that thread sees `cancelled` at the next
        # token and ends the stream itself; otherwise end it here, now.
        if self._busy.acquire(blocking=False):
            try:
                if not self._done:
                    self._finish()
            finally:
                self._busy.release()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped without close() must not keep its slot forever.
        if not getattr(self, "_done", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - nothing to report to at garbage collection
                pass


@runtime_checkable
class LLMRuntime(Protocol):
    """A loaded chat/completion model. Backends: llama.cpp (CPU, in-process) and vLLM (GPU)."""

    name: str  # as listed by /v1/models
    backend: str  # "llama.cpp" | "vllm"
    context_length: int

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the model's tokenizer (special tokens parsed, no BOS added)."""
        ...

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation, through the model's chat template in the sandbox."""
        ...

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion: ...

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> TokenStream:
        """Waits for a slot before returning; `on_position(n)` reports the 1-based queue position
        while waiting (0 once the slot is granted), so a caller can tell its client."""
        ...

    def health(self) -> dict: ...

    def close(self) -> None: ...


def collect(stream: TokenStream) -> Completion:
    """Drain a stream into one Completion (what every backend's `generate` is)."""
    parts: list[str] = []
    finish = "stop"
    try:
        for delta in stream:
            parts.append(delta.text)
            finish = delta.finish_reason or finish
    finally:
        stream.close()
    stats = stream.stats
    assert stats is not None
    return Completion("".join(parts), finish, stats.prompt_tokens, stats.completion_tokens,
                      stats.time_to_first_token_s, stats.total_s, stats.queued_s)
