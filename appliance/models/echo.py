"""EchoRuntime: a deterministic in-memory LLMRuntime that answers with the words of the last user message."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence

from appliance.errors import InvalidInput, NotReady
from appliance.models.runtime import (
    ChatMessage,
    Completion,
    GenerationParams,
    InFlight,
    StreamStats,
    TokenDelta,
    TokenStream,
    check_prompt_length,
    collect,
    held_back,
    refuse_grammar,
    refuse_tools,
)

# The chat template: each message as "<|role|>\n{content}\n", then the assistant's mark.
_MARK = "<|{}|>\n"
_ANY_MARK = re.compile(r"<\|(?:system|user|assistant|tool)\|>\n")
_USER_MARK = _MARK.format("user")


class EchoRuntime:
    """A real LLMRuntime without a model, for fast tests of what sits above one (planning, routing).

    - Tokens are whitespace-separated words: `count_tokens` is `len(text.split())`, and a prompt is
      evaluated as exactly that many tokens (no BOS).
    - `render_chat` writes each message as `<|role|>\\n{content}\\n` and ends with `<|assistant|>\\n`
      (tool calls in the history are not written: they reach it as text, in the generic format).
    - A grammar is refused (InvalidInput): it has no sampler to constrain.
    - Generation echoes the words of the last user message (the text after the last `<|user|>` mark,
      up to the next mark; the whole prompt when it has none), one word a token, separated by spaces:
      in order and over again with temperature 0, drawn by `random.Random(seed)` otherwise (top_p is
      ignored). It never ends its turn by itself: it runs to `max_tokens` (by default the context
      left), a stop sequence, or a cancel; a prompt with nothing to echo ends at once with "stop".
    - `token_delay_s` is what each token takes, so that a stream can be closed or cancelled midway,
      as a real model's can.
    - `error_rate` is the chance that a generation fails before its first token (a RuntimeError, as
      a crashing backend raises), drawn by `random.Random(error_seed)`: a model that misbehaves on
      purpose, for the tests of fallbacks and canary rollbacks.
    """

    backend = "echo"
    # No model, no sampler: a grammar is refused, and tools are written into plain messages by the
    # caller (so the generic tool format and its parser are testable here, over echoed text).
    constrained_decoding = False
    native_tools = False

    def __init__(
        self,
        name: str = "echo",
        context_length: int = 2048,
        capacity: int = 1,
        token_delay_s: float = 0.0,
        error_rate: float = 0.0,
        error_seed: int | None = 0,
    ) -> None:
        if context_length < 16:
            raise InvalidInput(f"context_length {context_length} for {name}: must be at least 16")
        self.name = name
        self.context_length = context_length
        self.capacity = capacity
        self.token_delay_s = token_delay_s
        self.error_rate = error_rate
        self._errors = random.Random(error_seed)
        self._errors_lock = threading.Lock()
        self._inflight = InFlight(name, capacity)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        refuse_tools(self.name, tools)
        if not messages:
            raise InvalidInput("a chat needs at least one message")
        return "".join(f"{_MARK.format(m.role)}{m.content}\n" for m in messages) + _MARK.format("assistant")

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        if self._inflight.closed:
            raise NotReady(f"{self.name} is closed")
        refuse_grammar(self.name, params)
        start = time.monotonic()
        prompt_tokens = self.count_tokens(prompt)
        if not prompt_tokens:
            raise InvalidInput("the prompt is empty")
        max_tokens = check_prompt_length(prompt_tokens, self.context_length, params.max_tokens)
        words = _last_user_message(prompt).split()
        with self._errors_lock:
            fail = self.error_rate > 0 and self._errors.random() < self.error_rate
        leave = self._inflight.enter()

        def source(ts: TokenStream) -> Iterator[TokenDelta]:
            if fail:
                raise RuntimeError(f"{self.name}: injected failure (error_rate={self.error_rate})")
            yield from self._run(ts, words, prompt_tokens, params, max_tokens, start)

        return TokenStream(source, leave, cancel)

    def _run(
        self,
        ts: TokenStream,
        words: list[str],
        prompt_tokens: int,
        params: GenerationParams,
        max_tokens: int,
        start: float,
    ) -> Iterator[TokenDelta]:
        rng = random.Random(params.seed)  # no seed: fresh entropy, as a sampling model would have
        stops = params.stop
        pending = ""  # generated, not yet sent: may be the start of a stop sequence
        generated = 0
        first: float | None = None
        finish = "length" if words else "stop"
        while words and generated < max_tokens:
            if self.token_delay_s:
                ts.cancelled.wait(self.token_delay_s)
            if ts.stopped():
                finish = "cancelled"
                break
            word = words[generated % len(words)] if params.temperature == 0 else rng.choice(words)
            pending += word if generated == 0 else " " + word
            generated += 1
            hits = [i for i in (pending.find(s) for s in stops) if i >= 0]
            if hits:
                pending = pending[: min(hits)]
                finish = "stop"
                break
            keep = held_back(pending, stops) if stops else 0
            out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            if out:
                first = first or time.monotonic()
                yield TokenDelta(out)
        if pending and finish != "cancelled":
            first = first or time.monotonic()
            yield TokenDelta(pending)
        now = time.monotonic()
        ts.stats = StreamStats(prompt_tokens, generated, (first or now) - start, now - start)
        ts.release()
        yield TokenDelta("", finish)

    def health(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "context_length": self.context_length,
            "capacity": self.capacity,
            "busy": self._inflight.busy,
            "ok": not self._inflight.closed,
        }

    def close(self) -> None:
        self._inflight.close()


def _last_user_message(prompt: str) -> str:
    at = prompt.rfind(_USER_MARK)
    if at < 0:
        return prompt
    rest = prompt[at + len(_USER_MARK) :]
    end = _ANY_MARK.search(rest)
    return rest if end is None else rest[: end.start()]
