"""LLMRuntime over vLLM's in-process async engine (GPU servers): continuous batching, streamed deltas."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

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
    refuse_tools,
)
from appliance.models.templates import ChatTemplate

# vLLM's finish reasons; "abort" is what a cancelled request ends with.
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}
_END = object()
_POLL_S = 0.05  # how often a waiting reader looks at its cancel flags


def sampling_kwargs(
    params: GenerationParams, max_tokens: int, structured: tuple[str, Any] | None = None
) -> dict[str, Any]:
    """GenerationParams in vllm.SamplingParams' terms (temperature 0 is greedy in both).

    `structured` is (SamplingParams keyword, its params class): ("structured_outputs",
    StructuredOutputsParams) since vLLM 0.10.2, ("guided_decoding", GuidedDecodingParams) before. A
    grammar goes there as its JSON schema when it has one (vLLM's JSON mode), else as GBNF, which
    vLLM's default xgrammar backend reads.
    """
    out: dict[str, Any] = {
        "n": 1,
        "max_tokens": max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": list(params.stop) or None,
        "seed": params.seed,
    }
    grammar = params.grammar
    if grammar is not None:
        if structured is None:
            raise InvalidInput("this vLLM has no structured-output decoding", param="response_format")
        keyword, cls = structured
        if grammar.json_schema is not None:
            out[keyword] = cls(json=grammar.json_schema)
        else:
            out[keyword] = cls(grammar=grammar.gbnf)
    return out


def structured_outputs_params() -> tuple[str, Any] | None:
    """vLLM's structured-output parameters, under whichever name this vLLM version has them."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return "structured_outputs", StructuredOutputsParams
    except ImportError:
        pass
    try:
        from vllm.sampling_params import GuidedDecodingParams

        return "guided_decoding", GuidedDecodingParams
    except ImportError:
        return None


class VLLMRuntime:
    """One model served by vLLM's AsyncLLMEngine on an event loop of its own, behind the sync protocol.

    The engine batches concurrent requests itself: its capacity, `max_concurrent`, only bounds how
    many requests admission (ServedModel) lets in together.
    """

    backend = "vllm"
    constrained_decoding = True  # through vLLM's structured outputs (see sampling_kwargs)

    def __init__(
        self,
        model_path: Path,
        name: str,
        context_length: int = 8192,
        *,
        max_concurrent: int = 64,
        gpu_memory_utilization: float = 0.85,
        chat_template: str | None = None,
        tokenizer: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.context_length = context_length
        self.model_path = Path(model_path)
        self.capacity = max_concurrent
        self._inflight = InFlight(name, max_concurrent)
        self._options = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "tokenizer": tokenizer,
            **(engine_kwargs or {}),
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"vllm-{name}", daemon=True)
        self._thread.start()
        self._engine_gone = False  # set once the engine is shut down: nothing more is sent to it
        try:
            self._engine, self._tokenizer, self._sampling_params_cls, self._structured = self._run(
                self._start_engine()
            )
        except BaseException:
            self._stop_loop()
            raise
        template = chat_template or getattr(self._tokenizer, "chat_template", None)
        if not template:
            raise NotReady(f"{name}: the tokenizer has no chat template and the manifest gives none")
        self._template = ChatTemplate(
            template,
            bos_token=getattr(self._tokenizer, "bos_token", None) or "",
            eos_token=getattr(self._tokenizer, "eos_token", None) or "",
        )
        self.native_tools = self._template.renders_tools

    async def _start_engine(self) -> tuple[Any, Any, type, tuple[str, Any] | None]:
        """(engine, tokenizer, SamplingParams class, structured-output params (structured_outputs_params));
        runs on the engine's loop. Replaced by the test double."""
        # Imported here: vllm is the optional GPU extra, and importing it on a CPU host fails.
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.engine.async_llm_engine import AsyncLLMEngine

        args = AsyncEngineArgs(
            model=str(self.model_path),
            served_model_name=self.name,
            max_model_len=self.context_length,
            enable_prefix_caching=True,  # RAG prompts share their system prompt and template prefix
            **{k: v for k, v in self._options.items() if v is not None},
        )
        engine = AsyncLLMEngine.from_engine_args(args)
        tokenizer = engine.get_tokenizer()
        if inspect.isawaitable(tokenizer):  # async in some vLLM versions, sync in others
            tokenizer = await tokenizer
        return engine, tokenizer, SamplingParams, structured_outputs_params()

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- protocol --

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        if not messages:
            raise InvalidInput("a chat needs at least one message")
        if not self.native_tools:
            refuse_tools(self.name, tools)
        extra = {"tools": list(tools)} if tools else {}
        return self._template.render([m.template_dict() for m in messages], **extra)

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        if self._inflight.closed:
            raise NotReady(f"{self.name} is closed")
        start = time.monotonic()
        # Tokenised here so the length rule and the counts use exactly what the engine will see.
        prompt_ids = list(self._tokenizer.encode(prompt, add_special_tokens=True))
        max_tokens = check_prompt_length(len(prompt_ids), self.context_length, params.max_tokens)
        leave = self._inflight.enter()  # refused once close() started
        try:
            sampling = self._sampling_params_cls(**sampling_kwargs(params, max_tokens, self._structured))
            request_id = uuid.uuid4().hex
            outputs: queue.Queue = queue.Queue()

            async def pump() -> None:
                try:
                    async for out in self._engine.generate(
                        {"prompt_token_ids": prompt_ids}, sampling, request_id
                    ):
                        outputs.put(out)
                    outputs.put(_END)
                except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
                    outputs.put(exc)

            task = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        except BaseException:
            leave()
            raise

        def abort() -> None:
            task.cancel()
            if not self._engine_gone:
                asyncio.run_coroutine_threadsafe(self._engine.abort(request_id), self._loop)

        def source(ts: TokenStream) -> Iterator[TokenDelta]:
            sent = ""
            tokens = 0
            first: float | None = None
            finish = "stop"
            try:
                while True:
                    if ts.stopped():
                        abort()
                        finish = "cancelled"
                        break
                    try:
                        item = outputs.get(timeout=_POLL_S)
                    except queue.Empty:
                        if self._engine_gone or not self._thread.is_alive():
                            # The engine's loop is gone: no output will ever come.
                            raise NotReady(f"{self.name} was unloaded during this request") from None
                        continue
                    if item is _END:
                        break
                    if isinstance(item, BaseException):
                        raise NotReady(f"{self.name}: the vLLM engine failed: {item!r}") from item
                    out = item.outputs[0]
                    tokens = len(out.token_ids)
                    # vLLM reports cumulative text; it holds back a possible stop-string prefix, so the
                    # text only grows and the delta is what is new.
                    delta = out.text[len(sent) :] if out.text.startswith(sent) else ""
                    if delta:
                        first = first or time.monotonic()
                        sent += delta
                        yield TokenDelta(delta)
                    if item.finished:
                        finish = _FINISH.get(out.finish_reason or "stop", "stop")
                        break
            except GeneratorExit:
                abort()
                raise
            now = time.monotonic()
            ts.stats = StreamStats(len(prompt_ids), tokens, (first or now) - start, now - start)
            ts.release()
            yield TokenDelta("", finish)

        return TokenStream(source, leave, cancel)

    def health(self) -> dict:
        errored = bool(getattr(self._engine, "errored", False))
        return {
            "name": self.name,
            "backend": self.backend,
            "model_path": str(self.model_path),
            "context_length": self.context_length,
            "capacity": self.capacity,
            "busy": self._inflight.busy,
            "ok": not self._inflight.closed and not errored and self._thread.is_alive(),
        }

    def close(self) -> None:
        # Running requests finish first (for at most a minute), as on llama.cpp; new ones are refused.
        if not self._inflight.close(timeout=60):
            return
        self._engine_gone = True
        # Aborts sent by requests that just ended are tasks on the loop: one turn of it starts them.
        if self._thread.is_alive():
            with contextlib.suppress(TimeoutError):
                self._run(asyncio.sleep(0), timeout=5)
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            # On the loop, ahead of the stop below: the engine's background tasks live there.
            self._loop.call_soon_threadsafe(shutdown)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
