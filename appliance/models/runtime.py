"""The LLM runtime protocol and what every backend shares: request/result types, streams, the running count."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from appliance.errors import InvalidInput, NotReady, TooManyRequests
from appliance.models.grammar import Grammar

ROLES = ("system", "user", "assistant", "tool")
# "cancelled" is ours, not OpenAI's: only a caller that cancelled (and so no longer listens) sees it.
FINISH_REASONS = ("stop", "length", "cancelled")
# The context a runtime allocates when nobody says: a KV cache for a model's full trained context
# (32k for Qwen 1.5B, ~0.9 GB) slows every CPU step, and RAG prompts fit well within this.
DEFAULT_CONTEXT_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the assistant made: `arguments` is a JSON object as text, as OpenAI sends it."""

    id: str
    name: str
    arguments: str

    def arguments_dict(self) -> dict:
        try:
            value = json.loads(self.arguments)
        except ValueError:
            raise InvalidInput(f"tool call {self.id}: arguments are not JSON", param="messages") from None
        except RecursionError:  # json's own limit, near 1,000 levels: a 400, not a crash
            raise InvalidInput(f"tool call {self.id}: arguments nest too deeply", param="messages") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"tool call {self.id}: arguments must be a JSON object", param="messages")
        return value


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made
    tool_call_id: str | None = None  # tool: the call this is the result of

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput(f"unknown message role {self.role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(self.content, str):
            raise InvalidInput(f"message content must be text, not {type(self.content).__name__}")
        if self.tool_calls and self.role != "assistant":
            raise InvalidInput("only assistant messages carry tool_calls", param="messages")
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidInput("a tool message needs the tool_call_id it answers", param="messages")

    def template_dict(self) -> dict:
        """The message as chat templates read it (HF convention: tool calls' arguments as objects)."""
        out: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_dict()},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


