"""What callers hand the appliance to ingest, checked and turned into durable job items."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.config import LimitSettings
from appliance.db.catalog import document_id_for
from appliance.db.jobs import WorkItem
from appliance.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat
from appliance.ingest.parsers import SUPPORTED, binary_type
from appliance.ingest.pipeline import content_hash


@dataclass(slots=True)
class NewDocument:
    """A document handed to the appliance: either `text` or raw `content` bytes (with a filename)."""

    source_id: str | None = None
    title: str | None = None
    text: str | None = None
    content: bytes | None = None
    filename: str | None = None
    uri: str | None = None
    source_kind: str = "api"
    metadata: dict = field(default_factory=dict)


def make_job_item(
    ordinal: int, collection: str, doc: NewDocument, strict: bool, limits: LimitSettings
) -> WorkItem:
    label = doc.filename or doc.source_id or f"document {ordinal}"
    if (doc.text is None) == (doc.content is None):
        raise InvalidInput(f"{label}: give exactly one of text or content")
    content = doc.text.encode("utf-8") if doc.text is not None else doc.content
    if len(content) > limits.max_file_bytes:
        raise PayloadTooLarge(
            f"{label}: {len(content)} bytes exceeds the limit of {limits.max_file_bytes} bytes"
        )
    if strict and not content.strip():
        raise InvalidInput(f"{label}: document is empty")
    # Only the cheap, bounded check runs while the request waits: every text kind is supported,
    # and telling them apart (JSON, CSV, Markdown, ...) is the parser sandbox's work.
    if strict and (mime := binary_type(content)) is not None and mime not in SUPPORTED:
        raise UnsupportedFormat(f"{label}: unsupported or unrecognised content ({mime})")
    source_id = doc.source_id or doc.filename or content_hash(content)
    return WorkItem(
        ordinal=ordinal,
        document_id=document_id_for(collection, source_id),
        source_id=source_id,
        source_kind=doc.source_kind,
        uri=doc.uri,
        title=doc.title,
        filename=doc.filename,
        content=content,
        metadata=dict(doc.metadata or {}),
    )
