"""The serving side of models: loads the chat runtime, resolves model names, generates and embeds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from appliance.config import Settings
from appliance.errors import Conflict, InvalidInput, NotFound, NotReady
from appliance.models.embedder import Embedder, available_cpus
from appliance.models.runtime import ChatMessage, Completion, GenerationParams, LLMRuntime, TokenStream
from appliance.models.served import ServedModel
from appliance.observability.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"
EMBEDDING_ALIAS = "embedding"


class ModelService:
    """The chat model (loaded in the background, behind admission: a ServedModel) and the embedder."""

    def __init__(self, settings: Settings, embedder: Embedder, data_dir: Path, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.embedder = embedder
        self.models_dir = Path(settings.llm.models_dir) if settings.llm.models_dir else data_dir / "models"
        self._runtime: ServedModel | None = None
        self._error: str | None = None
        self._loaded = threading.Event()
        self._created = int(time.time())
        # Run-time load/unload (admin console): one change at a time, and "unloaded" is a state.
        self._switch_lock = threading.Lock()
        self._switching = False
        self._unloaded = False
        self._chat_name: str | None = None  # the chat model loaded, being loaded, or last tried
        if not settings.llm.load_at_start:
            # Nothing loads at start-up: the chat model is unloaded until an admin loads one.
            self._unloaded = True
            self._loaded.set()

    # -- loading ------------------------------------------------------------------------
    def load(self, name: str | None = None) -> None:
        """Load the chat model (blocking; the server calls it from a background thread).
        `name` overrides the configured model (a run-time switch from the admin API)."""
        from appliance.models.manifest import load_runtime, resolve_model

        llm = self.settings.llm
        try:
            wanted = name or llm.model or default_model_name(self.models_dir)
            self._chat_name = self._display_name(wanted)
            spec, path = resolve_model(wanted, self.models_dir)
            self._chat_name = spec.name
            runtime = ServedModel(
                load_runtime(
                    spec,
                    path,
                    context_length=llm.context_length or None,
                    threads=llm.threads or serving_threads(),
                    slots=llm.slots,
                    batch_threads=llm.batch_threads or None,
                ),
                max_queue=llm.max_queue,
            )
            queue = runtime.queue  # read at scrape time, so the gauge is never stale
            self.metrics.llm_queue_depth.labels(model=runtime.name).set_function(lambda: queue.depth)
            # Published only when complete, so no reader sees a half-set-up runtime.
            self._runtime = runtime
            log.info(
                "chat model loaded",
                extra={
                    "model": runtime.name,
                    "backend": runtime.backend,
                    "context_length": runtime.context_length,
                },
            )
        except Exception as exc:  # the server keeps serving search; chat says why it cannot
            self._error = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            log.error("chat model failed to load", extra={"error": self._error})
        finally:
            self._loaded.set()

    def serve(self, runtime: LLMRuntime) -> None:
        """Serve a runtime built elsewhere as the chat model, behind the same admission (the echo
        runtime of fast in-process tests; an embedding application's own runtime)."""
        served = ServedModel(runtime, max_queue=self.settings.llm.max_queue)
        queue = served.queue
        self.metrics.llm_queue_depth.labels(model=served.name).set_function(lambda: queue.depth)
        with self._switch_lock:
            self._runtime, self._error, self._unloaded = served, None, False
            self._chat_name = served.name
        self._loaded.set()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    # Each reader takes self._runtime into a local once: an unload from another thread may set
    # it to None between a check and a use.
    def runtime(self) -> ServedModel:
        if (runtime := self._runtime) is not None:
            return runtime
        if self._error:
            raise NotReady(f"the chat model is unavailable: {self._error}")
        if self._unloaded:
            raise NotReady("no chat model is loaded: an admin can load one (POST /api/v1/admin/models/load)")
        raise NotReady("the chat model is still loading; retry in a few seconds")

    def _state(self) -> str:
        if self._runtime is not None:
            return "loaded"
        if self._switching:
            return "loading"
        if self._unloaded:
            return "unloaded"
        return "failed" if self._error else "loading"

    def health(self) -> dict:
        if (runtime := self._runtime) is not None:
            return {"state": "loaded", **runtime.health()}
        state = self._state()
        return {"state": state, "error": self._error if state != "unloaded" else None}

    def close(self) -> None:
        if (runtime := self._runtime) is not None:
            runtime.close()

    # -- load / unload at run time ----------------------------------------------------------
    def available(self) -> list[dict]:
        """Chat models this server could load: built-ins and the models dir's manifest."""
        from appliance.models.manifest import list_models

        current = runtime.name.lower() if (runtime := self._runtime) is not None else None
        return [
            {
                "name": m.name,
                "size_bytes": m.size,
                "context_length": m.context_length,
                "source": m.source,
                "description": m.description,
                "capabilities": list(m.capabilities),
                "loaded": m.name.lower() == current,
            }
            for m in list_models(self.models_dir)
        ]

    def unload(self) -> dict:
        """Free the chat model; requests already holding a slot finish first."""
        with self._switch_lock:
            if self._switching:
                raise Conflict("a chat model is being loaded; wait until it is done")
            runtime, self._runtime = self._runtime, None
            self._unloaded, self._error = True, None
        if runtime is not None:
            runtime.close()
            log.info("chat model unloaded", extra={"model": runtime.name})
        return self.health()

    def start_load(self, name: str | None) -> dict:
        """Replace the chat model by `name` (the configured one when None), loading in the background;
        `health()` says when it is ready or why it failed."""
        from appliance.models.manifest import list_models, model_path

        if name and not (
            name.lower() in {m.name.lower() for m in list_models(self.models_dir)}
            or (name.lower().endswith(".gguf") and model_path(name).is_file())
        ):
            raise NotFound(f"unknown model {name!r}: see GET /api/v1/admin/models")
        listed = self._display_name(name or self.settings.llm.model or default_model_name(self.models_dir))
        with self._switch_lock:
            if self._switching:
                raise Conflict("a chat model is already being loaded")
            if not self._loaded.is_set():
                raise Conflict("the chat model is still loading at start-up; wait until it is done")
            self._switching = True
            old, self._runtime = self._runtime, None
            self._error = None
            self._chat_name = listed  # /v1/models lists the new model, loading, from now on
        threading.Thread(
            target=self._switch_to, args=(old, name), name="chat-model-switch", daemon=True
        ).start()
        return self.health()

    def _switch_to(self, old: ServedModel | None, name: str | None) -> None:
        try:
            if old is not None:
                old.close()
            self.load(name)
        finally:
            with self._switch_lock:
                self._switching = False
                self._unloaded = self._runtime is None and self._error is None

    # -- names --------------------------------------------------------------------------
    def list_models(self) -> list[dict]:
        """OpenAI's model objects, with our extra fields. The chat model is listed whatever its `state`
        (loading, loaded, failed, unloaded), so a client sees it as soon as the server is ready."""
        out = []
        capabilities = ["chat", "completion"]
        if (runtime := self._runtime) is not None:
            name = runtime.name
            chat = {"state": "loaded", "backend": runtime.backend, "context_length": runtime.context_length}
            if runtime.constrained_decoding:
                capabilities += ["tools", "json_output"]
                # "native": tools go through the model's own chat template; "generic": through the
                # appliance's prompt format (README, "Tools and JSON output").
                chat["tool_format"] = "native" if runtime.native_tools else "generic"
        else:
            name = self._chat_model_name()
            chat = {"state": self._state(), "error": self._error}
        for ident in (name, DEFAULT_ALIAS):
            out.append(
                {
                    "id": ident,
                    "object": "model",
                    "created": self._created,
                    "owned_by": "appliance",
                    **chat,
                    "capabilities": capabilities,
                }
            )
        for ident in (self.embedder.name, EMBEDDING_ALIAS):
            out.append(
                {
                    "id": ident,
                    "object": "model",
                    "created": self._created,
                    "owned_by": "appliance",
                    "dimensions": self.embedder.dimensions,
                    "capabilities": ["embedding"],
                }
            )
        return out

    def _chat_model_name(self) -> str:
        """The chat model being loaded or last tried, else the one start-up loads (remembered: finding
        the default imports its packages)."""
        if self._chat_name is None:
            self._chat_name = self._display_name(
                self.settings.llm.model or default_model_name(self.models_dir)
            )
        return self._chat_name

    def _display_name(self, wanted: str) -> str:
        """The name a model will be listed under, known before it loads: the manifest's spelling, or a
        GGUF file's stem (as resolve_model names it)."""
        from appliance.models.manifest import list_models

        try:
            specs = list_models(self.models_dir)
        except (InvalidInput, Conflict):  # a broken manifest.toml: the load will say so
            specs = []
        match = next((m.name for m in specs if m.name.lower() == wanted.strip().lower()), None)
        if match is not None:
            return match
        try:
            path = Path(wanted).expanduser()
        except (RuntimeError, KeyError):  # `~nosuchuser/...`: not a path, so the name as given
            return wanted
        return path.stem if path.suffix.lower() == ".gguf" else wanted

    def runtime_for(self, model: str) -> ServedModel:
        if model.lower() in (self.embedder.name.lower(), EMBEDDING_ALIAS):
            raise InvalidInput(f"model {model!r} is an embedding model; use /v1/embeddings", param="model")
        runtime = self.runtime()
        if model.lower() not in (runtime.name.lower(), DEFAULT_ALIAS):
            raise NotFound(
                f"the model {model!r} does not exist; see GET /v1/models",
                param="model",
                code="model_not_found",
            )
        return runtime

    # -- work ---------------------------------------------------------------------------
    def prepare_chat(self, model: str, messages: Sequence[ChatMessage]) -> tuple[ServedModel, str]:
        self.check_messages(messages)
        runtime = self.runtime_for(model)
        return runtime, runtime.render_chat(messages)

    @staticmethod
    def check_messages(messages: Sequence[ChatMessage]) -> None:
        if not any(m.role == "user" for m in messages):
            raise InvalidInput("messages must contain at least one user message", param="messages")
        calls = {c.id for m in messages for c in m.tool_calls}
        for i, m in enumerate(messages):
            if m.role == "tool" and m.tool_call_id not in calls:
                raise InvalidInput(
                    f"messages[{i}] answers tool call {m.tool_call_id!r}, which no assistant message made",
                    param=f"messages[{i}].tool_call_id",
                )

    def generate(
        self, runtime: ServedModel, prompt: str, params: GenerationParams, cancel: threading.Event | None
    ) -> Completion:
        self._check_max_tokens(runtime, params)
        return runtime.generate(prompt, params, cancel)

    def open_stream(
        self,
        runtime: ServedModel,
        prompt: str,
        params: GenerationParams,
        cancel: threading.Event | None,
        on_position: Callable[[int], None] | None = None,
    ) -> TokenStream:
        """Take a slot (waiting in the queue, hearing the place through `on_position`), then the stream."""
        self._check_max_tokens(runtime, params)
        return runtime.stream(prompt, params, cancel, on_position)

    @staticmethod
    def _check_max_tokens(runtime: ServedModel, params: GenerationParams) -> None:
        # Beyond the whole context no prompt could ever fit: that is a mistake, not a wish to clamp.
        if params.max_tokens is not None and params.max_tokens >= runtime.context_length:
            raise InvalidInput(
                f"max_tokens={params.max_tokens} cannot fit: the model's context is {runtime.context_length} tokens "
                "including the prompt",
                param="max_tokens",
                code="context_length_exceeded",
            )

    def embed(self, model: str, inputs: Sequence[str], dimensions: int | None) -> tuple[str, np.ndarray, int]:
        if model.lower() not in (self.embedder.name.lower(), EMBEDDING_ALIAS):
            raise NotFound(
                f"the embedding model {model!r} does not exist; see GET /v1/models",
                param="model",
                code="model_not_found",
            )
        if dimensions is not None and dimensions != self.embedder.dimensions:
            raise InvalidInput(
                f"dimensions must be {self.embedder.dimensions} for {self.embedder.name}", param="dimensions"
            )
        if len(inputs) > 2048:
            raise InvalidInput("at most 2048 inputs per request", param="input")
        tokens = sum(self.embedder.count_tokens(t) for t in inputs)
        return self.embedder.name, self.embedder.embed_documents(list(inputs)), tokens


def serving_threads() -> int:
    """All cores but one. llama.cpp's threads wait for each other at every step, so one of them
    preempted by the server's own work (HTTP, SSE, jobs) stalls them all: measured on 2 cores,
    generation through the API ran at 13.6 tokens/s with 2 threads and 22.6 with 1
    (scripts/bench/llm.py)."""
    return max(1, available_cpus() - 1)


def default_model_name(models_dir: Path) -> str:
    """The embedded default: the Qwen coder when its parts are installed (`make run`), else SmolLM2."""
    from appliance.models.manifest import QWEN_CODER, SMOLLM2, qwen_part_paths

    if (models_dir / QWEN_CODER.file).is_file():
        return QWEN_CODER.name
    try:
        qwen_part_paths()
    except NotReady:
        return SMOLLM2.name
    return QWEN_CODER.name
