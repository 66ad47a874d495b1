"""Prometheus metrics of the process (RAG, LLM, HTTP) and the ASGI middleware that records HTTP ones."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest

log = logging.getLogger(__name__)


# 1 ms .. 60 s: a keyword lookup takes about a millisecond, a long CPU generation about a minute.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
# Decode speed: a 135M model on a laptop CPU to a 7B model on an H100.
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)

QUERY_STAGES = frozenset(
    {"retrieval", "keyword", "semantic", "embed", "fusion", "rerank", "generation", "first_token", "total"}
)
TOKEN_KINDS = ("prompt", "completion")
UNMATCHED_ROUTE = "unmatched"
# Any token is a valid HTTP method to uvicorn; a label per junk method would be unbounded cardinality.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Every metric of the process, in a registry of its own (not the global one: tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # A served model's name -> (family, version, alias) for the per-model series (set by the
        # composition root once the registry exists; without it the name is the model label).
        self.model_labels: Callable[[str], tuple[str, str, str]] | None = None
        r = self.registry
        self.rag_queries = Counter(
            "rag_queries_total",
            "Knowledge queries answered, by retrieval mode and outcome.",
            ["mode", "outcome"],
            registry=r,
        )
        self.rag_query_latency = Histogram(
            "rag_query_latency_seconds",
            "Time spent per stage of a knowledge query.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rag_chunks_indexed = Counter(
            "rag_chunks_indexed_total",
            "Chunks written to the search indexes.",
            registry=r,
        )
        self.rag_chunks_reused = Counter(
            "rag_chunks_reused_total",
            "Chunks stored from an identical document's embeddings (moved or copied files) instead of embedding.",
            registry=r,
        )
        self.rag_ingestion_lag = Gauge(
            "rag_ingestion_lag_seconds",
            "Age of the oldest change of a source not yet searchable (0 when caught up).",
            ["source"],
            registry=r,
        )
        self.rag_secrets = Counter(
            "rag_secrets_total",
            "Credentials kept out of the index: sensitive files never read (where=file) and secrets "
            "redacted from text (where=chunk).",
            ["where", "kind"],
            registry=r,
        )
        self.llm_requests = Counter(
            "llm_requests_total",
            "Requests to a language model, by endpoint and outcome.",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "llm_tokens_total",
            "Tokens processed by a language model, prompt or completion.",
            ["model", "kind"],
            registry=r,
        )
        self.llm_ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time from request to the first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # A histogram, not a gauge: a gauge holds only the last request's speed, so a scrape every
        # 15 s samples one request out of many and cannot be averaged or aggregated; a histogram
        # gives the mean (sum/count) and percentiles over any window, across every request.
        self.llm_tokens_per_second = Histogram(
            "llm_tokens_per_second",
            "Decode speed of a generation: completion tokens per second after the first.",
            ["model"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=r,
        )
        self.llm_request_duration = Histogram(
            "llm_request_duration_seconds",
            "Whole duration of a language model request.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_queue_depth = Gauge(
            "llm_queue_depth",
            "Requests waiting for a generation slot.",
            ["model"],
            registry=r,
        )
        # Per model family, with the registry's version and alias (canary and stable side by side:
        # a running canary's candidate is alias "canary"); "" for a model the registry does not know.
        self.model_first_token = Histogram(
            "model_first_token_seconds",
            "Time to the first token, per model version and alias.",
            ["model", "version", "alias"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "model_request_seconds",
            "Whole duration of a generation, per model version and alias.",
            ["model", "version", "alias"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_tokens_per_second = Histogram(
            "model_tokens_per_second",
            "Decode speed of a generation, per model version and alias.",
            ["model", "version", "alias"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "model_errors_total",
            "Failed model requests, by kind: error, load, first_token, generation, timeout, circuit_open.",
            ["model", "version", "alias", "kind"],
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration until the last byte of the response.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "appliance_feedback_total",
            "Ratings of answers, by collection searched, model and rating (up or down).",
            ["collection", "model", "rating"],
            registry=r,
        )
        self.answer_traces = Counter(
            "appliance_answer_traces_total",
            "Answer traces: written, failed (the write raised) or dropped (the write queue was full).",
            ["outcome"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "appliance_drift_detected",
            "1 when the latest drift check of a collection found the signal drifted, else 0.",
            ["collection", "signal"],
            registry=r,
        )
        self.drift_pvalue = Gauge(
            "appliance_drift_pvalue",
            "p-value of the latest drift check's two-sample test of a signal.",
            ["collection", "signal"],
            registry=r,
        )
        self.drift_psi = Gauge(
            "appliance_drift_psi",
            "Population stability index of a scalar signal in the latest drift check.",
            ["collection", "signal"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "appliance_cache_lookups_total",
            "Cache lookups by cache (embedding, retrieval, answer) and outcome (hit, miss)",
            ["cache", "outcome"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "appliance_cache_bytes", "Bytes held by each in-memory cache", ["cache"], registry=r
        )
        self.duckdb_wal_set_aside = Gauge(
            "appliance_duckdb_wal_set_aside",
            "1 when the DuckDB WAL failed to replay at start and was moved aside (see /readyz), else 0.",
            registry=r,
        )
        # The network guard is process-wide (appliance/offline.py): its count is read at scrape time.
        r.register(_OutboundBlocked())

    # --- RAG -------------------------------------------------------------------------------------

    def observe_query(
        self, mode: str, stage_seconds: Mapping[str, float | None], outcome: str = "ok"
    ) -> None:
        """One knowledge query: its mode, the seconds each stage took (see QUERY_STAGES), its outcome."""
        unknown = set(stage_seconds) - QUERY_STAGES
        if unknown:
            raise ValueError(
                f"unknown query stages {sorted(unknown)}; expected some of {sorted(QUERY_STAGES)}"
            )
        self.rag_queries.labels(mode=mode, outcome=outcome).inc()
        for stage, seconds in stage_seconds.items():
            if seconds is not None and seconds >= 0:
                self.rag_query_latency.labels(stage=stage).observe(seconds)

    def add_chunks_indexed(self, n: int) -> None:
        if n > 0:
            self.rag_chunks_indexed.inc(n)

    def add_chunks_reused(self, n: int) -> None:
        if n > 0:
            self.rag_chunks_reused.inc(n)

    def set_ingestion_lag(self, source: str, seconds: float) -> None:
        """`source` is a source kind or a registered source name (bounded), never a file path."""
        self.rag_ingestion_lag.labels(source=source).set(max(0.0, seconds))

    def count_secret(self, where: str, kind: str, n: int = 1) -> None:
        """`kind` is a fixed pattern or detector name, never the secret or a file path."""
        if n > 0:
            self.rag_secrets.labels(where=where, kind=kind).inc(n)

    # --- LLM -------------------------------------------------------------------------------------

    def observe_llm(
        self,
        model: str,
        endpoint: str,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        total_s: float,
        outcome: str = "ok",
    ) -> None:
        """One model request. `endpoint` is e.g. "chat", "completions", "answer"; ttft_s None when not streamed."""
        self.llm_requests.labels(model=model, endpoint=endpoint, outcome=outcome).inc()
        if prompt_tokens > 0:
            self.llm_tokens.labels(model=model, kind="prompt").inc(prompt_tokens)
        if completion_tokens > 0:
            self.llm_tokens.labels(model=model, kind="completion").inc(completion_tokens)
        if total_s >= 0:
            self.llm_request_duration.labels(model=model, endpoint=endpoint).observe(total_s)
        if ttft_s is not None and ttft_s >= 0:
            self.llm_ttft.labels(model=model).observe(ttft_s)
        rate = decode_rate(completion_tokens, ttft_s, total_s)
        if rate is not None:
            self.llm_tokens_per_second.labels(model=model).observe(rate)
        self.observe_model(model, ttft_s, total_s, rate, outcome)

    def observe_model(
        self,
        model: str,
        ttft_s: float | None,
        total_s: float,
        rate: float | None,
        outcome: str = "ok",
        version: str = "",
        alias: str = "",
    ) -> None:
        """One generation in the per-model histograms (an error counts in model_errors_total)."""
        labels = self._model_labels(model, version, alias)
        if outcome == "error":
            self.model_errors.labels(**labels, kind="error").inc()
            return
        if ttft_s is not None and ttft_s >= 0:
            self.model_first_token.labels(**labels).observe(ttft_s)
        if total_s > 0:
            self.model_latency.labels(**labels).observe(total_s)
        if rate is not None:
            self.model_tokens_per_second.labels(**labels).observe(rate)

    def count_model_error(self, model: str, kind: str, version: str = "", alias: str = "") -> None:
        self.model_errors.labels(**self._model_labels(model, version, alias), kind=kind).inc()

    def _model_labels(self, served: str, version: str, alias: str) -> dict[str, str]:
        """A served name's labels: the family, its version and alias from `model_labels` when the
        caller gave none (a name the registry does not know keeps itself and empty labels)."""
        model = served
        if not (version or alias) and self.model_labels is not None:
            try:
                model, version, alias = self.model_labels(served)
            except Exception:  # noqa: BLE001 - a metric never fails a request
                log.exception("model labels could not be read", extra={"model": served})
        return {"model": model, "version": version, "alias": alias}

    def set_queue_depth(self, model: str, depth: int) -> None:
        self.llm_queue_depth.labels(model=model).set(depth)

    # --- feedback and drift ----------------------------------------------------------------------

    def count_feedback(self, collections: list[str], model: str, rating: str, n: int = 1) -> None:
        """One rating, counted under each collection its answer searched ("none" when it searched none)."""
        for collection in collections or ["none"]:
            self.feedback.labels(collection=collection, model=model, rating=rating).inc(n)

    def count_cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache_lookups.labels(cache=cache, outcome="hit" if hit else "miss").inc()

    def count_trace(self, outcome: str, n: int = 1) -> None:
        self.answer_traces.labels(outcome=outcome).inc(n)

    def set_drift(
        self, collection: str, signal: str, drifted: bool, p_value: float | None, psi: float | None
    ) -> None:
        self.drift_detected.labels(collection=collection, signal=signal).set(1.0 if drifted else 0.0)
        if p_value is not None:
            self.drift_pvalue.labels(collection=collection, signal=signal).set(p_value)
        if psi is not None:
            self.drift_psi.labels(collection=collection, signal=signal).set(psi)

    # --- HTTP ------------------------------------------------------------------------------------

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method.upper() if method.upper() in _KNOWN_METHODS else "OTHER"
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        self.http_request_duration.labels(method=method, route=route).observe(seconds)

    # --- exposition ------------------------------------------------------------------------------

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition payload and its content type; `accept` (the request's Accept header) may ask for OpenMetrics."""
        if accept:
            encoder, content_type = choose_encoder(accept)
            return encoder(self.registry), content_type
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _OutboundBlocked:
    """network_outbound_blocked_total: outbound connection attempts the network guard refused."""

    def collect(self):
        from appliance.offline import outbound_attempts

        yield CounterMetricFamily(
            "network_outbound_blocked",
            "Outbound connection attempts refused by the "
            "network guard (any is a finding: nothing should try).",
            value=outbound_attempts(),
        )


