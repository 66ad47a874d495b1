"""Wire schemas of the OpenAI-compatible API (/v1): what we implement is typed, the rest is refused by name.

Unknown fields are refused (`forbid_unknown_fields`, a 400 naming the field) instead of ignored:
a client that asks for `logprobs` or `n=3` must hear that it will not get them. Fields the SDKs
and agent frameworks send that change nothing here (`user`, `metadata`, `store: false`, ...) are
accepted; fields we know but do not implement are accepted only with their neutral value
(`refusal_of` names the first one that is not).
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class FunctionCallIn(_Strict):
    name: str
    arguments: str  # a JSON object, as a string (what OpenAI returns and the SDK sends back)


class ToolCallIn(_Strict):
    id: str
    function: FunctionCallIn
    type: str = "function"


class ChatMessageIn(_Strict):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    # What the SDK echoes back when a client appends a response's message to its history.
    refusal: str | None = None
    audio: Any = None
    function_call: Any = None
    annotations: list[Any] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # padding against side channels: nothing to pad here


class FunctionDefIn(_Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Strict):
    type: str
    function: FunctionDefIn


class JsonSchemaIn(_Strict):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormatIn(_Strict):
    type: str
    json_schema: JsonSchemaIn | None = None


# Known fields we do not implement, with the values that mean "not asked for".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
    "functions": (None,),
    "function_call": (None,),
    "store": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}
_HINTS = {
    "functions": "use tools",
    "function_call": "use tool_choice",
    "store": "completions are never stored",
}


def refusal_of(data: msgspec.Struct) -> tuple[str, str] | None:
    """(param, message) for the first known-but-unimplemented field set to a non-neutral value."""
    for field in data.__struct_fields__:
        neutral = _NEUTRAL.get(field)
        if neutral is None:
            continue
        value = getattr(data, field)
        if value is None or value in neutral:
            continue
        hint = _HINTS.get(field)
        return field, f"{field} is not supported by this server" + (f" ({hint})" if hint else "")
    return None


class ChatCompletionIn(_Strict):
    model: str
    messages: list[ChatMessageIn]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Harmless: identifiers and labels that change nothing in the generation.
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Known, not implemented: refused unless neutral (refusal_of).
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    functions: Any = None
    function_call: Any = None
    store: bool | None = None


class CompletionIn(_Strict):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = 16
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    user: str | None = None
    logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingIn(_Strict):
    model: str
    # OpenAI's shapes: text, texts, tokens, token lists. Typed, so anything else is a 400 naming
    # `input`; token arrays pass the type and are refused by the route.
    input: str | list[str | int | list[int]]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
