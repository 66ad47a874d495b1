"""The domain's records (msgspec Structs): what a Job, a Document, a Source or a Hit is, on every seam.

Repositories return them, services pass them through, routes declare them (so the OpenAPI
document describes every answer) and the console's test fixtures are built from them. Field
names and order are the JSON the API has always answered; timestamps are ISO 8601 strings, as
on the wire. Records are frozen: a service that adds to one (a job's items, a document's chunks)
makes a new one with `msgspec.structs.replace`.

`omit_defaults` is used only where the wire leaves keys out: the optional parts a route adds on
request (`?items=true`, `?chunks=true`, a conversation's messages, a source's counts) and a
chunk location's keys, which are present only when known.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Record(msgspec.Struct, frozen=True):
    """Base of every record: immutable. Each record also says `kw_only=True` (msgspec applies it
    only to the fields a class defines itself), so fields cannot be given in a wrong order."""


# -- catalogue ----------------------------------------------------------------------------------
class Collection(Record, kw_only=True):
    name: str
    description: str
    created_at: str
    documents: int  # how many documents it holds
    chunks: int


class ChunkLocation(Record, kw_only=True, omit_defaults=True):
    """Where a chunk sits in its document; each key is present only when the format knows it."""

    page: int | None = None
    heading_path: list[str] | None = None
    line_start: int | None = None
    line_end: int | None = None


class Chunk(Record, kw_only=True):
    """A stored chunk, as a document read with `?chunks=true` lists it."""

    chunk_id: int
    ordinal: int
    text: str
    token_count: int
    location: ChunkLocation


class Document(Record, kw_only=True, omit_defaults=True):
    id: str
    collection: str
    source_id: str
    source_kind: str
    uri: str | None
    title: str
    content_hash: str
    mime_type: str
    size_bytes: int
    metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    chunks: list[Chunk] | None = None  # only when asked for (`?chunks=true`)


class DocumentPage(Record, kw_only=True):
    """One page of a document listing, with the total over every page."""

    documents: list[Document]
    total: int
    limit: int
    offset: int


# -- search and answers -------------------------------------------------------------------------
class Hit(Record, kw_only=True):
    """A chunk found by a search, with its document's fields and its score."""

    chunk_id: int
    document_id: str
    source_id: str
    title: str
    text: str
    location: ChunkLocation
    metadata: dict[str, Any]
    collection: str
    uri: str | None = None
    score: float = 0.0  # the last stage's score (fused, or reranked); 0 until ranked


class Citation(Record, kw_only=True):
    """A source an answer cites as [n]."""

    n: int
    document_id: str
    source_id: str
    title: str
    chunk_id: int
    location: ChunkLocation
    snippet: str


class SentenceAttribution(Record, kw_only=True, omit_defaults=True):
    """One sentence of an answer and the sources that, checked, support it."""

    text: str  # without its markers
    citations: list[int]  # source numbers after verification
    claim: bool  # states something a source could support (not "Here is what I found:")
    supported: bool
    score: float  # the verifier's support score of its best citation, in [0, 1]
    original_citations: list[int] | None = None  # what the model cited, when verification changed it