def decode_rate(completion_tokens: int, ttft_s: float | None, total_s: float) -> float | None:
    """Completion tokens per second of decoding, or None when it cannot be measured.

    With a first-token time, prefill is excluded: the tokens after the first over the time after
    the first, which is what users feel while text streams. Without it, tokens over the whole time.
    """
    if ttft_s is not None and completion_tokens > 1 and total_s > ttft_s:
        return (completion_tokens - 1) / (total_s - ttft_s)
    if ttft_s is None and completion_tokens > 0 and total_s > 0:
        return completion_tokens / total_s
    return None


class HttpMetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route template.

    It must wrap Litestar's router (see `instrument_app`), not sit in `Litestar(middleware=...)`:
    Litestar runs that middleware only after routing, so 404/405 answers and errors raised by
    earlier middleware (the 401 of the key check) never pass through it.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        status = 500  # if the app dies before answering, the server answers 500
        done = False

        def record() -> None:
            nonlocal done
            if done:
                return
            done = True
            # The router writes the template into the scope once it matched a route; a request it
            # could not route (404, 405) has none, and its raw path must not become a label.
            route = scope.get("path_template") or UNMATCHED_ROUTE  # type: ignore[typeddict-item]
            self.metrics.observe_http(scope["method"], route, status, self.clock() - start)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            # Record at the last body chunk, so a streamed body counts in full but background
            # tasks that run after the response do not.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record()

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()  # a client gone mid-stream, a file sent by extension, or an exception


