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
from appliance.models.breaker import Breakers
from appliance.models.embedder import Embedder
from appliance.models.fallback import Build, Opened, Timeouts, open_first
from appliance.models.loading import default_model_name, installed_models, load_configured, need_mb
from appliance.models.manifest import ModelSpec
from appliance.models.pool import ModelPool, Resolve
from appliance.models.remote import RemoteModels, RemoteTimeouts
from appliance.models.router import AUTO, AutoRouter, RouteDecision
from appliance.models.runtime import ChatMessage, Completion, GenerationParams, LLMRuntime, TokenStream
from appliance.models.served import ServedModel
from appliance.models.sizing import default_budget_mb
from appliance.observability.metrics import Metrics

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"
EMBEDDING_ALIAS = "embedding"


class ModelService:
    """The chat models and the embedder. The default chat model (loaded in the background at start,
    switched by an admin) is pinned in a pool where other models load on demand within the memory
    budget (appliance/models/pool.py); `model: auto` is routed (appliance/models/router.py)."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        data_dir: Path,
        metrics: Metrics,
        resolve: Resolve | None = None,
        catalogue: Callable[[], list[ModelSpec]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.embedder = embedder
        self.models_dir = Path(settings.llm.models_dir) if settings.llm.models_dir else data_dir / "models"
        llm = settings.llm
        self.pool = ModelPool(
            llm.memory_budget_mb or default_budget_mb(),
            resolve or self.resolve_in_manifest,
            self._load_runtime,
            # A remote model takes no memory here: the pool's budget never counts it.
            lambda spec, path: 0.0 if spec.remote is not None else need_mb(self.settings.llm, spec, path),
            max_queue=llm.max_queue,
        )
        self.pool.on_loaded = self._watch_queue
        self.remotes = RemoteModels(
            settings.network,
            RemoteTimeouts(
                connect_s=llm.remote_connect_timeout_s,
                read_s=llm.remote_read_timeout_s or llm.first_token_timeout_s,
            ),
        )
        self.breakers = Breakers(llm.breaker_failures, llm.breaker_window_s, llm.breaker_cooldown_s)
        self.router = AutoRouter(
            self.embedder,
            catalogue or (lambda: installed_models(self.models_dir)),
            self.pool,
            routes_file=Path(llm.routes_file) if llm.routes_file else None,
        )
        self._runtime: ServedModel | None = None
        self._error: str | None = None
        self._loaded = threading.Event()
        self._created = int(time.time())
        # Run-time load/unload (admin console): one change at a time, and "unloaded" is a state.
        self._switch_lock = threading.Lock()
        self._switching = False
        self._knows: Callable[[str], bool] | None = None  # use_resolver: names another resolver knows
        self._unloaded = False
        self._chat_name: str | None = None  # the chat model loaded, being loaded, or last tried
        if not settings.llm.load_at_start:
            # Nothing loads at start-up: the chat model is unloaded until an admin loads one.
            self._unloaded = True
            self._loaded.set()

    # -- loading ------------------------------------------------------------------------
    def load(self, name: str | None = None) -> None:
        """Load the chat model (blocking; the server calls it from a background thread).
        `name` overrides the configured model (a run-time switch from the admin API). It is pinned in
        the pool: never evicted."""
        llm = self.settings.llm
        spec = None
        try:
            wanted = name or llm.model or default_model_name(self.models_dir)
            self._chat_name = self._display_name(wanted)
            spec, path = self.pool.resolve(wanted)
            self._chat_name = spec.name
            runtime = self.pool.get_spec(spec, path, wait=True, pinned=True)
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
            if spec is not None:
                self.pool.remove(spec.name)  # a failed default is reported as the default, not listed apart
            log.error("chat model failed to load", extra={"error": self._error})
        finally:
            self._loaded.set()
        for extra in llm.pinned:  # the other pinned models load after the default, in the background
            try:
                self.preload(extra, pinned=True)
            except Exception as exc:  # the default serves; the pinned model says why it does not
                error = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
                log.error("pinned model could not load", extra={"model": extra, "error": error})

    def _load_runtime(self, spec: ModelSpec, path: Path) -> LLMRuntime:
        """A pool load: a remote model's client (nothing is loaded here), else the weights."""
        if spec.remote is not None:
            return self.remotes.open(spec.name, spec.remote, spec.context_length)
        return load_configured(self.settings.llm, spec, path)

    def preload(self, name: str, pinned: bool = False) -> dict:
        """Start loading `name` into the pool (pinned: never evicted) without waiting for it."""
        spec, path = self.pool.resolve(name)
        try:
            self.pool.get_spec(spec, path, wait=False, pinned=pinned)
        except NotReady as exc:
            if exc.extra.get("code") != "model_loading":
                raise
        return self.pool.state_of(spec.name) or {}

    def use_resolver(
        self,
        resolve: Resolve,
        catalogue: Callable[[], list[ModelSpec]] | None = None,
        knows: Callable[[str], bool] | None = None,
    ) -> None:
        """Resolve names with `resolve` from now on (the registry's: `name@version`, `name@alias`,
        aliases); `catalogue` lists the models `auto` may route to (their capability tags); `knows`
        says cheaply whether a name is one `resolve` would look up (a load request for a name
        nobody knows is a 404 at once, not a failed load later)."""
        self.pool.resolve = resolve
        self._knows = knows
        if catalogue is not None:
            self.router.catalogue = catalogue

    def known_models(self) -> list[ModelSpec]:
        """The built-ins and the models dir's manifest."""
        from appliance.models.manifest import list_models

        return list_models(self.models_dir)

    def resolve_in_manifest(self, name: str) -> tuple[ModelSpec, Path]:
        from appliance.models.manifest import resolve_model

        return resolve_model(name, self.models_dir)

    def _watch_queue(self, served: ServedModel) -> None:
        queue = served.queue  # read at scrape time, so the gauge is never stale
        self.metrics.llm_queue_depth.labels(model=served.name).set_function(lambda: queue.depth)

    def serve(self, runtime: LLMRuntime, need_mb: float = 0.0) -> None:
        """Serve a runtime built elsewhere as the chat model, behind the same admission (the echo
        runtime of fast in-process tests; an embedding application's own runtime)."""
        served = self.pool.adopt(runtime, need_mb=need_mb, pinned=True)
        self._watch_queue(served)
        with self._switch_lock:
            old = self._runtime
            self._runtime, self._error, self._unloaded = served, None, False
            self._chat_name = served.name
        if old is not None and old is not served and old.name.lower() != served.name.lower():
            self.pool.remove(old.name)
        self._loaded.set()

    def serve_also(
        self,
        runtime: LLMRuntime,
        need_mb: float = 0.0,
        pinned: bool = False,
        capabilities: tuple[str, ...] = ("chat", "completion"),
    ) -> ServedModel:
        """Another runtime built elsewhere, resident beside the default (tests of the pool and router)."""
        served = self.pool.adopt(runtime, need_mb=need_mb, pinned=pinned, capabilities=capabilities)
        self._watch_queue(served)
        return served

    def serves_default(self, name: str) -> bool:
        """Whether `name` is the default chat model (held apart from the pool's names, switched by
        the `default` alias)."""
        current = self._runtime.name if self._runtime is not None else self._chat_name
        return current is not None and current.lower() == name.strip().lower()

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
        raise NotReady(
            "the chat model is still loading; retry in a few seconds", code="model_loading", retry_after=5
        )

    def _state(self) -> str:
        if self._runtime is not None:
            return "loaded"
        if self._switching:
            return "loading"
        if self._unloaded:
            return "unloaded"
        return "failed" if self._error else "loading"

    def health(self) -> dict:
        """The default chat model's health, with the pool (every resident model, its state and
        memory, the budget) and the circuit breakers that are not closed."""
        extra = {"pool": self.pool.snapshot(), "breakers": self.breakers.snapshot()}
        if (runtime := self._runtime) is not None:
            return {"state": "loaded", **runtime.health(), **extra}
        state = self._state()
        return {"state": state, "error": self._error if state != "unloaded" else None, **extra}

    def close(self) -> None:
        self.pool.close()

    # -- load / unload at run time ----------------------------------------------------------
    def available(self) -> list[dict]:
        """Chat models this server could load: built-ins and the models dir's manifest."""
        from appliance.models.manifest import list_models

        current = runtime.name.lower() if (runtime := self._runtime) is not None else None
        out = []
        for m in list_models(self.models_dir):
            resident = self.pool.state_of(m.name)
            out.append(
                {
                    "name": m.name,
                    "size_bytes": m.size,
                    "context_length": m.context_length,
                    "source": m.source,
                    "description": m.description,
                    "capabilities": list(m.capabilities),
                    "loaded": m.name.lower() == current,
                    "resident": resident["state"] if resident else None,
                }
            )
        return out

    def unload(self) -> dict:
        """Free the chat model; requests already holding a slot finish first."""
        with self._switch_lock:
            if self._switching:
                raise Conflict("a chat model is being loaded; wait until it is done")
            runtime, self._runtime = self._runtime, None
            self._unloaded, self._error = True, None
        if runtime is not None:
            self.pool.remove(runtime.name)
            log.info("chat model unloaded", extra={"model": runtime.name})
        return self.health()

    def start_load(self, name: str | None) -> dict:
        """Replace the chat model by `name` (the configured one when None), loading in the background;
        `health()` says when it is ready or why it failed."""
        from appliance.models.manifest import list_models, model_path

        if name and not (
            name.lower() in {m.name.lower() for m in list_models(self.models_dir)}
            or (name.lower().endswith(".gguf") and model_path(name).is_file())
            or (self._knows is not None and self._knows(name))  # the registry's names
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
                self.pool.remove(old.name)
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
        default_state = out[-1]["state"]
        out.append(
            {
                "id": AUTO,
                "object": "model",
                "created": self._created,
                "owned_by": "appliance",
                "state": default_state,
                "capabilities": ["chat", "completion"],
                "routes": self.router.route_names(),
            }
        )
        default_key = name.lower()
        for resident in self.pool.snapshot()["models"]:
            if resident["name"].lower() == default_key:
                continue
            out.append(
                {
                    "id": resident["name"],
                    "object": "model",
                    "created": self._created,
                    "owned_by": "appliance",
                    **{k: resident[k] for k in ("state", "pinned", "estimated_mb", "resident_mb", "error")},
                    "capabilities": sorted({"chat", "completion", *resident["capabilities"]}),
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

    def runtime_for(
        self,
        model: str,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> ServedModel:
        """The loaded model a request names: the default (`default`, `auto` without a text to route,
        or its name), or another model the resolver knows, loaded into the pool first if need be:
        waiting for it (`on_position` hears the place among its waiters) or, with llm.cold_start =
        "reject", a 503 `model_loading` with Retry-After."""
        wanted = model.strip()
        key = wanted.lower()
        if key in (self.embedder.name.lower(), EMBEDDING_ALIAS):
            raise InvalidInput(f"model {model!r} is an embedding model; use /v1/embeddings", param="model")
        if key in (DEFAULT_ALIAS, AUTO) or key == (self._chat_name or "").lower():
            return self.runtime()
        if (runtime := self._runtime) is not None and key == runtime.name.lower():
            return runtime
        if "/" in wanted or "\\" in wanted or key.endswith(".gguf"):
            # Any key may name a model; only an admin decides which files are models.
            raise NotFound(
                f"the model {model!r} does not exist: models are named, not given by path; see GET /v1/models",
                param="model",
                code="model_not_found",
            )
        if (resident := self.pool.use(wanted)) is not None:
            return resident
        try:
            spec, path = self.pool.resolve(wanted)
        except NotFound:
            raise NotFound(
                f"the model {model!r} does not exist; see GET /v1/models",
                param="model",
                code="model_not_found",
            ) from None
        if spec.name.lower() == (self._chat_name or "").lower():
            return self.runtime()
        llm = self.settings.llm
        return self.pool.get_spec(
            spec,
            path,
            wait=llm.cold_start == "wait",
            timeout_s=llm.load_timeout_s,
            on_position=on_position,
            cancel=cancel,
        )

    # -- routing -------------------------------------------------------------------------------
    def choose(self, model: str, text: str = "", tools: bool = False) -> RouteDecision:
        """Which model serves a request and why: `auto` is routed on `text` (the last user message)
        and on whether it offers `tools`; any other name is served as named."""
        return self.router.decide(model, text, tools, default=self._default_name())

    def runtime_for_route(
        self, decision: RouteDecision, on_position: Callable[[int], None] | None = None
    ) -> tuple[ServedModel, RouteDecision]:
        """The first of the decision's models whose breaker is not open and that loads (the knowledge
        answers' path: they fall back before generating); the decision as served."""
        from dataclasses import replace

        from appliance.models.breaker import OPEN

        candidates = decision.candidates or (decision.model,)
        tried: list[str] = []
        for i, name in enumerate(candidates):
            last = i == len(candidates) - 1
            if not last and self.breakers(name).state == OPEN:
                tried.append(f"{name} (circuit open)")
                continue
            try:
                served = self.runtime_for(name, on_position=on_position)
            except NotReady as exc:
                if last:
                    raise
                tried.append(f"{name} ({exc.detail})")
                continue
            if not tried:
                return served, decision
            return served, replace(decision, model=served.name, fallback_from=tuple(tried))
        raise AssertionError("a decision has at least one candidate")

    def _default_name(self) -> str:
        runtime = self._runtime
        return runtime.name if runtime is not None else self._chat_model_name()

    def open_routed(
        self,
        decision: RouteDecision,
        build: Build,
        cancel: threading.Event | None = None,
        on_position: Callable[[int], None] | None = None,
    ) -> Opened:
        """Open the generation on the decision's first healthy candidate (appliance/models/fallback.py):
        its prompt and parameters from `build(model)`, its first token already made; the returned
        decision says which model served and which failed before it."""
        llm = self.settings.llm

        def checked(served: ServedModel) -> tuple[str, object, GenerationParams]:
            prompt, extra, params = build(served)
            self._check_max_tokens(served, params)
            return prompt, extra, params

        return open_first(
            decision,
            lambda name, cancel_, on_position_: self.runtime_for(name, cancel_, on_position_),
            checked,
            self.breakers,
            Timeouts(llm.first_token_timeout_s or None, llm.total_timeout_s or None),
            cancel,
            on_position,
            on_error=lambda name, kind: self.metrics.count_model_error(name, kind),
        )

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
