"""What a source kind implements (`Source`) and what it hands its findings to (`Sink`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from appliance.db.sources import KnownFile, SourceRecord
from appliance.ingest.intake import NewDocument


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """What an admin asks for when adding a source: where it reads, and the kind's own options."""

    location: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """One sync's outcome: where the next one starts (None keeps the previous cursor) and its report,
    which becomes the sync job's summary."""

    cursor: str | None
    report: dict


class Sink(Protocol):
    """Where a source hands in what it found; the source service implements it. A source never
    writes jobs or bookkeeping itself, so a new kind needs nothing but this and its own reader."""

    def known_files(self, source: str) -> dict[str, KnownFile]:
        """The files `source` handed in before, by path: what a sync compares against."""
        ...

    def submit(
        self, source: str, collection: str, upserts: list[NewDocument], deletions: list[tuple[str, str]]
    ) -> str | None:
        """One ingest job (upserts, then (source_id, source_kind) deletions); its id, None when empty."""
        ...

    def record_files(self, source: str, seen: Sequence[KnownFile], gone: Sequence[str]) -> None:
        """Called after the job holding these changes was submitted, never before."""
        ...

    def quarantine(
        self,
        source: str,
        path: str,
        collection: str | None,
        kind: str,
        reason: str,
        size_bytes: int | None = None,
        content_hash: str | None = None,
    ) -> bool:
        """A file not taken, with its reason; True when this is news (log and count it once)."""
        ...

    def release(self, source: str, path: str) -> None:
        """A file taken after all: it leaves the quarantine."""
        ...

    def release_missing(self, source: str, collection: str, present: set[str]) -> None:
        """Forget the refusals of files of `collection` that are no longer there."""
        ...

    def count_secret(self, pattern: str) -> None:
        """A file refused for its sensitive name (`pattern` is the rule, never the path)."""
        ...


@runtime_checkable
class Source(Protocol):
    """A kind of source (git repositories, the drop folder, ...): registered once by kind, it
    checks a new source's configuration and syncs any source of its kind into a `Sink`."""

    kind: str

    def validate(self, config: SourceConfig) -> SourceConfig:
        """The configuration as it will be stored (location resolved, options completed), or
        InvalidInput when it cannot work; nothing is recorded before this passes."""
        ...

    def sync(self, record: SourceRecord, sink: Sink) -> SyncResult:
        """Hand in what changed since `record.cursor`; raising fails the sync with that reason."""
        ...

    def source_id(self, name: str, path: str) -> str:
        """The document source_id a file (a `known_files` path) of source `name` was handed in as."""
        ...
