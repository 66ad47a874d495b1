"""Typed settings: a TOML file plus APPLIANCE_* environment overrides, validated once at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from appliance.errors import InvalidInput

ENV_PREFIX = "APPLIANCE_"
QDRANT_COLLECTION_RE = re.compile(r"\A[A-Za-z0-9_-]{1,255}\Z")
SQL_VIEW_RE = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    # TLS is served whenever both are set (PEM files); beyond loopback it is required.
    tls_cert: str = ""
    tls_key: str = ""
    # Listen beyond loopback without TLS: only on purpose, e.g. behind a TLS-terminating proxy.
    allow_plaintext: bool = False
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs); empty: nobody's.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # A connection must deliver a request's line and headers within this long of opening (or of
    # its previous response), else it is closed: slow clients (slowloris) cannot hold sockets.
    header_timeout_seconds: float = 10.0
    max_headers: int = 100  # request header fields; more is answered 431
    max_header_bytes: int = 16 * 1024  # request line and headers together; more is refused
    timeout_keep_alive_seconds: int = 5  # an idle kept-alive connection is closed after this
    # On stop, in-flight requests get this long to finish before connections are closed.
    graceful_shutdown_seconds: float = 10.0

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def loopback(self) -> bool:
        """Whether the listen address is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: may resolve to anything


class LimitSettings(msgspec.Struct, forbid_unknown_fields=True):
    max_body_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 32 * 1024 * 1024
    max_batch_documents: int = 1000
    max_query_chars: int = 2000
    max_top_k: int = 100
    wait_timeout_seconds: float = 300.0
    # Requests with a missing or bad API key, per client address and minute: past this the client
    # is answered 429 (Retry-After) whatever key it sends, and its refusals are counted into one
    # audit row per minute instead of one row each.
    failed_auth_per_minute: int = 30
    # Nesting of JSON in request bodies and JSON fields (metadata, filters, content parts, schemas).
    max_json_depth: int = 64


class EmbeddingSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Empty means the embedded default (all-MiniLM-L6-v2 shipped as a Python package).
    model_dir: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = 32
    threads: int = 0  # 0: all cores for corpus batches; queries always use one thread


class ChunkingSettings(msgspec.Struct, forbid_unknown_fields=True):
    size_tokens: int = 200
    overlap_tokens: int = 32
    max_seconds: float = 120.0  # chunking time per document; past it the document fails


class QdrantSettings(msgspec.Struct, forbid_unknown_fields=True):
    """The Qdrant vector backend (index.vector_backend = "qdrant"); needs the `qdrant` extra."""

    # A Qdrant cluster, e.g. "https://qdrant.internal:6333" (its host must be in network.allow).
    # Empty: Qdrant's embedded local mode under <data dir>/index/qdrant, for trying the backend
    # and for tests; it scans every point per search, so it is no substitute for USearch at scale.
    url: str = ""
    api_key: str = ""
    # The one Qdrant collection holding every appliance collection's vectors; this appliance owns it.
    collection: str = "appliance_chunks"
    timeout_seconds: float = 10.0
    # At start-up, how long the reconcile waits for the cluster's exact count to reach DuckDB's
    # before it rebuilds (replicas may trail the writes they acknowledged).
    count_settle_seconds: float = 30.0


class IndexSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Where vectors live (appliance/index/backends.py): "usearch" in the data dir (the default),
    # "memory" (exact, for small collections), or "qdrant" (see [index.qdrant]). Switching
    # rebuilds the new backend from DuckDB at the next start.
    vector_backend: Literal["usearch", "memory", "qdrant"] = "usearch"
    qdrant: QdrantSettings = msgspec.field(default_factory=QdrantSettings)
    vector_dtype: Literal["i8", "f16"] = "i8"
    # USearch searches a collection of at most this many vectors exactly (brute force, exact
    # recall, ~1.6 ms at 50,000); larger ones through their HNSW graph (approximate).
    exact_search_max: int = 50_000
    # The vector index is rewritten whole on save; between saves the outbox covers it.
    vector_save_interval_seconds: float = 5.0


