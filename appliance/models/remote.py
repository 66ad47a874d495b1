"""The remote backend: a chat model served by an OpenAI-compatible server (vLLM, KServe, another appliance) at an allow-listed URL.

The runtime speaks the server's `/chat/completions` (and `/completions` for a raw prompt) over
httpx, streaming by SSE. It is an LLMRuntime like the local ones, so admission, routing, the
circuit breaker, fallbacks, metrics and rollout treat it the same: its chat "prompt" is the
conversation itself, encoded (the remote renders its own template), tools and JSON output go as
OpenAI's `tools`/`tool_choice`/`response_format`, and the tool calls it returns come back as the
`<tool_call>` blocks our parser reads from every backend. Its API key is read from a file or an
environment variable of this server, sent only as a bearer header, and never logged or echoed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from appliance.errors import InvalidInput, NotReady
from appliance.models.runtime import (
    DEFAULT_CONTEXT_LENGTH,
    ChatMessage,
    Completion,
    GenerationParams,
    InFlight,
    StreamStats,
    TokenDelta,
    TokenStream,
    collect,
)
from appliance.offline import check_service_url
from appliance.registry_records import RemoteEndpoint

if TYPE_CHECKING:
    from appliance.config import NetworkSettings

log = logging.getLogger(__name__)

# A chat's "prompt" for this runtime: the conversation as JSON behind this mark (no template renders
# it here: the remote server does). A prompt without it is raw text for `/completions`.
_CHAT_MARK = "\x00remote-chat\x00"
_TOOL_OPEN, _TOOL_CLOSE = "<tool_call>", "</tool_call>"  # appliance.generate.toolcalls' blocks
_MAX_ERROR_CHARS = 300
MAX_CAPACITY = 256


@dataclass(frozen=True, slots=True)
class RemoteTimeouts:
    connect_s: float = 10.0
    # Waiting for the response's headers and then for each chunk: bounds a remote that hangs (the
    # fallback's first-token and total timeouts sit above, counted from our slot).
    read_s: float = 120.0


def check_endpoint(endpoint: RemoteEndpoint, network: NetworkSettings, name: str = "") -> None:
    """Refuse (InvalidInput) an endpoint this appliance must not call: a URL outside network.allow,
    a key that would travel in clear text, a bad model id or capacity, an unreadable key source."""
    what = f"the remote URL of {name}" if name else "the remote URL"
    has_key = bool(endpoint.api_key_file or endpoint.api_key_env)
    check_service_url(endpoint.url, network, what, "api_key_file", has_key)
    if not isinstance(endpoint.model, str) or not endpoint.model.strip() or len(endpoint.model) > 256:
        raise InvalidInput(
            "give the model's id on the remote server (its /v1/models), 1-256 characters", param="model"
        )
    if not 1 <= endpoint.capacity <= MAX_CAPACITY:
        raise InvalidInput(f"capacity must be between 1 and {MAX_CAPACITY}", param="capacity")
    if endpoint.api_key_file and endpoint.api_key_env:
        raise InvalidInput(
            "give the API key's file or its environment variable, not both", param="api_key_file"
        )
    read_api_key(endpoint)


def read_api_key(endpoint: RemoteEndpoint) -> str | None:
    """The key, from its file or environment variable (InvalidInput when that source is missing or
    empty); None when the endpoint needs none. The message never contains the key."""
    if endpoint.api_key_file:
        try:
            key = open(os.path.expanduser(endpoint.api_key_file), encoding="utf-8").read().strip()
        except OSError as exc:
            raise InvalidInput(
                f"the remote's api_key_file {endpoint.api_key_file!r} cannot be read: {exc.strerror}",
                param="api_key_file",
            ) from None
        if not key:
            raise InvalidInput(
                f"the remote's api_key_file {endpoint.api_key_file!r} is empty", param="api_key_file"
            )
        return key
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env, "").strip()
        if not key:
            raise InvalidInput(
                f"the environment variable {endpoint.api_key_env!r} (the remote's API key) is not set",
                param="api_key_env",
            )
        return key
    return None


def where(endpoint: RemoteEndpoint) -> str:
    """The endpoint as logs and errors name it: scheme, host and port only."""
    return redacted(endpoint.url)


def redacted(url: str) -> str:
    """A URL's scheme, host and port: never credentials, path or query (for logs, errors, audit)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(a malformed URL)"
    host = parts.hostname or ""
    return f"{parts.scheme}://{'[' + host + ']' if ':' in host else host}{port}"


