"""ServedModel: admission in front of any LLMRuntime (slots, a bounded FIFO queue, positions, 429)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from appliance.errors import InvalidInput, NotReady
from appliance.models.runtime import (
    ChatMessage,
    Completion,
    GenerationParams,
    LLMRuntime,
    StreamStats,
    TokenStream,
    check_prompt_length,
    collect,
)
from appliance.models.slots import SlotLease, SlotQueue


class ServedModel:
    """A backend as the API serves it: at most `runtime.capacity` requests run, `max_queue` more wait.

    Waiting is strict FIFO through a SlotQueue: a waiter hears its place through `on_position`, a
    newcomer beyond `max_queue` gets QueueFull (429 with Retry-After), and the queue's counters are in
    `health()["queue"]`. The backend is only ever called with a slot held, so it never sees more than
    its capacity. Streams' stats count the wait: time to first token from the call, `queued_s` in it.
    """

    def __init__(self, runtime: LLMRuntime, max_queue: int) -> None:
        self.runtime = runtime
        self.queue = SlotQueue(runtime.capacity, max_queue)
        self._closed = False
        self._close_lock = threading.Lock()
        # Requests that chose this model and have not yet reached its queue (the pool hands out a
        # model, then the caller renders its prompt): counted as in flight until they do, or until
        # their hold expires (a caller that failed in between never comes).
        self._holds: list[float] = []
        self._holds_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def backend(self) -> str:
        return self.runtime.backend

    @property
    def context_length(self) -> int:
        return self.runtime.context_length

    @property
    def capacity(self) -> int:
        return self.runtime.capacity

    @property
    def constrained_decoding(self) -> bool:
        return self.runtime.constrained_decoding

    @property
    def native_tools(self) -> bool:
        return self.runtime.native_tools

    def count_tokens(self, text: str) -> int:
        return self.runtime.count_tokens(text)

    def hold(self, for_s: float = 30.0) -> None:
        """Count one request as in flight before it reaches the queue, for at most `for_s` seconds."""
        with self._holds_lock:
            self._holds.append(time.monotonic() + for_s)

    def _arrived(self) -> None:
        with self._holds_lock:
            now = time.monotonic()
            self._holds = [t for t in self._holds if t > now]
            if self._holds:
                self._holds.pop(0)

    @property
    def in_flight(self) -> int:
        """Requests running, waiting for a slot, or on their way to the queue: a model with any is
        never evicted."""
        with self._holds_lock:
            now = time.monotonic()
            held = sum(1 for t in self._holds if t > now)
        return self.queue.in_use + self.queue.depth + held

    @property
    def busy(self) -> int:
        """Requests generating or waiting for a slot now (a hold on the way to the queue is not work)."""
        return self.queue.in_use + self.queue.depth

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        return self.runtime.render_chat(messages, tools)

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def stream(
        self,
        prompt: str,
        params: GenerationParams,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> TokenStream:
        """Waits for a slot before returning (QueueFull when the queue is full, Cancelled when `cancel`
        is set meanwhile, NotReady when the model closes meanwhile); `on_position(n)` hears the 1-based
        place while waiting and 0 once the slot is granted."""
        try:
            if self._closed:
                raise NotReady(f"{self.name} is closed")
            start = time.monotonic()
            # Checked before queueing: a prompt that can never fit must not wait its turn to hear so.
            # The backend checks again exactly (with its BOS), once admitted.
            check_prompt_length(self.runtime.count_tokens(prompt), self.context_length, params.max_tokens)
            # Entered now, not on first read: a full queue must surface as 429 before any response starts.
            lease = self.queue.acquire(cancel, on_position).__enter__()
        finally:
            self._arrived()  # in the queue or gone: the hold has done its work
        try:
            inner = self.runtime.stream(prompt, params, cancel)
        except BaseException:
            lease.release()
            raise
        return _AdmittedStream(inner, lease, time.monotonic() - start, cancel)

    @property
    def reports_logprobs(self) -> bool:
        """Whether the backend gives next-token probabilities (`next_token_logprobs`)."""
        return callable(getattr(self.runtime, "next_token_logprobs", None))

    def next_token_logprobs(
        self, prompt: str, top: int = 20, cancel: threading.Event | None = None
    ) -> dict[str, float]:
        """The backend's next-token log-probabilities, run with an admission slot like any request."""
        scorer = getattr(self.runtime, "next_token_logprobs", None)
        if scorer is None:
            raise InvalidInput(f"{self.name} ({self.backend}) does not report token probabilities")
        try:
            if self._closed:
                raise NotReady(f"{self.name} is closed")
            check_prompt_length(self.runtime.count_tokens(prompt), self.context_length, 1)
            lease = self.queue.acquire(cancel, None).__enter__()
        finally:
            self._arrived()
        try:  # the lease is already entered: `with lease` would wait for a second slot
            return scorer(prompt, top)
        finally:
            lease.release()

    def health(self) -> dict:
        health = self.runtime.health()
        return {**health, "ok": bool(health.get("ok")) and not self._closed, "queue": self.queue.snapshot()}

    def close(self) -> None:
        """Refuse newcomers and turn the waiting away (NotReady), let running requests finish, then
        close the backend."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.queue.close(f"{self.name} was unloaded while this request waited; retry")
        self.runtime.close()


class _AdmittedStream(TokenStream):
    """The backend's stream, holding the admission slot until it ends; its stats count the wait."""

    def __init__(
        self, inner: TokenStream, lease: SlotLease, admitted_after_s: float, cancel: threading.Event | None
    ) -> None:
        self._inner = inner

        def release() -> None:
            try:
                inner.close()  # the backend frees its part first, so whoever gets the slot next finds it free
            finally:
                lease.release()  # whatever the backend did: a slot is never kept by a stream that ended

        def source(ts: TokenStream):
            for delta in inner:
                if delta.finish_reason is not None:
                    if (stats := inner.stats) is not None:
                        ts.stats = StreamStats(
                            stats.prompt_tokens,
                            stats.completion_tokens,
                            stats.time_to_first_token_s + admitted_after_s,
                            stats.total_s + admitted_after_s,
                            lease.waited_s,
                        )
                    ts.release()
                yield delta

        super().__init__(source, release, cancel)

    def close(self) -> None:
        # While another thread is inside next(), TokenStream.close only flags this stream: the
        # backend must hear it too, or it would go on generating until its next delta reaches us.
        self._inner.close()
        super().close()