class RetrievalSettings(msgspec.Struct, forbid_unknown_fields=True):
    default_mode: Literal["keyword", "semantic", "hybrid"] = "hybrid"
    # weighted: min-max scores; zscore / dbsf: standard scores / mean ± 3 sd; rrf: ranks only.
    # A collection's calibration (`appliance retrieval calibrate`) overrides these for it.
    # The default, z-score at 0.9, was chosen on three corpora (scripts/bench/fusion.py).
    fusion: Literal["weighted", "zscore", "dbsf", "rrf"] = "zscore"
    semantic_weight: float = 0.9  # the keyword list weighs 1 - this
    rrf_k: int = 60
    candidates: int = 100  # per retriever, before fusion
    reranker: Literal["none", "cross-encoder", "bi-encoder"] = "none"
    # Empty with "bi-encoder": the packaged all-mpnet-base-v2 (installed by `make`), assembled on first use.
    reranker_model_dir: str = ""
    rerank_candidates: int = 30
    # Query routing (retrieve/routing.py): lookups (identifiers, quoted phrases, error codes, file
    # names, one or two words) take lookup_semantic_weight, natural-language questions
    # question_semantic_weight; other queries keep semantic_weight.
    routing: bool = False
    lookup_semantic_weight: float = 0.5
    question_semantic_weight: float = 0.9


class CacheSettings(msgspec.Struct, forbid_unknown_fields=True):
    """In-memory caches, each bounded and invalidated exactly when what it answers from changes
    (retrieval: the collections' content; answers: the exact prompt, sources and model load);
    a request bypasses them with `cache: false`."""

    enabled: bool = True
    embedding_mb: int = 8  # query embeddings (384 floats: about 5,000 queries)
    retrieval_mb: int = 64  # search results, by query, collections, mode, top_k, filters
    answer_mb: int = 16  # cited answers, by prompt, sources, generation settings and model


class LLMSettings(msgspec.Struct, forbid_unknown_fields=True):
    # A manifest name ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct") or a GGUF path.
    # Empty: the embedded default (Qwen2.5-Coder-1.5B when installed, else SmolLM2-135M).
    model: str = ""
    models_dir: str = ""  # default <data dir>/models
    context_length: int = 0  # 0: the model's own (capped at 8192 to bound memory)
    threads: int = 0  # 0: all cores but one (the server needs one; see models/service.py)
    batch_threads: int = 0  # prompt processing; 0: all cores (compute-bound, it scales with them)
    slots: int = 1  # concurrent generations (llama.cpp)
    max_queue: int = 8  # requests waiting for a slot before 429
    load_at_start: bool = True
    # Several chat models resident at once (appliance/models/pool.py), within this budget of memory;
    # 0: half the machine's RAM (or its cgroup limit). Idle unpinned models leave by LRU.
    memory_budget_mb: int = 0
    pinned: list[str] = []  # models never evicted, besides the configured default (always pinned)
    # A request for a model not resident: "wait" for its load (streams hear their place), or
    # "reject" at once with 503 `model_loading` and Retry-After while it loads.
    cold_start: Literal["wait", "reject"] = "wait"
    load_timeout_s: float = 300.0  # waiting for a cold load, before 503 model_loading (or a fallback)
    first_token_timeout_s: float = 120.0  # from the slot to the first token, before a fallback
    total_timeout_s: float = 0.0  # a whole generation; 0: no limit
    # A remote model (backend "remote"): connecting to its server, then waiting for its headers and
    # each chunk (0: first_token_timeout_s), before the request fails and the breaker hears it.
    remote_connect_timeout_s: float = 10.0
    remote_read_timeout_s: float = 0.0
    # Per-model circuit breaker: this many failures within the window open it for the cooldown.
    breaker_failures: int = 3
    breaker_window_s: float = 60.0
    breaker_cooldown_s: float = 30.0
    routes_file: str = ""  # routes of `model: auto`; empty: the packaged appliance/models/routes.toml


class AnswerSettings(msgspec.Struct, forbid_unknown_fields=True):
    top_k: int = 6  # chunks given to the model
    context_tokens: int = 0  # the sources' share of the prompt; 0: whatever the window leaves
    max_answer_tokens: int = 512
    temperature: float = 0.1
    # Below this cosine similarity of the best chunk, the documents are taken not to cover the
    # question: the answer says so without asking the model to improvise.
    min_relevance: float = 0.2
    # Each sentence of an answer is checked against the sources (appliance/generate/support.py):
    # a wrong citation is re-attributed, an uncited claim gets the source that supports it, and a
    # claim no source supports is flagged ("flag") or dropped from the text ("remove").
    verify_citations: Literal["none", "lexical", "embedding", "combined"] = "lexical"
    unsupported_sentences: Literal["flag", "remove"] = "flag"
    # An answer none of whose claims any source supports becomes the honest "The documents do not
    # say." (the checked sentences stay in the answer's `sentences` for the reader and the trace).
    refuse_unsupported: bool = False