def _openai_message(m: ChatMessage) -> dict:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        out["content"] = m.content or None
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _estimate_tokens(text: str) -> int:
    # No tokenizer here: about four characters a token, on the low side, so that only a prompt
    # that cannot fit is refused before it leaves; the remote counts exactly (its usage is reported).
    return (len(text) + 3) // 4


class RemoteRuntime:
    """An LLMRuntime over an OpenAI-compatible server; up to `endpoint.capacity` requests at once."""

    backend = "remote"
    # The remote constrains its own output (response_format, tools) and renders tools itself.
    constrained_decoding = True
    native_tools = True

    def __init__(
        self,
        name: str,
        endpoint: RemoteEndpoint,
        network: NetworkSettings,
        *,
        context_length: int | None = None,
        timeouts: RemoteTimeouts = RemoteTimeouts(),
    ) -> None:
        check_endpoint(endpoint, network, name)
        self.name = name
        self.endpoint = endpoint
        self.context_length = context_length or DEFAULT_CONTEXT_LENGTH
        self.capacity = endpoint.capacity
        self.timeouts = timeouts
        key = read_api_key(endpoint)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=endpoint.url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeouts.read_s, connect=timeouts.connect_s),
            limits=httpx.Limits(
                max_connections=endpoint.capacity, max_keepalive_connections=endpoint.capacity
            ),
            follow_redirects=False,  # a redirect could leave the allow-listed host
            trust_env=False,  # no proxy from the environment: the URL is the one checked
        )
        self._inflight = InFlight(name, endpoint.capacity)

    # -- the protocol ------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if text.startswith(_CHAT_MARK):
            chat = json.loads(text[len(_CHAT_MARK) :])
            body = "".join(
                (m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in chat["messages"]
            )
            return _estimate_tokens(body) + 4 * len(chat["messages"])
        return _estimate_tokens(text)

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        if not messages:
            raise InvalidInput("a chat needs at least one message")
        chat: dict[str, Any] = {"messages": [_openai_message(m) for m in messages]}
        if tools:
            chat["tools"] = list(tools)
        return _CHAT_MARK + json.dumps(chat, ensure_ascii=False)

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        """Sends the request and reads its status before returning: a request the remote refuses
        (400) is InvalidInput here, a remote that is down or failing NotReady (the breaker hears it)."""
        if self._inflight.closed:
            raise NotReady(f"{self.name} is closed")
        path, body = self._request(prompt, params)
        start = time.monotonic()
        leave = self._inflight.enter()
        try:
            response = self._send(path, body)
        except BaseException:
            leave()
            raise
        chat = path == "chat/completions"
        prompt_estimate = self.count_tokens(prompt)

        def release() -> None:
            try:
                response.close()
            finally:
                leave()

        def source(ts: TokenStream) -> Iterator[TokenDelta]:
            yield from self._read(ts, response, chat, prompt_estimate, start)

        return TokenStream(source, release, cancel)

    def health(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "context_length": self.context_length,
            "capacity": self.capacity,
            "busy": self._inflight.busy,
            "ok": not self._inflight.closed,
            "remote": where(self.endpoint),
            "remote_model": self.endpoint.model,
        }

    def close(self) -> None:
        if self._inflight.close(timeout=60.0):
            self._client.close()

    # -- beyond the protocol: what the probe asks -----------------------------------------------
    def remote_models(self) -> list[dict]:
        """The server's /models entries (NotReady when it cannot be listed)."""
        response = self._call("GET", "models")
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, list):
            raise NotReady(f"{self.name}: {where(self.endpoint)}/models did not answer a model list")
        return [m for m in data if isinstance(m, dict)]

    def chat_once(self, body: dict) -> dict:
        """One non-streamed chat completion with `body` (model and messages filled in by the caller)."""
        return self._call("POST", "chat/completions", {"model": self.endpoint.model, **body})

    # -- the wire --------------------------------------------------------------------------------
    def _request(self, prompt: str, params: GenerationParams) -> tuple[str, dict]:
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if not prompt.startswith(_CHAT_MARK):
            if params.grammar is not None:
                raise InvalidInput(
                    f"{self.name} is remote: constrained output needs a chat (/v1/chat/completions)",
                    param="response_format",
                )
            return "completions", {**body, "prompt": prompt}
        chat = json.loads(prompt[len(_CHAT_MARK) :])
        body["messages"] = chat["messages"]
        if chat.get("tools"):
            body["tools"] = chat["tools"]
        grammar = params.grammar
        if grammar is not None:
            # The constraint as OpenAI's request fields: the remote enforces it its own way.
            native = dict(grammar.native or {})
            if grammar.kind == "tools" and not chat.get("tools"):
                raise InvalidInput(f"{self.name}: a tool grammar without tools", param="tools")
            if grammar.kind in ("json_object", "json_schema") and "response_format" not in native:
                native["response_format"] = (
                    {"type": "json_schema", "json_schema": {"name": "output", "schema": grammar.json_schema}}
                    if grammar.json_schema is not None
                    else {"type": "json_object"}
                )
            body.update(native)
        return "chat/completions", body

    def _send(self, path: str, body: dict) -> httpx.Response:
        try:
            request = self._client.build_request("POST", path, json=body)
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            try:
                response.read()
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            raise self._refused(response)
        return response

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._refused(response)
        try:
            return response.json()
        except ValueError:
            raise NotReady(
                f"{self.name}: {where(self.endpoint)}/{path} answered something that is not JSON"
            ) from None

    def _unreachable(self, exc: httpx.HTTPError) -> NotReady:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
        # The exception's text names the URL at most (never the headers, so never the key).
        return NotReady(
            f"the remote model {self.name} at {where(self.endpoint)} {kind}: {type(exc).__name__}",
            code="model_unavailable",
            retry_after=5,
        )

    def _refused(self, response: httpx.Response) -> Exception:
        status = response.status_code
        message = _error_message(response)
        at = f"the remote model {self.name} at {where(self.endpoint)}"
        if status in (400, 413, 422):
            return InvalidInput(f"{at} refused the request (HTTP {status}): {message}")
        if status in (401, 403):
            return NotReady(
                f"{at} refused our API key (HTTP {status}): check the version's api_key_file or api_key_env",
                code="model_unavailable",
            )
        if status == 404:
            return NotReady(
                f"{at} does not serve model {self.endpoint.model!r} (HTTP 404): {message}",
                code="model_unavailable",
            )
        retry = response.headers.get("retry-after", "")
        return NotReady(
            f"{at} failed (HTTP {status}): {message}",
            code="model_unavailable",
            retry_after=int(retry) if retry.isdigit() else 5,
        )

    def _read(
        self, ts: TokenStream, response: httpx.Response, chat: bool, prompt_estimate: int, start: float
    ) -> Iterator[TokenDelta]:
        calls: dict[int, dict[str, str]] = {}  # index -> id, name, arguments (streamed in pieces)
        finish: str | None = None
        usage: dict = {}
        pieces = 0
        first: float | None = None
        try:
            for line in response.iter_lines():
                if ts.stopped():
                    finish = "cancelled"
                    break
                if not line.startswith("data:"):
                    continue  # comments (queue positions), event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    raise NotReady(f"{self.name}: the remote sent a chunk that is not JSON") from None
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    error = event["error"]
                    text = error.get("message") if isinstance(error, dict) else str(error)
                    raise NotReady(
                        f"the remote model {self.name} failed mid-stream: {str(text)[:_MAX_ERROR_CHARS]}"
                    )
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    if chat:
                        delta = choice.get("delta") or {}
                        text = delta.get("content") or ""
                        for call in delta.get("tool_calls") or ():
                            _merge_call(calls, call)
                    else:
                        text = choice.get("text") or ""
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if text:
                        pieces += 1
                        first = first or time.monotonic()
                        if calls:  # the calls so far are complete: they go first, in the order made
                            yield TokenDelta(_blocks(calls))
                        yield TokenDelta(text)
        except httpx.TimeoutException:
            raise NotReady(
                f"the remote model {self.name} sent nothing for {self.timeouts.read_s:g} s",
                code="model_timeout",
                retry_after=5,
            ) from None
        except httpx.HTTPError as exc:
            raise NotReady(
                f"the remote model {self.name} at {where(self.endpoint)} broke off: {type(exc).__name__}",
                code="model_unavailable",
            ) from None
        if calls and finish != "cancelled":
            first = first or time.monotonic()
            yield TokenDelta(_blocks(calls))
        now = time.monotonic()
        ts.stats = StreamStats(
            int(usage.get("prompt_tokens") or prompt_estimate),
            int(usage.get("completion_tokens") or pieces),
            (first or now) - start,
            now - start,
        )
        ts.release()
        yield TokenDelta(
            "", "cancelled" if finish == "cancelled" else "length" if finish == "length" else "stop"
        )