class Usage(Record, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Answer(Record, kw_only=True):
    answer: str
    citations: list[Citation]
    invalid_citations: list[int]  # numbers the model cited that no source has (removed from the text)
    model: str
    usage: Usage
    query: str = ""  # what retrieval ran with: the question, or its rewrite with the history
    timings: dict[str, float | None] = {}
    id: str = ""  # the answer's trace (GET /api/v1/answers/{id}), to rate it
    # Verified attribution, sentence by sentence; the indexes of the claims no source supports.
    sentences: list[SentenceAttribution] = []
    unsupported_sentences: list[int] = []
    verifier: str = ""  # which CitationVerifier checked it ("" when there was nothing to check)
    # Served from the answer cache: the same prompt over the same sources to the same loaded
    # model was answered before (its usage is zero: nothing was generated for this request).
    cached: bool = False


class Message(Record, kw_only=True):
    ordinal: int
    role: str  # user | assistant
    content: str
    citations: list[Citation]
    created_at: str


class Conversation(Record, kw_only=True, omit_defaults=True):
    id: str
    collections: list[str] | None  # None: every collection the key may see
    title: str
    created_at: str
    messages: list[Message] | None = None  # when one conversation is read


# -- jobs ---------------------------------------------------------------------------------------
class Progress(Record, kw_only=True):
    total: int
    processed: int  # indexed + unchanged + failed
    indexed: int
    unchanged: int
    failed: int
    fraction: float


class JobItem(Record, kw_only=True):
    """One document of a job, as `?items=true` lists it."""

    ordinal: int
    document_id: str
    source_id: str
    action: str  # upsert | delete | reingest
    state: str  # pending | done | unchanged | failed
    error: str | None
    chunks: int | None


class Job(Record, kw_only=True, omit_defaults=True):
    id: str
    kind: str  # ingest | sync | verify | eval
    collection: str | None
    source: str | None  # the source that queued it, if one did
    state: str  # queued | running | succeeded | failed | cancelled
    progress: Progress
    error: str | None
    summary: dict[str, Any] | None  # a kind's report (a sync's changes, a verification's findings)
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    items: list[JobItem] | None = None  # only when asked for (`?items=true`)


# -- sources ------------------------------------------------------------------------------------
class Source(Record, kw_only=True, omit_defaults=True):
    name: str
    kind: str
    collection: str
    location: str
    schedule: str
    config: dict[str, Any]
    cursor: str | None
    state: str  # ok | error | never synced
    last_sync_at: str | None
    last_success_at: str | None
    lag_seconds: float | None
    last_error: str | None
    # In listings (and a single source read through them): files it handed in, files it refused.
    documents: int | None = None
    quarantined: int | None = None


class RemovedSource(Source, kw_only=True):
    deleted_documents_job: str | None  # the job deleting its documents, when that was asked for


class QuarantinedFile(Record, kw_only=True):
    id: int
    source: str
    path: str
    collection: str | None
    kind: str  # why: sensitive | refused | too_large | unsupported | failed
    reason: str
    size_bytes: int | None
    content_hash: str | None
    first_seen: str | None
    last_seen: str | None


# -- keys ---------------------------------------------------------------------------------------
class KeyInfo(Record, kw_only=True):
    """An API key as listed: never its secret (only its hash is stored)."""

    id: str
    name: str
    role: str  # admin | user
    collections: list[str] | None  # None: every collection (admin keys)
    rpm: int | None
    tpm: int | None
    created_at: str
    revoked_at: str | None


class NewKey(KeyInfo, kw_only=True):
    """A key just created: the only answer that carries its secret."""

    key: str


# -- answer traces, feedback and drift ----------------------------------------------------------
class RetrievedChunk(Record, kw_only=True):
    """A chunk retrieval returned for an answer, with the score it ranked by."""

    chunk_id: int
    document_id: str
    source_id: str
    score: float


class GivenSource(Record, kw_only=True):
    """A chunk given to the model as source [n]."""

    n: int
    chunk_id: int
    document_id: str
    source_id: str


class Rating(Record, kw_only=True):
    """A key's rating of an answer: one per key and answer, the latest kept."""

    answer_id: str
    key_id: str
    rating: str  # up | down
    comment: str | None
    correct_answer: str | None
    confirmed_sources: list[str]  # source ids of the answer's sources the rater confirms hold the answer
    created_at: str


class Trace(Record, kw_only=True, omit_defaults=True):
    """An answer as it was made: what was asked and retrieved, what the model was given and said."""

    id: str
    created_at: str
    key_id: str
    conversation_id: str | None
    collections: list[str]  # the collections searched
    question: str
    query: str  # what retrieval ran with
    model: str
    prompt_version: str
    answer: str
    refused: bool  # the answer is the "documents do not say" reply
    citations: list[Citation]
    retrieved: list[RetrievedChunk]
    sources: list[GivenSource]
    usage: Usage
    timings: dict[str, float | None]
    top_similarity: float | None  # cosine of the closest chunk; None when no vector search ran
    answer_chars: int
    latency_ms: float
    ratings: list[Rating] | None = None  # when one trace is read
    route: str | None = None  # how its model was chosen: the x-appliance-route header's value


class FeedbackItem(Record, kw_only=True):
    """A rating with the answer it rates, as `GET /api/v1/feedback` lists it."""

    answer_id: str
    rating: str
    comment: str | None
    correct_answer: str | None
    rated_at: str
    key_id: str
    question: str
    answer: str
    model: str
    collections: list[str]
    answered_at: str


class FeedbackPage(Record, kw_only=True):
    items: list[FeedbackItem]
    total: int
    limit: int
    offset: int


class FeedbackCount(Record, kw_only=True):
    """How a collection's answers were rated over the last `days` days (an answer over several
    collections counts in each)."""

    collection: str
    up: int
    down: int
    answers: int  # answers given over it in the same days, rated or not
    days: int


class Window(Record, kw_only=True):
    """A window of answers: a time range, or the first `first_n` answers after `start`."""

    start: str | None
    end: str | None
    first_n: int | None = None


class DriftSignal(Record, kw_only=True):
    """One signal's two-sample comparison between the reference and the current window."""

    signal: str  # embedding | top_similarity | refusal_rate | answer_length | latency | thumbs_down_rate
    test: str  # mmd | ks | fisher
    statistic: float | None
    p_value: float | None
    psi: float | None  # population stability index (10 quantile bins of the reference); scalars only
    auc: float | None  # domain classifier AUC (embeddings, when enabled)
    reference_n: int
    current_n: int
    reference_mean: float | None
    current_mean: float | None
    drifted: bool
    note: str  # why there is no verdict, or what decided it


class DriftReport(Record, kw_only=True):
    """A drift check of one collection: every signal, and whether any drifted."""

    id: str
    collection: str
    checked_at: str
    trigger: str  # schedule | manual
    reference: Window
    current: Window
    drifted: bool
    signals: list[DriftSignal]


# -- evaluation ---------------------------------------------------------------------------------
class QAItem(Record, kw_only=True, omit_defaults=True):
    """One question of a QA eval set, as files, `Evals.create_qa_set` and the API give it.

    `gold` names the documents (their `source_id` in the collection: for an imported corpus, its
    own `_id`s) that hold the answer; `answers` are short answers (a reply is right when it
    contains one, SQuAD-normalised), `answer` a long-form answer (token F1), `support` the gold
    sentences the answer rests on."""

    question: str
    id: str = ""  # unique in its set; empty: the set numbers it (q1, q2, ...)
    kind: str = "answerable"  # answerable | unanswerable
    answers: list[str] = []
    answer: str = ""
    gold: list[str] = []
    support: list[str] = []
    metadata: dict[str, Any] = {}


class EvalItem(QAItem, kw_only=True, omit_defaults=True):
    """An item as stored: a QA item, or a retrieval query (kind "query") with graded `relevance`
    (source_id -> grade, > 0 relevant). A QA item's gold documents are relevant with grade 1."""

    relevance: dict[str, int] = {}


class EvalSet(Record, kw_only=True, omit_defaults=True):
    """One version of an eval set. Immutable once a run used it (`used`): importing the name again
    then makes the next version."""

    name: str
    version: int
    kind: str  # retrieval | qa | generated | feedback
    description: str
    origin: str  # where it came from: a directory, "upload", "generated", "feedback"
    collection: str | None  # where its corpus was ingested (None: the set carried no corpus)
    item_count: int
    answerable: int
    unanswerable: int
    corpus_documents: int
    ingest_jobs: list[str]
    content_hash: str
    used: bool
    created_at: str | None
    items: list[EvalItem] | None = None  # only when asked for (`?items=true`)


class EvalRunOptions(Record, kw_only=True):
    collection: str
    mode: str | None = None  # keyword | semantic | hybrid; None: retrieval.default_mode
    top_k: int = 100  # hits retrieved per item (retrieval metrics); the answer uses answer.top_k of them
    limit: int | None = None  # only the first N items
    retrieval_only: bool = False  # skip the chat model (retrieval metrics only)
    model: str | None = None  # chat model; None: the served default
    # Judge each answer against the item's gold answer (judge_correct): "llm", the run's chat model
    # as a yes/no judge (evaluate/judge.py); "lexical", token coverage; None: no judge.
    judge: str | None = None


class RetrievedDocument(Record, kw_only=True):
    """A document as a run ranked it: at its best chunk's rank and score."""

    source_id: str
    chunk_id: int
    score: float


class EvalOutcome(Record, kw_only=True, omit_defaults=True):
    """What one item of a run gave, with its scores: every number of a scorecard traces to these."""

    ordinal: int
    item_id: str
    question: str
    kind: str
    state: str  # done | failed
    retrieved: list[RetrievedDocument] = []
    answer: str | None = None
    refused: bool | None = None
    citations: list[Citation] = []
    scores: dict[str, float | None] = {}
    timings: dict[str, float | None] = {}
    usage: Usage | None = None
    cpu_seconds: float | None = None
    error: str | None = None


class EvalRun(Record, kw_only=True, omit_defaults=True):
    """A run of an eval set: its job, the configuration it ran under and its scorecard (live while
    it runs, from the items done so far)."""

    id: str
    set_name: str
    set_version: int
    set_kind: str
    job_id: str
    state: str  # the job's: queued | running | succeeded | failed | cancelled
    progress: Progress
    options: EvalRunOptions
    config: dict[str, Any]
    scorecard: dict[str, float | None]
    error: str | None
    created_at: str | None
    finished_at: str | None


class MetricDifference(Record, kw_only=True):
    """B minus A on one metric over the paired items, with a paired bootstrap interval."""

    metric: str
    n: int  # items paired on this metric
    a: float
    b: float
    difference: float
    low: float | None  # None with fewer than two pairs: no interval
    high: float | None
    verdict: str  # improved | regressed | within noise (direction-aware: latency lower is better)


class RunComparison(Record, kw_only=True):
    run_a: str
    run_b: str
    paired_items: int
    confidence: float
    resamples: int
    seed: int
    metrics: list[MetricDifference]


class GateThreshold(Record, kw_only=True, omit_defaults=True):
    """A bound on one scorecard metric: absolute (`min`, `max`) or against the baseline run
    (`min_delta`: at least this much better; `max_regression`: at most this much worse)."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_delta: float | None = None
    max_regression: float | None = None


class EvalGate(Record, kw_only=True, omit_defaults=True):
    name: str
    set_name: str
    thresholds: list[GateThreshold]
    baseline_run: str | None = None
    run_options: EvalRunOptions | None = None  # how a check without a run runs the set
    description: str = ""
    created_at: str | None = None


class GateCheck(Record, kw_only=True):
    metric: str
    bound: str  # min | max | min_delta | max_regression
    threshold: float
    value: float | None
    baseline: float | None
    passed: bool
    detail: str


class GateReport(Record, kw_only=True):
    gate: str
    run_id: str
    baseline_run: str | None
    state: str  # passed | failed | pending (the run has not finished: check again with its id)
    checks: list[GateCheck]


class FusionSettings(Record, kw_only=True):
    """How hybrid search fuses its keyword and semantic candidates (retrieve/fusion.py)."""

    method: str  # weighted | zscore | dbsf | rrf
    semantic_weight: float  # the keyword list weighs 1 - this
    rrf_k: int = 60
    candidates: int = 100  # per retriever, before fusion
    routing: bool = False
    lookup_semantic_weight: float = 0.5
    question_semantic_weight: float = 0.9


class FusionCandidateScore(Record, kw_only=True):
    settings: FusionSettings
    ndcg_at_10: float
    recall_at_100: float


class CollectionFusion(Record, kw_only=True):
    """A collection's own fusion, chosen by calibration on its generated eval set: what was
    chosen, over which items, and the scores of every candidate tried (best first)."""

    collection: str
    settings: FusionSettings
    eval_set: str  # name@version of the generated set it was tuned on
    items: int
    default_score: FusionCandidateScore  # the server-wide default on the same items
    scores: list[FusionCandidateScore]
    calibrated_at: str | None = None
    job_id: str | None = None
    chunks: int = 0  # the collection's size when calibrated: recalibrate once it has changed a lot
