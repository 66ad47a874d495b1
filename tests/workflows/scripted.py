"""ScriptedRuntime: an in-memory LLMRuntime that answers with the next of a list of replies (a model
that does exactly what a test needs, an injected instruction included), recording every prompt."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from appliance.models.runtime import (
    ChatMessage,
    Completion,
    GenerationParams,
    StreamStats,
    TokenDelta,
    TokenStream,
    collect,
)


class ScriptedRuntime:
    backend = "scripted"
    constrained_decoding = False
    native_tools = False

    def __init__(self, replies: Sequence[str], name: str = "scripted", context_length: int = 4096) -> None:
        self.name = name
        self.context_length = context_length
        self.capacity = 1
        self.replies = list(replies)
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        return "".join(f"<|{m.role}|>\n{m.content}\n" for m in messages) + "<|assistant|>\n"

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        with self._lock:
            self.prompts.append(prompt)
            text = self.replies.pop(0) if self.replies else '{"answer": "no more replies"}'
        if params.max_tokens is not None:
            text = " ".join(text.split()[: params.max_tokens])
        prompt_tokens, start = self.count_tokens(prompt), time.monotonic()

        def source(ts: TokenStream) -> Iterator[TokenDelta]:
            yield TokenDelta(text)
            now = time.monotonic()
            ts.stats = StreamStats(prompt_tokens, len(text.split()), now - start, now - start)
            ts.release()
            yield TokenDelta("", "stop")

        return TokenStream(source, lambda: None, cancel)

    def health(self) -> dict:
        return {"name": self.name, "backend": self.backend, "ok": True}

    def close(self) -> None:
        pass


class ConstrainedScriptedRuntime(ScriptedRuntime):
    """The scripted model as one that accepts a grammar (so a JSON-schema or tools request is served),
    then answers its next reply whatever the grammar: a model free to invent (the planner's intent
    guard is tested against it)."""

    constrained_decoding = True