MAX_STOP_SEQUENCES = 4  # OpenAI's limit, kept for every caller


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """How to sample one generation; validated on construction for every caller."""

    max_tokens: int | None = None  # None: up to the context left after the prompt
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Constrained decoding: every token must keep the output inside this grammar (JSON output, tool
    # calls). Only runtimes with `constrained_decoding` accept one; the others refuse it.
    grammar: Grammar | None = None

    def __post_init__(self) -> None:
        # The one place generation parameters are checked, for every caller (the OpenAI routes,
        # answers, workflows): a bad request is a 400 naming the parameter before it ever queues.
        problems = []  # (parameter, what is wrong)
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            problems.append(("max_tokens", "max_tokens must be at least 1"))
        if not 0.0 <= self.temperature <= 2.0:
            problems.append(("temperature", "temperature must be between 0 and 2"))
        if not 0.0 < self.top_p <= 1.0:
            problems.append(("top_p", "top_p must be in (0, 1]"))
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            problems.append(("stop", "stop must be non-empty strings"))
        elif len(self.stop) > MAX_STOP_SEQUENCES:
            problems.append(("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences"))
        if self.seed is not None and not 0 <= self.seed < 2**32:
            problems.append(("seed", "seed must be within [0, 2**32)"))
        if self.grammar is not None and not isinstance(self.grammar, Grammar):
            problems.append(("response_format", "grammar must be an appliance.models.grammar.Grammar"))
        if problems:
            raise InvalidInput("; ".join(text for _, text in problems), param=problems[0][0])


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


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop sequence: not sent yet."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class InFlight:
    """The requests a backend is running: at most `capacity`, refused once it closes, waited for by close().

    Admission (ServedModel) never lets more than `capacity` in; the refusal beyond it only guards
    a backend called without admission.
    """

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise InvalidInput(f"{name}: capacity must be >= 1")
        self.name = name
        self.capacity = capacity
        self._cond = threading.Condition()
        self._busy = 0
        self._closed = False

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def closed(self) -> bool:
        return self._closed

    def enter(self) -> Callable[[], None]:
        """Count one request in; returns its idempotent `leave`. NotReady once closing, TooManyRequests when full."""
        with self._cond:
            if self._closed:
                raise NotReady(f"{self.name} was unloaded; retry")
            if self._busy >= self.capacity:
                raise TooManyRequests(f"{self.name} is running {self._busy} requests, its capacity")
            self._busy += 1
        left = threading.Lock()

        def leave() -> None:
            if left.acquire(blocking=False):
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

        return leave

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, then wait (up to `timeout`) for the running ones to leave.
        False when it was already closed (the first caller does the cleanup)."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._cond.wait_for(lambda: self._busy == 0, timeout)
        return True


class TokenStream(Iterator[TokenDelta]):
    """What `LLMRuntime.stream` returns: an iterator of TokenDelta; the last carries finish_reason.

    `stats` is filled once the stream is exhausted. `close()` stops generation and frees what the
    request holds: at once when called between deltas, else within one token when called from another
    thread while a delta is being produced (the API calls it from its event loop when the HTTP client
    goes away). Backends pass a factory that, given this stream, returns a generator which checks
    `stopped()` between tokens, sets `stats` and calls `release` before yielding its last delta (a
    caller may stop reading there), and an idempotent `release` that frees what the request holds.
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
                delta = next(self._source)
            except BaseException:
                self._finish()
                raise
        if self.cancelled.is_set():
            # close() came from another thread while this delta was produced, so it could not end the
            # stream; whoever closed it asks for no more deltas, so end it here, or its model and its
            # slot would stay held by nobody (a client that left mid-token leaked its slot for good).
            self._end_if_idle()
        return delta

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
        # If a delta is being produced on another thread, that thread ends the stream itself once
        # its delta is out (it checks `cancelled` after letting go of `_busy`, and this sets it before
        # trying: one of the two always gets to end it); otherwise end it here, now.
        self._end_if_idle()

    def _end_if_idle(self) -> None:
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
        # A stream dropped without close() must not hold its model (or its slot) forever.
        if not getattr(self, "_done", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - nothing to report to at garbage collection
                pass


@runtime_checkable
class LLMRuntime(Protocol):
    """A loaded chat/completion model: llama.cpp (CPU, in-process), vLLM (GPU) or the in-memory echo.

    A backend runs what it is given at once, up to `capacity` requests together (beyond, it refuses
    with TooManyRequests). Slots, the FIFO queue, queue positions and 429s are not its business:
    ServedModel (appliance.models.served) puts them in front of any backend.
    """

    name: str  # as listed by /v1/models
    backend: str  # "llama.cpp" | "vllm" | "echo"
    context_length: int
    capacity: int  # requests it can run at the same time
    # Honours GenerationParams.grammar; without it, a request with a grammar is refused (InvalidInput).
    constrained_decoding: bool
    # Its chat template renders `tools` and tool messages itself; without it, render_chat refuses
    # tools and the caller writes them into plain messages (appliance.generate.tools).
    native_tools: bool

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the model's tokenizer (special tokens parsed, no BOS added)."""
        ...

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        """The prompt text for a conversation, through the model's chat template in the sandbox;
        `tools` (OpenAI's tool objects) only where `native_tools`."""
        ...

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion: ...

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        """Starts the request now (InvalidInput for a prompt that does not fit, NotReady once closing)."""
        ...

    def health(self) -> dict:
        """At least name, backend, context_length, capacity, ok, and busy: the requests running now."""
        ...

    def close(self) -> None:
        """Refuse new requests (NotReady), let the running ones finish, then free the model."""
        ...


def refuse_grammar(name: str, params: GenerationParams) -> None:
    """What a runtime without constrained decoding does with a grammar: refuse, never ignore it."""
    if params.grammar is not None:
        raise InvalidInput(
            f"{name} cannot constrain its output (structured output and tool calls need llama.cpp or vLLM)",
            param="response_format",
        )


def refuse_tools(name: str, tools: Sequence[dict] | None) -> None:
    """What a runtime whose template cannot render tools does when given some."""
    if tools:
        raise InvalidInput(f"the chat template of {name} does not render tools", param="tools")


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
    return Completion(
        "".join(parts),
        finish,
        stats.prompt_tokens,
        stats.completion_tokens,
        stats.time_to_first_token_s,
        stats.total_s,
        stats.queued_s,
    )
