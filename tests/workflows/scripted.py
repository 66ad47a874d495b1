"""ScriptedRuntime: an in-memory LLMRuntime that answers with the next of a list of replies (a model
that does exactly what a test needs, an injected instruction included), recording every prompt."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from appliance.models.runtime import ChatMessage, Completion, GenerationParams, TokenStream


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
        with self._lock:
            self.prompts.append(prompt)
            text = self.replies.pop(0) if self.replies else '{"answer": "no more replies"}'
        words = text.split()
        if params.max_tokens is not None:
            text = " ".join(words[: params.max_tokens])
        start = time.monotonic()
        return Completion(
            text, "stop", self.count_tokens(prompt), len(text.split()), 0.0, time.monotonic() - start
        )

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        raise NotImplementedError("workflows generate whole replies")

    def health(self) -> dict:
        return {"name": self.name, "backend": self.backend, "ok": True}

    def close(self) -> None:
        pass