class ObservabilitySettings(msgspec.Struct, forbid_unknown_fields=True):
    # Lets a Prometheus on the same host scrape /metrics without the admin key. Keep it off
    # behind a local reverse proxy: every client would then look like loopback.
    metrics_on_localhost_without_key: bool = False
    # Record prompt and query text in the audit log (off: who did what, never what they asked).
    audit_record_text: bool = False


class JobSettings(msgspec.Struct, forbid_unknown_fields=True):
    workers: int = 2
    lease_seconds: float = 60.0
    # On stop, workers finish the group of documents in hand for at most this long (the unit's
    # TimeoutStopSec is 60 s); what is left stays pending and resumes at the next start.
    shutdown_timeout_seconds: float = 30.0


class ParsingSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Parsers run in child processes with these limits, so a PDF bomb or a parser hang costs
    # one document, not the server. `sandbox = false` parses in-process (debugging only).
    sandbox: bool = True
    memory_mb: int = 1024  # address-space limit of a parser process
    cpu_seconds: float = 30.0  # CPU time per document
    wall_seconds: float = 60.0  # wall-clock time per document
    max_output_chars: int = 20_000_000  # extracted text per document
    processes: int = 0  # 0: one per job worker
    max_pages: int = 5000  # pages of a PDF; a longer one is refused before any page is read
    max_blocks: int = 250_000  # paragraphs, table runs and other blocks a document may yield


class HygieneSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Credentials found in text (private keys, cloud keys, tokens) are replaced by [REDACTED:kind].
    redact_secrets: bool = True
    # Extra file-name globs never indexed, on top of the built-in list (.env, *.pem, id_rsa*, ...).
    sensitive_patterns: list[str] = msgspec.field(default_factory=list)


