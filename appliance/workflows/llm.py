"""How a run reaches a language model: the `LLM` protocol the core implements over its gateway, and
`RuntimeLLM`, the same over any `LLMRuntime` (the echo runtime or a scripted one in tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from appliance.models.runtime import ChatMessage, Completion, GenerationParams, LLMRuntime


@dataclass(frozen=True, slots=True)
class LLMReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str


class LLM(Protocol):
    def complete(
        self, model: str, messages: Sequence[ChatMessage], max_tokens: int | None, json_schema: dict | None
    ) -> LLMReply: ...


class RuntimeLLM:
    """An `LLM` over runtimes found by name; JSON output is constrained when the runtime can be,
    and parsed (then checked) either way."""

    def __init__(
        self,
        runtime_for: Callable[[str], LLMRuntime],
        default_max_tokens: int = 512,
        generate: Callable[[LLMRuntime, str, GenerationParams], Completion] | None = None,
    ) -> None:
        self.runtime_for = runtime_for
        self.default_max_tokens = default_max_tokens
        # The core passes its gateway's generate, so each call is measured and charged to the run's key.
        self.generate = generate or (lambda runtime, prompt, params: runtime.generate(prompt, params))

    def complete(
        self, model: str, messages: Sequence[ChatMessage], max_tokens: int | None, json_schema: dict | None
    ) -> LLMReply:
        runtime = self.runtime_for(model)
        grammar = None
        if json_schema is not None and getattr(runtime, "constrained_decoding", False):
            from appliance.errors import InvalidInput
            from appliance.models.grammar import json_grammar

            try:
                grammar = json_grammar(json_schema)
            except InvalidInput:
                grammar = None  # outside the enforced subset: parsed and checked afterwards instead
        cap = (
            self.default_max_tokens
            if max_tokens is None
            else max(1, min(max_tokens, self.default_max_tokens))
        )
        prompt = runtime.render_chat(list(messages))
        done = self.generate(
            runtime, prompt, GenerationParams(max_tokens=cap, temperature=0.0, grammar=grammar)
        )
        return LLMReply(done.text, done.prompt_tokens, done.completion_tokens, runtime.name)
