"""The model registry's records: families, immutable versions with their probe, aliases and every alias move."""

from __future__ import annotations

from typing import Any

from appliance.records import Record

KINDS = ("chat", "embedding", "reranker")
BACKENDS = ("llama.cpp", "vllm", "sentence-transformers", "remote")
STATES = ("registered", "probing", "ready", "rejected")


class RemoteEndpoint(Record, kw_only=True):
    """Where a `remote` version is served: an OpenAI-compatible server (vLLM, KServe, another
    appliance) at an allow-listed URL. The API key is never stored: only where to read it."""

    url: str  # the API's base, e.g. "https://gpu-cluster.internal:8000/v1"
    model: str  # the model's id on that server (its /v1/models)
    api_key_file: str | None = None  # a file on this server holding the key
    api_key_env: str | None = None  # or an environment variable of the server process
    capacity: int = 4  # requests sent to it at the same time (more wait in our queue)


class ModelVersion(Record, kw_only=True):
    """One immutable version of a family: its weights (by path and sha256), what its header says,
    what the probe found, and the aliases that point at it now."""

    name: str  # the family
    version: int
    kind: str  # chat | embedding | reranker
    backend: str  # llama.cpp | vllm | sentence-transformers | remote
    path: str
    sha256: str
    size_bytes: int
    format: str  # gguf | safetensors | ...
    quantisation: str | None
    architecture: str | None
    context_length: int | None
    chat_template_sha256: str | None
    licence: str
    tags: list[str]
    state: str  # registered | probing | ready | rejected
    reason: str | None  # why it was rejected
    probe: dict[str, Any] | None
    source: str  # built-in, manifest, import, inbox
    created_at: str
    aliases: list[str]
    remote: RemoteEndpoint | None = None  # backend "remote": where it is served (path is its URL)


class CanaryStep(Record, kw_only=True):
    """One analysis of a canary step: each arm's numbers and each check, and what followed."""

    step: int  # 0-based index into the schedule
    weight: int  # percent of production traffic the candidate had
    passed: bool
    candidate: dict[str, Any]  # requests, errors, error_rate, p95_first_token_ms, p95_total_ms, ...
    stable: dict[str, Any]
    checks: list[dict[str, Any]]  # name, passed (None: skipped for want of data), p_value, detail
    outcome: str  # advanced | promoted | rolled_back
    at: str


class Canary(Record, kw_only=True):
    """A canary of a family: the candidate gets `weight` percent of production's traffic, sticky
    per API key, until each step's analysis passes (the last promotes it) or one fails (rolled back)."""

    id: str
    name: str  # the family
    candidate_version: int
    stable_version: int
    steps: list[int]
    step: int  # the current step's index
    weight: int  # the candidate's share now (0 once it ended)
    min_samples: int
    state: str  # running | promoted | rolled_back | cancelled
    reason: str
    actor: str
    analyses: list[CanaryStep]
    traffic: dict[str, Any]  # this step's live numbers per arm (empty once it ended)
    started_at: str
    updated_at: str


class ShadowState(Record, kw_only=True):
    """A family's shadow: `share` of its production requests mirrored to `version` off the hot path."""

    name: str
    version: int
    share: float  # 0..1
    actor: str
    updated_at: str
    queue: dict[str, Any]  # the mirror's capacity, depth, offered, dropped, done, failed


class ShadowPair(Record, kw_only=True):
    id: int
    shadow_version: int
    production_model: str
    prompt: str
    production_output: str
    shadow_output: str | None
    similarity: float | None
    citation_overlap: float | None
    production_ms: float | None
    shadow_ms: float | None
    error: str | None
    at: str


class ShadowReport(Record, kw_only=True):
    """How a shadow version's answers agree with production's on the same requests."""

    name: str
    shadow: ShadowState | None  # None: no shadow is set now (pairs of earlier ones may remain)
    version: int | None  # the version the numbers are about
    pairs: int
    errors: int
    mean_similarity: float | None
    median_similarity: float | None
    agreement_rate: float | None  # share of pairs with similarity >= 0.8
    mean_citation_overlap: float | None  # over pairs where either answer cites; None when none did
    p95_production_ms: float | None
    p95_shadow_ms: float | None
    recent: list[ShadowPair]


class ModelFamily(Record, kw_only=True):
    name: str
    kind: str
    gate: str | None  # the eval gate a promotion to staging/production must pass; None: ungated
    aliases: dict[str, int]  # alias -> version
    versions: list[ModelVersion]
    created_at: str
    canary: Canary | None = None  # the running canary, else the last one
    shadow: ShadowState | None = None


class AliasMove(Record, kw_only=True):
    """One row of a family's alias history: who moved which alias from what to what, why, and on
    what evidence (the eval gate's report, or `gated: false`)."""

    id: int
    name: str  # the family
    alias: str
    action: str  # promote | rollback | import | config | remove | canary | canary-step | shadow
    version: int | None  # None: the alias was removed from this family
    previous_version: int | None
    actor: str
    reason: str
    gated: bool
    gate: str | None
    eval_report_id: str | None  # the gate's eval run
    eval_report: dict[str, Any] | None
    at: str


class ResolvedModel(Record, kw_only=True):
    """What serving needs of a reference (`name`, `name@version`, `name@alias`, or an alias): the
    version it names, checked against its sha256, and the local path of its weights."""

    reference: str
    name: str
    version: int
    alias: str | None
    kind: str
    backend: str
    path: str
    sha256: str
    context_length: int | None
    tags: list[str]
    remote: RemoteEndpoint | None = None


# -- a collection's embedder -------------------------------------------------------------------------
class EmbedderGeneration(Record, kw_only=True):
    """One generation of a collection's vectors: which embedder made them. Generation 0 is the
    server's embedder, whose vectors live in the shared index; others have an index of their own."""

    generation: int
    model: str  # the reference as asked (family, family@version, family@alias or an alias)
    resolved: str  # family@version it named then
    path: str  # the weights' folder (local)
    dimensions: int


class EmbedderGate(Record, kw_only=True):
    """The gate of a switch: semantic retrieval of the new generation against the live one on the
    same queries. It passes when new nDCG@10 >= live nDCG@10 + min_gain (and there are queries,
    unless the switch was asked ungated)."""

    passed: bool
    rule: str
    reason: str
    queries: int
    sources: list[str]  # eval sets (name@version) and tuning held-out splits the queries came from
    live: dict[str, float]  # ndcg@10, recall@10, mrr over the queries
    candidate: dict[str, float]
    min_gain: float
    ungated: bool = False
    # candidate - live nDCG@10, paired over the queries, with its 95% bootstrap interval (None
    # with fewer than two queries): a gain whose interval spans 0 may be noise.
    ndcg_difference: float | None = None
    interval: list[float] | None = None


class CollectionEmbedder(Record, kw_only=True):
    """A collection's embedder: the live generation, the one before it (kept, vectors and all, until
    the switch is confirmed; a rollback returns to it), and the gate that let the live one in."""

    collection: str
    live: EmbedderGeneration
    previous: EmbedderGeneration | None = None
    gate: EmbedderGate | None = None
    job_id: str | None = None
    switched_at: str | None = None
    confirmed: bool = True
