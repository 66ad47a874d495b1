"""Wire schemas of the REST API (msgspec structs, so Litestar validates and documents them): the
request bodies, and the envelopes some answers wrap records in (the records are appliance.records)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar.params import Parameter

from appliance.records import Document, Hit, Job, QuarantinedFile, Source

# Paging: declared bounds, so a huge number is a 400 and never reaches a BIGINT column in DuckDB.
MAX_OFFSET = 1_000_000_000
Offset = Annotated[int, Parameter(ge=0, le=MAX_OFFSET, description=f"rows to skip, 0..{MAX_OFFSET}")]


class CollectionIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""


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
    job: Job | None = None  # with `?wait=true`: the job as it ended (or stood when the wait ran out)


class SearchIn(msgspec.Struct, forbid_unknown_fields=True):
    query: str
    collections: list[str] | None = None
    top_k: int = 10
    mode: Literal["keyword", "semantic", "hybrid"] | None = None
    rerank: bool | None = None
    filters: dict[str, Any] | None = None
    cache: bool = True  # false: neither read nor fill the retrieval cache


class SearchOut(msgspec.Struct):
    hits: list[Hit]
    timings: dict[str, float]
    mode: str
    reranked: bool
    cached: bool = False  # served from the retrieval cache (its timings are the lookup's)


class DeletedDocument(msgspec.Struct):
    deleted: bool
    document: Document  # as it was


class Deleted(msgspec.Struct):
    deleted: bool
    id: str


class SourceList(msgspec.Struct):
    sources: list[Source]


class SyncRequested(msgspec.Struct):
    source: str
    job_id: str | None  # None: nothing to queue (the drop folder scans at once instead)


class QuarantineList(msgspec.Struct):
    files: list[QuarantinedFile]


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[Any] | None = None