def http_metrics_middleware(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware as a factory `app -> app`, the shape ASGI servers and Litestar both accept."""

    def factory(app: ASGIApp) -> ASGIApp:
        return HttpMetricsMiddleware(app, metrics)

    return factory


def instrument_app(
    app: Litestar, metrics: Metrics, clock: Callable[[], float] = time.perf_counter
) -> Litestar:
    """Wrap the app's router-level ASGI handler so every request, routed or not, is measured."""
    # `asgi_handler` is the router wrapped in the app's exception handler; Litestar.__call__ sends
    # every HTTP request through it, so wrapping it sees the final status of every response.
    app.asgi_handler = HttpMetricsMiddleware(app.asgi_handler, metrics, clock)
    return app


# --- readings taken at scrape time (memory, data disk, chat model state, catalogue) ----------------

CHAT_MODEL_STATES = ("loaded", "loading", "failed", "unloaded")
CATALOGUE_READ_EVERY_S = 30.0


def watch_process(
    metrics: Metrics,
    data_dir: Path,
    chat_state: Callable[[], str],
    collections: Callable[[], Iterable[tuple[str, int, int]]] | None = None,
) -> None:
    """Expose what is read rather than counted: this process's memory and CPU (process_*, from
    /proc), the data disk's size and free space, the chat model's state (`chat_state()` is one of
    CHAT_MODEL_STATES) and, given `collections()` as (name, documents, chunks), the catalogue's
    size per collection. The dashboard and the alert rules under ops/ use them."""
    ProcessCollector(registry=metrics.registry)
    metrics.registry.register(_Readings(data_dir, chat_state, collections))


class _Readings:
    """appliance_data_disk_*_bytes, appliance_chat_model_state and appliance_collection_*, read at
    each scrape; a reading that fails is left out, never failing the scrape."""

    def __init__(
        self,
        data_dir: Path,
        chat_state: Callable[[], str],
        collections: Callable[[], Iterable[tuple[str, int, int]]] | None,
    ) -> None:
        self.data_dir = data_dir
        self.chat_state = chat_state
        self.collections = collections
        self._catalogue: tuple[float, list[tuple[str, int, int]]] | None = None

    def _read_catalogue(self) -> list[tuple[str, int, int]]:
        # Counting chunks is a query over the whole catalogue, and the registry is read every few
        # seconds (the dashboard's sampler, stats.py), not only by Prometheus: one count a while.
        now = time.monotonic()
        if self._catalogue is None or now - self._catalogue[0] >= CATALOGUE_READ_EVERY_S:
            self._catalogue = (now, list(self.collections() if self.collections else ()))
        return self._catalogue[1]

    def collect(self):
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:  # a vanished mount must not fail the whole scrape
            usage = None
        if usage is not None:
            yield GaugeMetricFamily(
                "appliance_data_disk_total_bytes",
                "Size of the file system holding the data directory.",
                value=usage.total,
            )
            yield GaugeMetricFamily(
                "appliance_data_disk_free_bytes",
                "Space available to the appliance on the file system holding the data directory.",
                value=usage.free,
            )
        try:
            current = self.chat_state()
        except Exception:  # the scrape reports what it can
            current = "failed"
        state = GaugeMetricFamily(
            "appliance_chat_model_state", "1 for the chat model's current state, else 0.", labels=["state"]
        )
        for name in CHAT_MODEL_STATES:
            state.add_metric([name], 1.0 if name == current else 0.0)
        yield state
        documents = GaugeMetricFamily(
            "appliance_collection_documents",
            "Documents stored in a collection (counted at most every 30 s).",
            labels=["collection"],
        )
        chunks = GaugeMetricFamily(
            "appliance_collection_chunks",
            "Chunks stored in a collection (counted at most every 30 s).",
            labels=["collection"],
        )
        try:
            for name, n_documents, n_chunks in self._read_catalogue():
                documents.add_metric([name], n_documents)
                chunks.add_metric([name], n_chunks)
        except Exception:  # a catalogue that cannot answer (a full disk stopped DuckDB) leaves gaps
            pass
        else:
            yield documents
            yield chunks