def _merge_call(calls: dict[int, dict[str, str]], piece: Any) -> None:
    """One streamed tool-call delta into the call at its index (id and name come first, arguments in parts)."""
    if not isinstance(piece, dict):
        return
    index = piece.get("index", len(calls))
    call = calls.setdefault(index if isinstance(index, int) else len(calls), {"name": "", "arguments": ""})
    function = piece.get("function") or {}
    if function.get("name"):
        call["name"] = function["name"]
    if isinstance(function.get("arguments"), str):
        call["arguments"] += function["arguments"]


def _blocks(calls: dict[int, dict[str, str]]) -> str:
    """The calls gathered so far as `<tool_call>` blocks, one a line; they are handed on once."""
    text = "\n".join(_block(c) for _, c in sorted(calls.items())) + "\n"
    calls.clear()
    return text


def _block(call: dict[str, str]) -> str:
    """A call as the `<tool_call>` block every backend's output is parsed from."""
    try:
        arguments: Any = json.loads(call["arguments"] or "{}")
    except ValueError:
        arguments = call["arguments"]  # left as it came: the parser counts it unparseable
    return f"{_TOOL_OPEN}\n{json.dumps({'name': call['name'], 'arguments': arguments}, ensure_ascii=False)}\n{_TOOL_CLOSE}"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason_phrase or "")[:_MAX_ERROR_CHARS]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:_MAX_ERROR_CHARS]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:_MAX_ERROR_CHARS]
    return str(error or body)[:_MAX_ERROR_CHARS]


class RemoteModels:
    """Opens remote runtimes with this server's network policy and timeouts (the one door for both
    the registry's import and probe and the pool's loads)."""

    def __init__(self, network: NetworkSettings, timeouts: RemoteTimeouts) -> None:
        self.network = network
        self.timeouts = timeouts

    def check(self, endpoint: RemoteEndpoint, name: str = "") -> None:
        check_endpoint(endpoint, self.network, name)

    def open(self, name: str, endpoint: RemoteEndpoint, context_length: int | None = None) -> RemoteRuntime:
        return RemoteRuntime(
            name, endpoint, self.network, context_length=context_length, timeouts=self.timeouts
        )
