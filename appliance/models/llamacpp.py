"""LLMRuntime over llama-cpp-python in-process (CPU): GGUF models, a Llama instance per slot, per-token cancel."""

from __future__ import annotations

import codecs
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from appliance.errors import InvalidInput, NotReady
from appliance.models.lazy_grammar import lazy_grammar_llama
from appliance.models.runtime import (
    DEFAULT_CONTEXT_LENGTH,
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
    refuse_tools,
)
from appliance.models.templates import ChatTemplate

LLAMA_REQUIREMENT = "llama-cpp-python==0.3.36"
_BATCH = 512
REPEAT_PENALTY = 1.1


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise NotReady(
            f"{LLAMA_REQUIREMENT} is not installed: run scripts/build-llama-wheel.sh and install the wheel "
            "it prints (.venv/bin/pip install --no-deps <wheel>)"
        ) from exc
    return llama_cpp


def _cpus() -> int:
    from appliance.models.embedder import available_cpus

    return available_cpus()


class LlamaCppRuntime:
    """A GGUF model run by llama.cpp inside this process.

    A Llama object is not safe for concurrent use, so each of the `slots` (its capacity) has its own
    Llama instance, and a request takes one from a pool while it runs; admission (ServedModel) lets
    no more requests in than there are instances, so one is always free. llama.cpp memory-maps the
    weights, so the instances share one copy in the page cache and each adds only its KV cache; the
    CPU threads are split between them so parallel requests do not oversubscribe the cores. One slot (the default)
    gives the lowest latency per request on a small CPU; more slots trade that for throughput.

    Tokens are generated with `Llama.generate` rather than `create_completion(stream=True)`: the
    latter decodes each token on its own (dropping characters split across tokens from the stream),
    reuses the previous request's seed when none is given, and does not report counts when
    streaming. Stop sequences, UTF-8 and counts are handled here instead, identically for both calls.
    """

    backend = "llama.cpp"
    constrained_decoding = True  # GBNF grammars, checked token by token (appliance.models.lazy_grammar)

    def __init__(
        self,
        model_path: Path,
        name: str,
        context_length: int | None = None,
        threads: int | None = None,
        slots: int = 1,
        chat_template: str | None = None,
        batch_threads: int | None = None,
    ) -> None:
        llama_cpp = _import_llama()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise NotReady(f"model file {self.model_path} does not exist")
        self.name = name
        self.capacity = slots
        self._inflight = InFlight(name, slots)
        self.threads = threads or _cpus()
        per_slot = max(1, self.threads // slots)
        # Prompt processing is one large parallel matrix product per batch, so it uses every core
        # even where generation leaves one free (its threads wait for each other at every token).
        self.batch_threads = batch_threads or _cpus()
        batch_per_slot = max(1, self.batch_threads // slots)
        load_start = time.monotonic()
        try:
            # A vocabulary-only instance (no weights) counts tokens and renders chats without a slot. Its
            # dummy context makes llama.cpp warn about a training context of 0 on stderr whatever the
            # log level, hence the fd-level silencing (start-up only; it would hide other threads' stderr).
            from llama_cpp._utils import suppress_stdout_stderr

            with suppress_stdout_stderr(disable=False):
                self._vocab = llama_cpp.Llama(model_path=str(self.model_path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise NotReady(f"llama.cpp cannot read {self.model_path} as a GGUF model: {exc}") from None
        self._vocab_lock = threading.Lock()
        metadata = dict(self._vocab.metadata)
        arch = metadata.get("general.architecture", "")
        trained = int(metadata.get(f"{arch}.context_length", 0) or 0) or None
        if context_length is None:
            context_length = min(trained or DEFAULT_CONTEXT_LENGTH, DEFAULT_CONTEXT_LENGTH)
        if context_length < 16 or (trained is not None and context_length > trained):
            raise InvalidInput(
                f"context_length {context_length} for {name}: must be between 16 and the model's trained "
                f"context ({trained})"
            )
        self.context_length = context_length
        self.architecture = arch
        self._bos = self._vocab.token_bos()
        self._eog = llama_cpp.llama_vocab_is_eog
        # Pinned llama-cpp-python version: the vocab handle has no public accessor.
        self._vocab_handle = self._vocab._model.vocab
        self._add_bos = metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._template = self._load_template(chat_template or metadata.get("tokenizer.chat_template"))
        self.native_tools = self._template is not None and self._template.renders_tools
        self._grammars_checked: dict[str, bool] = {}  # GBNF text -> parses (bounded, see _grammar)
        self._instances = []
        llama_class = lazy_grammar_llama(llama_cpp)
        try:
            for _ in range(slots):
                self._instances.append(
                    llama_class(
                        model_path=str(self.model_path),
                        n_ctx=context_length,
                        n_batch=min(_BATCH, context_length),
                        n_threads=per_slot,
                        n_threads_batch=batch_per_slot,
                        verbose=False,
                    )
                )
        except (ValueError, RuntimeError) as exc:
            raise NotReady(f"llama.cpp could not load {self.model_path}: {exc}") from None
        self._free = list(self._instances)
        self._free_lock = threading.Lock()
        self.load_s = time.monotonic() - load_start

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._vocab.detokenize([token], special=True).decode("utf-8", errors="replace")

    def _load_template(self, source: str | None) -> ChatTemplate | None:
        if not source:
            return None
        # Refused here, at load, if the file's template reaches for internals (CVE-2024-34359).
        return ChatTemplate(
            source, bos_token=self._token_text(self._bos), eos_token=self._token_text(self._vocab.token_eos())
        )

    # -- protocol --

    def count_tokens(self, text: str) -> int:
        with self._vocab_lock:
            self._check_open()
            return len(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The tokens a prompt is evaluated as: the model's BOS if it wants one, special tokens parsed."""
        with self._vocab_lock:
            self._check_open()
            ids = self._vocab.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos, special=True)
        if self._add_bos and len(ids) > 1 and ids[0] == ids[1] == self._bos:
            ids = ids[1:]  # the chat template wrote a BOS of its own
        return ids

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict] | None = None) -> str:
        if self._template is None:
            raise NotReady(f"{self.name} has no chat template in its file: give one in the models manifest")
        if not messages:
            raise InvalidInput("a chat needs at least one message")
        if not self.native_tools:
            refuse_tools(self.name, tools)
        extra = {"tools": list(tools)} if tools else {}
        return self._template.render([m.template_dict() for m in messages], **extra)

    def _grammar(self, params: GenerationParams) -> Any:
        """The request's grammar for llama.cpp, checked to parse first: llama-cpp-python adds the
        sampler llama.cpp returns without looking, and a grammar that fails to parse returns none."""
        if params.grammar is None:
            return None
        llama_cpp = _import_llama()
        text = params.grammar.gbnf
        ok = self._grammars_checked.get(text)
        if ok is None:
            with self._vocab_lock:
                self._check_open()
                sampler = llama_cpp.llama_sampler_init_grammar(
                    self._vocab_handle, text.encode("utf-8"), b"root"
                )
            ok = bool(sampler)
            if ok:
                llama_cpp.llama_sampler_free(sampler)
            if len(self._grammars_checked) >= 256:
                self._grammars_checked.clear()
            self._grammars_checked[text] = ok
        if not ok:
            raise InvalidInput("the grammar does not parse (llama.cpp refused it)", param="response_format")
        return llama_cpp.LlamaGrammar.from_string(text, verbose=False)

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> Completion:
        return collect(self.stream(prompt, params, cancel))

    def _check_open(self) -> None:
        if self._inflight.closed:
            raise NotReady(f"{self.name} is closed")

    def stream(
        self, prompt: str, params: GenerationParams, cancel: threading.Event | None = None
    ) -> TokenStream:
        self._check_open()
        start = time.monotonic()
        prompt_ids = self.prompt_tokens(prompt)
        if not prompt_ids:
            raise InvalidInput("the prompt is empty")
        max_tokens = check_prompt_length(len(prompt_ids), self.context_length, params.max_tokens)
        grammar = self._grammar(params)
        leave = self._inflight.enter()  # refused once close() started: its instances are about to go
        with self._free_lock:
            # Never empty: fewer requests are in than there are instances, and each returns its own
            # before it leaves.
            llm = self._free.pop()
        released = threading.Lock()

        def release() -> None:
            if released.acquire(blocking=False):
                with self._free_lock:
                    self._free.append(llm)
                leave()

        def source(ts: TokenStream) -> Iterator[TokenDelta]:
            yield from self._run(ts, llm, prompt_ids, params, max_tokens, start, grammar)

        return TokenStream(source, release, cancel)

    def _run(
        self,
        ts: TokenStream,
        llm: Any,
        prompt_ids: list[int],
        params: GenerationParams,
        max_tokens: int,
        start: float,
        grammar: Any = None,
    ) -> Iterator[TokenDelta]:
        # An explicit seed every time: llama-cpp-python otherwise derives one from the last request's.
        llm.set_seed(params.seed if params.seed is not None else secrets.randbits(32))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = params.stop
        pending = ""  # decoded, not yet sent: may be the start of a stop sequence
        generated = 0
        first: float | None = None
        finish = "length"
        # repeat_penalty 1.1 is llama.cpp's own CLI/server default (the Python binding's is 1.0):
        # without it, a small model at low temperature loops on one sentence (seen with Qwen 1.5B
        # answering from a table of per diems).
        tokens = llm.generate(
            prompt_ids,
            temp=params.temperature,
            top_p=params.top_p,
            # Under a grammar the penalty would push the model off the structure's repeated tokens
            # (quotes, commas, keys): the grammar already keeps it from looping.
            repeat_penalty=REPEAT_PENALTY if grammar is None else 1.0,
            reset=True,
            grammar=grammar,
        )
        try:
            for token in tokens:
                if ts.stopped():
                    finish = "cancelled"
                    break
                if self._eog(self._vocab_handle, token):
                    finish = (
                        "stop"  # the end-of-turn token is not text and, as in llama-cpp-python, not counted
                    )
                    break
                generated += 1
                pending += decoder.decode(llm.detokenize([token], special=False))
                if stops:
                    hits = [i for i in (pending.find(s) for s in stops) if i >= 0]
                    if hits:
                        pending = pending[: min(hits)]
                        finish = "stop"
                        break
                if generated >= max_tokens:
                    break
                keep = held_back(pending, stops) if stops else 0
                out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                if out:
                    first = first or time.monotonic()
                    yield TokenDelta(out)
                if ts.stopped():
                    finish = "cancelled"
                    break
        finally:
            tokens.close()  # stops llama.cpp between tokens; the KV cache stays consistent for reuse
        if finish != "cancelled":
            pending += decoder.decode(b"", final=True)
        if pending and finish != "cancelled":
            first = first or time.monotonic()
            yield TokenDelta(pending)
        now = time.monotonic()
        ts.stats = StreamStats(len(prompt_ids), generated, (first or now) - start, now - start)
        ts.release()
        yield TokenDelta("", finish)

    def next_token_logprobs(self, prompt: str, top: int = 20) -> dict[str, float]:
        """The `top` likeliest next tokens after `prompt` (as text, special tokens written out) with their
        natural-log probabilities over the whole vocabulary: one forward pass, nothing sampled. What a
        judge reads a yes/no decision from (OpenAI's `top_logprobs` of the first token)."""
        import numpy as np

        if not 1 <= top <= 100:
            raise InvalidInput("top must be between 1 and 100", param="top_logprobs")
        self._check_open()
        prompt_ids = self.prompt_tokens(prompt)
        if not prompt_ids:
            raise InvalidInput("the prompt is empty")
        check_prompt_length(len(prompt_ids), self.context_length, 1)
        llama_cpp = _import_llama()
        leave = self._inflight.enter()
        with self._free_lock:
            llm = self._free.pop()
        try:
            llm.reset()
            llm.eval(prompt_ids)  # the last position's logits are kept by llama.cpp after the batch
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)
            )
            logits = logits.astype(np.float64)
        finally:
            with self._free_lock:
                self._free.append(llm)
            leave()
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = [int(t) for t in np.argsort(-logprobs)[:top]]
        with self._vocab_lock:
            texts = [self._token_text(t) for t in best]
        out: dict[str, float] = {}
        for token, text in zip(best, texts, strict=True):  # two tokens may read the same: summed
            value = float(logprobs[token])
            out[text] = float(np.logaddexp(out[text], value)) if text in out else value
        return out

    def health(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "model_path": str(self.model_path),
            "architecture": self.architecture,
            "context_length": self.context_length,
            "threads": self.threads,
            "batch_threads": self.batch_threads,
            "capacity": self.capacity,
            "busy": self._inflight.busy,
            "ok": not self._inflight.closed,
        }

    def close(self) -> None:
        """Free the models: requests that arrive from now on get NotReady, running ones finish first."""
        if not self._inflight.close():
            return
        with self._free_lock:
            self._free.clear()  # every instance is back: none may be handed out once they are freed
        for llm in self._instances:
            llm.close()
        with self._vocab_lock:  # never while a tokenize runs
            self._vocab.close()
        self._instances.clear()