class DropFolderSettings(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    path: str = ""  # default <data dir>/inbox; each sub-folder is a collection
    watch: bool = True  # react to file-system events; the periodic scan runs regardless
    settle_seconds: float = 2.0  # size and mtime must hold this long before a file is taken
    scan_interval_seconds: float = 60.0  # full scan, the safety net under the watcher


class SourceSettings(msgspec.Struct, forbid_unknown_fields=True):
    git_binary: str = "git"
    git_timeout_seconds: float = 600.0


class WebhookSettings(msgspec.Struct, forbid_unknown_fields=True):
    # The shared secret configured on the GitHub webhook; empty (and no file) disables the route.
    github_secret: str = ""
    github_secret_file: str = ""
    # Issues and pull requests of a repository no git source maps go to this collection.
    github_collection: str = "github"
    max_body_bytes: int = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
    # Deliveries whose bodies are read at once (each up to max_body_bytes); more get 503.
    max_concurrent_bodies: int = 4


class NetworkSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Refuse (and log) any outbound socket to a non-loopback address from inside the process.
    guard: bool = True
    # Addresses or CIDRs inside the air gap the process may reach (e.g. an internal git remote).
    allow: list[str] = msgspec.field(default_factory=list)


class FeedbackSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Every answer's trace (question, retrieval, answer, timings, query embedding) is kept this
    # long, then pruned with its ratings; 0 keeps no traces at all (answers still get an id).
    trace_retention_days: int = 30
    # Traces wait here to be written after their answer; past it they are dropped (and counted),
    # never the answer slowed down.
    queue_size: int = 1000
    max_comment_chars: int = 4000


class DriftSettings(msgspec.Struct, forbid_unknown_fields=True):
    check_interval_hours: float = 24.0  # the scheduled check per collection; 0 turns it off
    current_days: float = 1.0  # the current window: the last this many days
    reference_days: float = 7.0  # the reference window: this many days before the current one
    # Or the reference is the first N answers after `reference_after` (e.g. a model promotion).
    reference_first_n: int = 0
    reference_after: str = ""  # ISO 8601; empty: from the oldest trace kept
    p_value: float = 0.05  # a signal drifts when its two-sample test is below this ...
    # ... and large: a continuous signal's population stability index above psi_threshold, the
    # embeddings' MMD^2 at least min_mmd2 (about a tenth of a window's queries on a new topic).
    psi_threshold: float = 0.2
    min_mmd2: float = 0.005
    max_samples: int = 500  # per window (sampled, seeded), so a check runs in seconds
    min_samples: int = 30  # fewer answers in a window: no verdict
    permutations: int = 200  # of the MMD test on query embeddings
    classifier: bool = False  # also a domain classifier's AUC on the embeddings (needs scikit-learn)
    auc_threshold: float = 0.55
    seed: int = 0


class EvalSettings(msgspec.Struct, forbid_unknown_fields=True):
    # What a query costs in money on the scorecard (`cost_per_query`); 0 leaves that term out.
    # CPU-seconds per query are always reported.
    cost_per_cpu_hour: float = 0.0
    cost_per_1k_tokens: float = 0.0
    # Paired bootstrap of `eval compare`: resamples and seed (fixed, so a comparison repeats exactly).
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 13


class AdmissionSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Each class of work runs at most `*_concurrency` requests at once, on threads of its own, and
    # lets `*_queue` more wait in order; beyond that a request is refused at once with 429 and
    # Retry-After. A concurrency of 0 is automatic: the number of cores (search, embeddings, ingest),
    # llm.slots + llm.max_queue (generation: the model's own queue then does the waiting).
    enabled: bool = True  # false: no limits, one shared thread pool (the behaviour before; benchmarks)
    search_concurrency: int = 0
    search_queue: int = 4
    embeddings_concurrency: int = 0
    embeddings_queue: int = 4
    generation_concurrency: int = 0  # chat, completions, answers
    generation_queue: int = 0
    ingest_concurrency: int = 0  # document submissions (the ingest itself runs in jobs.workers)
    ingest_queue: int = 32


class RegistrySettings(msgspec.Struct, forbid_unknown_fields=True):
    # The model registry (README, "Model registry"): GGUF files dropped into <models dir>/inbox/ are
    # registered, verified and probed (in a child process) within seconds of their last write.
    watch_inbox: bool = True
    inbox_poll_seconds: float = 1.0
    probe_memory_mb: int = 0  # resident memory a probed model may use; 0: half the machine's memory
    max_model_bytes: int = 0  # files above this are rejected as oversized; 0: the probe's memory budget
    probe_timeout_seconds: float = 300.0
    probe_context_length: int = 512
    probe_max_tokens: int = 8
    # Canaries (docs/models.md, "Safe rollout"): each step is analysed once the candidate has this
    # many requests (and stable as many, below 100%); a difference counts at this significance.
    canary_min_samples: int = 50
    canary_alpha: float = 0.05
    canary_max_error_rate: float = 0.05  # the candidate's bound while stable has too few requests
    canary_latency_tolerance: float = 0.25  # p95 may be this fraction slower than stable's
    # Shadow requests wait in a queue this long at most; beyond it they are dropped, never waited for.
    shadow_queue: int = 16


class WorkflowSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Runs ended longer ago than this keep their outcome, outputs, usage and each step's state,
    # attempts and timings, but lose step inputs and the outputs of nested steps (agent turns, fan-out
    # branches), so stored state stays bounded; 0 keeps everything.
    retention_days: int = 30
    # The views `sql` tools may read, by name: each a SELECT over the appliance's database, written
    # here by the admin (e.g. open_incidents = "SELECT id, title FROM documents WHERE ..."). A tool's
    # query reads only these names, in a read-only transaction; none given, sql tools refuse to run.
    sql_views: dict[str, str] = msgspec.field(default_factory=dict)


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    """Every setting of the appliance, one section per area; built once by load_settings()."""

    data_dir: str = "./var"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal, else JSON
    # Ingested into collection `sample` at start-up when set (make run points it at data/sample).
    sample_dir: str = ""
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    embedding: EmbeddingSettings = msgspec.field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = msgspec.field(default_factory=ChunkingSettings)
    index: IndexSettings = msgspec.field(default_factory=IndexSettings)
    retrieval: RetrievalSettings = msgspec.field(default_factory=RetrievalSettings)
    jobs: JobSettings = msgspec.field(default_factory=JobSettings)
    llm: LLMSettings = msgspec.field(default_factory=LLMSettings)
    answer: AnswerSettings = msgspec.field(default_factory=AnswerSettings)
    observability: ObservabilitySettings = msgspec.field(default_factory=ObservabilitySettings)
    parsing: ParsingSettings = msgspec.field(default_factory=ParsingSettings)
    hygiene: HygieneSettings = msgspec.field(default_factory=HygieneSettings)
    dropfolder: DropFolderSettings = msgspec.field(default_factory=DropFolderSettings)
    sources: SourceSettings = msgspec.field(default_factory=SourceSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    network: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    feedback: FeedbackSettings = msgspec.field(default_factory=FeedbackSettings)
    drift: DriftSettings = msgspec.field(default_factory=DriftSettings)
    eval: EvalSettings = msgspec.field(default_factory=EvalSettings)
    admission: AdmissionSettings = msgspec.field(default_factory=AdmissionSettings)
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    registry: RegistrySettings = msgspec.field(default_factory=RegistrySettings)
    workflows: WorkflowSettings = msgspec.field(default_factory=WorkflowSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def inbox_path(self) -> Path:
        return (
            Path(self.dropfolder.path).expanduser().resolve()
            if self.dropfolder.path
            else self.data_path / "inbox"
        )

    def validate(self) -> Settings:
        problems = []
        if not 0 < self.server.port < 65536:
            problems.append("server.port must be 1..65535")
        if self.chunking.size_tokens <= self.chunking.overlap_tokens or self.chunking.overlap_tokens < 0:
            problems.append("chunking.size_tokens must exceed chunking.overlap_tokens >= 0")
        if not 0.0 <= self.retrieval.semantic_weight <= 1.0:
            problems.append("retrieval.semantic_weight must be within [0, 1]")
        for key in ("lookup_semantic_weight", "question_semantic_weight"):
            if not 0.0 <= getattr(self.retrieval, key) <= 1.0:
                problems.append(f"retrieval.{key} must be within [0, 1]")
        if self.retrieval.candidates < 1 or self.retrieval.rerank_candidates < 1:
            problems.append("retrieval.candidates and rerank_candidates must be >= 1")
        if self.index.exact_search_max < 0:
            problems.append("index.exact_search_max must be >= 0 (0: always through the HNSW graph)")
        if self.llm.slots < 1 or self.llm.max_queue < 0:
            problems.append("llm.slots must be >= 1 and llm.max_queue >= 0")
        if self.llm.memory_budget_mb < 0 or self.llm.breaker_failures < 1 or self.llm.load_timeout_s <= 0:
            problems.append(
                "llm.memory_budget_mb must be >= 0, llm.breaker_failures >= 1, llm.load_timeout_s > 0"
            )
        if self.answer.top_k < 1 or self.answer.max_answer_tokens < 1:
            problems.append("answer.top_k and answer.max_answer_tokens must be >= 1")
        if self.jobs.workers < 1:
            problems.append("jobs.workers must be >= 1")
        problems += self._qdrant_problems()
        if min(self.cache.embedding_mb, self.cache.retrieval_mb, self.cache.answer_mb) < 0:
            problems.append(
                "cache.embedding_mb, retrieval_mb and answer_mb must be >= 0 (0: that cache is off)"
            )
        for name in ("max_body_bytes", "max_file_bytes", "max_batch_documents", "max_top_k"):
            if getattr(self.limits, name) < 1:
                problems.append(f"limits.{name} must be >= 1")
        if not 2 <= self.limits.max_json_depth <= 256:
            problems.append("limits.max_json_depth must be within 2..256")
        if self.retrieval.reranker == "cross-encoder" and not self.retrieval.reranker_model_dir:
            problems.append("retrieval.reranker_model_dir is required for the cross-encoder reranker")
        if self.parsing.memory_mb < 64 or self.parsing.cpu_seconds <= 0 or self.parsing.wall_seconds <= 0:
            problems.append("parsing.memory_mb must be >= 64, cpu_seconds and wall_seconds > 0")
        if self.parsing.max_pages < 1 or self.parsing.max_blocks < 1 or self.chunking.max_seconds <= 0:
            problems.append("parsing.max_pages and parsing.max_blocks must be >= 1, chunking.max_seconds > 0")
        if self.dropfolder.settle_seconds < 0 or self.dropfolder.scan_interval_seconds <= 0:
            problems.append("dropfolder.settle_seconds must be >= 0 and scan_interval_seconds > 0")
        if self.feedback.trace_retention_days < 0 or self.feedback.queue_size < 1:
            problems.append("feedback.trace_retention_days must be >= 0 and feedback.queue_size >= 1")
        drift = self.drift
        if drift.check_interval_hours < 0 or drift.current_days <= 0 or drift.reference_days <= 0:
            problems.append("drift.check_interval_hours must be >= 0, current_days and reference_days > 0")
        if not 0 < drift.p_value < 1 or drift.min_samples < 2 or drift.max_samples < drift.min_samples:
            problems.append("drift.p_value must be within (0, 1) and 2 <= min_samples <= max_samples")
        if drift.permutations < 10 or drift.reference_first_n < 0:
            problems.append("drift.permutations must be >= 10 and drift.reference_first_n >= 0")
        problems += self._server_problems()
        for view in self.workflows.sql_views:
            if not SQL_VIEW_RE.match(view):
                problems.append(
                    f"workflows.sql_views: {view!r} must be a lower-case name (letters, digits, '_')"
                )
        if self.eval.cost_per_cpu_hour < 0 or self.eval.cost_per_1k_tokens < 0:
            problems.append("eval.cost_per_cpu_hour and eval.cost_per_1k_tokens must be >= 0")
        if self.eval.bootstrap_resamples < 100:
            problems.append("eval.bootstrap_resamples must be >= 100")
        for work in ("search", "embeddings", "generation", "ingest"):
            if (
                getattr(self.admission, f"{work}_concurrency") < 0
                or getattr(self.admission, f"{work}_queue") < 0
            ):
                problems.append(f"admission.{work}_concurrency and admission.{work}_queue must be >= 0")
        if problems:
            raise InvalidInput("invalid settings: " + "; ".join(problems))
        return self

    def _qdrant_problems(self) -> list[str]:
        # The URL's host against network.allow is checked where the backend opens
        # (appliance/index/backends.py), beside the network guard that decides it.
        q, problems = self.index.qdrant, []
        if not QDRANT_COLLECTION_RE.match(q.collection):
            problems.append("index.qdrant.collection must be 1-255 letters, digits, '_' or '-'")
        if q.timeout_seconds <= 0 or q.count_settle_seconds < 0:
            problems.append("index.qdrant.timeout_seconds must be > 0 and count_settle_seconds >= 0")
        return problems

    def _server_problems(self) -> list[str]:
        server, problems = self.server, []
        if bool(server.tls_cert) != bool(server.tls_key):
            problems.append("server.tls_cert and server.tls_key go together: set both or neither")
        elif not server.loopback and not server.tls and not server.allow_plaintext:
            problems.append(
                f"server.host {server.host!r} is reachable from other machines: serve TLS "
                "(set server.tls_cert and server.tls_key) or set server.allow_plaintext = true on purpose"
            )
        for proxy in server.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                problems.append(f"server.trusted_proxies: {proxy!r} is not an IP address or CIDR")
        if server.header_timeout_seconds <= 0 or server.timeout_keep_alive_seconds < 1:
            problems.append("server.header_timeout_seconds must be > 0 and timeout_keep_alive_seconds >= 1")
        if server.max_headers < 1 or server.max_header_bytes < 1024:
            problems.append("server.max_headers must be >= 1 and server.max_header_bytes >= 1024")
        if self.limits.failed_auth_per_minute < 1 or self.webhooks.max_concurrent_bodies < 1:
            problems.append("limits.failed_auth_per_minute and webhooks.max_concurrent_bodies must be >= 1")
        return problems


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """APPLIANCE_SERVER__PORT=9000 -> {"server": {"port": "9000"}}; values are converted by msgspec."""
    tree: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in ("APPLIANCE_URL", "APPLIANCE_KEY", "APPLIANCE_CONFIG"):
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build settings from (lowest to highest precedence) defaults, file, environment, overrides."""
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or environ.get("APPLIANCE_CONFIG")
    raw: dict[str, Any] = {}
    if config_file:
        path = Path(config_file).expanduser()
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InvalidInput(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"config file {path} is not valid TOML: {exc}") from None
    raw = _merge(raw, _env_overrides(environ))
    raw = _merge(raw, overrides or {})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid settings: {exc}") from None
    return settings.validate()
