"""Typed settings: a TOML file plus APPLIANCE_* environment overrides, validated once at start-up."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from appliance.errors import InvalidInput

ENV_PREFIX = "APPLIANCE_"


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080


class LimitSettings(msgspec.Struct, forbid_unknown_fields=True):
    max_body_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 32 * 1024 * 1024
    max_batch_documents: int = 1000
    max_query_chars: int = 2000
    max_top_k: int = 100
    wait_timeout_seconds: float = 300.0


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


class IndexSettings(msgspec.Struct, forbid_unknown_fields=True):
    vector_dtype: Literal["i8", "f16"] = "i8"
    # The vector index is rewritten whole on save; between saves the outbox covers it.
    vector_save_interval_seconds: float = 5.0


class RetrievalSettings(msgspec.Struct, forbid_unknown_fields=True):
    default_mode: Literal["keyword", "semantic", "hybrid"] = "hybrid"
    fusion: Literal["weighted", "rrf"] = "weighted"
    semantic_weight: float = 0.7  # weighted fusion: keyword weight is 1 - this
    rrf_k: int = 60
    candidates: int = 100  # per retriever, before fusion
    reranker: Literal["none", "cross-encoder", "bi-encoder"] = "none"
    # Empty with "bi-encoder": the packaged all-mpnet-base-v2 (installed by `make`), assembled on first use.
    reranker_model_dir: str = ""
    rerank_candidates: int = 30


class LLMSettings(msgspec.Struct, forbid_unknown_fields=True):
    # A manifest name ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct") or a GGUF path.
    # Empty: the embedded default (Qwen2.5-Coder-1.5B when installed, else SmolLM2-135M).
    model: str = ""
    models_dir: str = ""  # default <data dir>/models
    context_length: int = 0  # 0: the model's own (capped at 8192 to bound memory)
    threads: int = 0  # 0: all cores but one (the server needs one; see models/service.py)
    slots: int = 1  # concurrent generations (llama.cpp)
    max_queue: int = 8  # requests waiting for a slot before 429
    load_at_start: bool = True


class AnswerSettings(msgspec.Struct, forbid_unknown_fields=True):
    top_k: int = 6  # chunks given to the model
    max_answer_tokens: int = 512
    temperature: float = 0.1
    # Below this cosine similarity of the best chunk, the documents are taken not to cover the
    # question: the answer says so without asking the model to improvise.
    min_relevance: float = 0.2


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


class NetworkSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Refuse (and log) any outbound socket to a non-loopback address from inside the process.
    guard: bool = True
    # Addresses or CIDRs inside the air gap the process may reach (e.g. an internal git remote).
    allow: list[str] = msgspec.field(default_factory=list)


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
        if self.retrieval.candidates < 1 or self.retrieval.rerank_candidates < 1:
            problems.append("retrieval.candidates and rerank_candidates must be >= 1")
        if self.llm.slots < 1 or self.llm.max_queue < 0:
            problems.append("llm.slots must be >= 1 and llm.max_queue >= 0")
        if self.answer.top_k < 1 or self.answer.max_answer_tokens < 1:
            problems.append("answer.top_k and answer.max_answer_tokens must be >= 1")
        if self.jobs.workers < 1:
            problems.append("jobs.workers must be >= 1")
        for name in ("max_body_bytes", "max_file_bytes", "max_batch_documents", "max_top_k"):
            if getattr(self.limits, name) < 1:
                problems.append(f"limits.{name} must be >= 1")
        if self.retrieval.reranker == "cross-encoder" and not self.retrieval.reranker_model_dir:
            problems.append("retrieval.reranker_model_dir is required for the cross-encoder reranker")
        if self.parsing.memory_mb < 64 or self.parsing.cpu_seconds <= 0 or self.parsing.wall_seconds <= 0:
            problems.append("parsing.memory_mb must be >= 64, cpu_seconds and wall_seconds > 0")
        if self.parsing.max_pages < 1 or self.parsing.max_blocks < 1 or self.chunking.max_seconds <= 0:
            problems.append("parsing.max_pages and parsing.max_blocks must be >= 1, chunking.max_seconds > 0")
        if self.dropfolder.settle_seconds < 0 or self.dropfolder.scan_interval_seconds <= 0:
            problems.append("dropfolder.settle_seconds must be >= 0 and scan_interval_seconds > 0")
        if problems:
            raise InvalidInput("invalid settings: " + "; ".join(problems))
        return self


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
