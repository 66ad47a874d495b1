"""Wire schemas of the REST API (msgspec structs, so Litestar validates and documents them)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class CollectionIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""


class Collection(msgspec.Struct):
    name: str
    description: str
    created_at: str
    documents: int
    chunks: int


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A document given as text, or as base64 `content` with a `filename` (any supported format)."""

    text: str | None = None
    content_base64: str | None = None
    filename: str | None = None
    source_id: str | None = None
    title: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class SingleDocumentIn(DocumentIn, forbid_unknown_fields=True):
    collection: str = ""


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str
    documents: list[DocumentIn]


class Accepted(msgspec.Struct):
    job_id: str
    document_ids: list[str]
    job: dict[str, Any] | None = None


class SearchIn(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    collections: list[str] | None = None
    top_k: int = 10
    mode: Literal["keyword", "semantic", "hybrid"] | None = None
    rerank: bool | None = None
    filters: dict[str, Any] | None = None


class SearchHit(msgspec.Struct):
    chunk_id: int
    document_id: str
    source_id: str
    title: str
    text: str
    score: float
    location: dict[str, Any]
    metadata: dict[str, Any]
    collection: str
    uri: str | None = None


class SearchOut(msgspec.Struct):
    hits: list[SearchHit]
    timings: dict[str, float]
    mode: str
    reranked: bool


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[Any] | None = None
