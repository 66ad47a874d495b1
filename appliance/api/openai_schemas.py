"""Wire schemas of the OpenAI-compatible API (/v1). Unknown fields are tolerated, as OpenAI does."""

from __future__ import annotations

from typing import Any

import msgspec


class ChatMessageIn(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatCompletionIn(msgspec.Struct):
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
    user: str | None = None


class CompletionIn(msgspec.Struct):
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


class EmbeddingIn(msgspec.Struct):
    model: str
    input: Any  # a string or a list of strings (checked by the route; token arrays are refused)
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
