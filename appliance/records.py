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
    kind: str  # ingest | sync | verify
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
