"""Sources as a service: every kind through the registry, sync jobs, the drop folder, GitHub deliveries and bookkeeping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from appliance import records
from appliance.config import Settings
from appliance.db.catalog import Catalog, document_id_for
from appliance.db.connection import Database
from appliance.db.jobs import JobStore, WorkItem
from appliance.db.sources import KnownFile, SourceStore, schedule_interval
from appliance.db.webhooks import WebhookStore
from appliance.errors import InvalidInput, NotFound, PayloadTooLarge, Unauthorized
from appliance.ingest.intake import NewDocument, make_job_item
from appliance.ingest.pipeline import ItemOutcome
from appliance.ingest.sources import dropfolder
from appliance.ingest.sources.builtin import register_builtin_sources
from appliance.ingest.sources.dropfolder import DropFolder, DropFolderWatcher
from appliance.ingest.sources.gitsource import GitSource
from appliance.ingest.sources.protocols import Source, SourceConfig
from appliance.ingest.sources.registry import KINDS, SourceKinds
from appliance.names import check_collection_name, check_source_name
from appliance.observability.metrics import Metrics
from appliance.records import Job, QuarantinedFile, RemovedSource

log = logging.getLogger(__name__)

GITHUB_SOURCE = "github"
# Sources the service keeps itself, from settings: never added or removed by hand.
_SETTINGS_KINDS = (DropFolder.kind, GITHUB_SOURCE)


def delete_item(ordinal: int, collection: str, source_id: str, source_kind: str) -> WorkItem:
    return WorkItem(
        ordinal,
        document_id_for(collection, source_id),
        source_id,
        source_kind,
        None,
        None,
        None,
        b"",
        {},
        action="delete",
    )


class SourceService:
    """Owns every source: dispatches by kind through the registry, and is the `Sink` the sources
    hand their findings to (ingest jobs, known files, quarantine, secret counts)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        catalog: Catalog,
        jobs: JobStore,
        signal: Callable[[str], None],
        metrics: Metrics,
        *,
        kinds: SourceKinds = KINDS,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.jobs = jobs
        self.signal = signal
        self.metrics = metrics
        self.store = SourceStore(db)
        self.webhooks = WebhookStore(db)
        register_builtin_sources(kinds)
        self._sources: dict[str, Source] = {kind: kinds.create(kind, settings) for kind in kinds.kinds()}
        self._webhook_lock = threading.Lock()
        self._sync_request_lock = threading.Lock()
        self.watcher: DropFolderWatcher | None = None
        folder = self._sources.get(DropFolder.kind)
        if settings.dropfolder.enabled and isinstance(folder, DropFolder):
            self.store.ensure(dropfolder.SOURCE, DropFolder.kind, "*", str(folder.root))
            self.watcher = DropFolderWatcher(
                folder, self, settings.dropfolder.scan_interval_seconds, settings.dropfolder.watch
            )

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def _source(self, kind: str) -> Source:
        source = self._sources.get(kind)
        if source is None:
            raise InvalidInput(
                f"unknown source kind {kind!r}: known kinds are {', '.join(sorted(self._sources))}"
            )
        return source

    # -- the Sink the sources hand their findings to -----------------------------------------------
    def submit(
        self, source: str, collection: str, upserts: list[NewDocument], deletions: list[tuple[str, str]]
    ) -> str | None:
        """One ingest job: upserts first, then deletions ((source_id, source_kind) pairs)."""
        if not upserts and not deletions:
            return None
        self.catalog.ensure_collection(collection)
        limits = self.settings.limits
        items = [make_job_item(i, collection, doc, False, limits) for i, doc in enumerate(upserts)]
        items += [
            delete_item(len(items) + i, collection, sid, kind) for i, (sid, kind) in enumerate(deletions)
        ]
        job_id = self.jobs.create("ingest", collection, items, source=source)
        # A source handing in changes is syncing (the drop folder and GitHub have no sync jobs).
        self.store.sync_started(source)
        self.signal(job_id)
        log.info(
            "source changes submitted",
            extra={
                "source": source,
                "job_id": job_id,
                "collection": collection,
                "upserts": len(upserts),
                "deletions": len(deletions),
            },
        )
        return job_id

    def known_files(self, source: str) -> dict[str, KnownFile]:
        return self.store.known_files(source)

    def record_files(self, source: str, seen: Sequence[KnownFile], gone: Sequence[str]) -> None:
        self.store.record_files(source, seen, gone)

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
        return self.store.quarantine(source, path, collection, kind, reason, size_bytes, content_hash)

    def release(self, source: str, path: str) -> None:
        self.store.release(source, path)

    def release_missing(self, source: str, collection: str, present: set[str]) -> None:
        self.store.release_missing(source, collection, present)

    def count_secret(self, pattern: str) -> None:
        self.metrics.count_secret("file", pattern)

    # -- what the ingest jobs report back ---------------------------------------------------------
    def on_outcome(self, job: Job, item: WorkItem, outcome: ItemOutcome) -> None:
        """Quarantine what a source handed in and could not be ingested; release it once it is."""
        for kind, count in outcome.redactions.items():
            self.metrics.count_secret("chunk", kind, count)
        source = job.source
        path = item.metadata.get("path")
        if not source or path is None or item.action == "delete":
            return
        # The drop folder knows its files by "<collection>/<path>": one folder feeds every collection.
        key = f"{job.collection}/{path}" if source == dropfolder.SOURCE else path
        if outcome.state == "failed":
            reason = outcome.error or "failed"
            self.store.quarantine(source, key, job.collection, "failed", reason, len(item.content))
        else:
            self.store.release(source, key)

    def on_job_finished(self, job: Job) -> None:
        source = job.source
        if not source:
            return
        created = datetime.fromisoformat(job.created_at)
        # The source list keeps the last change's lag; the gauge reads 0 once a source is caught up.
        self.store.record_lag(source, (datetime.now(UTC) - created).total_seconds())
        if not [j for j in self.jobs.active_for_source(source, "ingest") if j != job.id]:
            self.metrics.set_ingestion_lag(source, 0.0)
        if source == dropfolder.SOURCE or source == GITHUB_SOURCE:
            self.store.sync_succeeded(source)

    # -- registry -------------------------------------------------------------------------------
    def add(
        self,
        kind: str,
        name: str,
        collection: str,
        location: str,
        schedule: str = "manual",
        options: Mapping | None = None,
    ) -> records.Source:
        check_source_name(name)
        check_collection_name(collection)
        schedule_interval(schedule)
        config = self._source(kind).validate(SourceConfig(location, dict(options or {})))
        source = self.store.create(name, kind, collection, config.location, dict(config.options), schedule)
        self.catalog.ensure_collection(collection)
        return source

    def remove(self, name: str, delete_documents: bool = False) -> RemovedSource:
        source = self.store.get(name)
        if source.kind in _SETTINGS_KINDS:
            raise InvalidInput(f"source {name!r} is built in ({source.kind}); it is configured in settings")
        job_id = None
        if delete_documents:
            kind = self._source(source.kind)
            by_collection: dict[str, list[tuple[str, str]]] = {}
            for f in self.store.known_files(name).values():
                by_collection.setdefault(f.collection, []).append((kind.source_id(name, f.path), kind.kind))
            for collection, deletions in by_collection.items():
                job_id = self.submit(name, collection, [], deletions)
        self.store.delete(name)
        return RemovedSource(**msgspec.structs.asdict(source), deleted_documents_job=job_id)

    def request_sync(self, name: str) -> str:
        record = self.store.record(name)
        if record.kind == DropFolder.kind:
            # Watched and scanned all along: asking only makes the next scan come at once.
            if self.watcher is None:
                raise InvalidInput("the drop folder is disabled")
            self.watcher.poke()
            return ""
        if record.kind not in self._sources:
            raise InvalidInput(f"source {name!r} ({record.kind}) is synced by its deliveries")
        # Check and create under one lock: a scheduler tick, the API and a webhook asking at the
        # same moment must queue one sync, not two racing from the same cursor.
        with self._sync_request_lock:
            if active := self.jobs.active_for_source(name, "sync"):
                return active[0]
            job_id = self.jobs.create("sync", record.collection, [], source=name)
        self.signal(job_id)
        return job_id

    def run_sync(self, job: Job) -> None:
        name = job.source
        try:
            record = self.store.record(name)
        except NotFound:
            self.jobs.finish(job.id, "failed", f"source {name!r} was removed")
            return
        self.store.sync_started(name)
        try:
            result = self._source(record.kind).sync(record, self)
        except Exception as exc:  # one broken repository must not stop the scheduler or the server
            detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
            log.warning("source sync failed", extra={"source": name, "error": detail})
            self.store.sync_failed(name, detail)
            self.jobs.finish(job.id, "failed", detail)
            return
        self.store.sync_succeeded(name, result.cursor)
        self.jobs.finish(job.id, "succeeded", None, result.report)

    def schedule_tick(self) -> list[str]:
        """Called every minute by Huey's periodic task: queue the syncs that are due."""
        started = []
        for name in self.store.due(datetime.now(UTC)):
            try:
                started.append(self.request_sync(name))
            except Exception:
                log.exception("scheduled sync could not start", extra={"source": name})
        return started

    def list(self, collections: list[str] | None) -> list[records.Source]:
        return self.store.list(collections)

    def quarantined(
        self, collections: list[str] | None, source: str | None, limit: int
    ) -> list[QuarantinedFile]:
        return self.store.quarantined(collections, source, limit)

    # -- GitHub deliveries -------------------------------------------------------------------------
    def _github_secret(self) -> bytes:
        hooks = self.settings.webhooks
        if hooks.github_secret:
            return hooks.github_secret.encode()
        if hooks.github_secret_file:
            try:
                return Path(hooks.github_secret_file).read_text().strip().encode()
            except OSError as exc:
                log.error("webhook secret file unreadable", extra={"error": str(exc)})
        raise Unauthorized("GitHub webhooks are not enabled on this appliance (set webhooks.github_secret)")

    def github_delivery(self, headers: Mapping[str, str], body: bytes) -> dict:
        from appliance.ingest.sources import github

        if len(body) > self.settings.webhooks.max_body_bytes:
            raise PayloadTooLarge(
                f"webhook body of {len(body)} bytes exceeds {self.settings.webhooks.max_body_bytes}"
            )
        github.verify_signature(
            self._github_secret(), body, headers.get("x-hub-signature-256"), headers.get("x-hub-signature")
        )
        event = headers.get("x-github-event") or ""
        delivery = headers.get("x-github-delivery") or ""
        if not event or not delivery:
            raise InvalidInput("X-GitHub-Event and X-GitHub-Delivery headers are required")
        payload = github.parse_payload(body)
        with self._webhook_lock:
            if self.webhooks.delivered(delivery):
                return {"status": "duplicate", "delivery": delivery}
            result = self._github_event(github, event, payload)
            # Recorded after the work is durable: a crash in between means GitHub's redelivery is
            # processed again, which is idempotent; the reverse order could lose the event.
            self.webhooks.record_delivery(delivery, event, (payload.get("repository") or {}).get("full_name"))
        return {"delivery": delivery, "event": event, **result}

    def _github_event(self, github, event: str, payload: dict) -> dict:
        if event == "ping":
            return {"status": "pong"}
        if event == "push":
            push = github.push_event(payload)
            if push.deleted or push.branch is None:
                return {"status": "ignored", "reason": f"{push.ref} was deleted or is not a branch"}
            names = [
                r.name
                for r in self.store.records(GitSource.kind)
                if GitSource.matches_repo(r, push.repo, push.name, push.branch)
            ]
            if not names:
                return {"status": "ignored", "reason": f"no git source is mapped to {push.repo} ({push.ref})"}
            return {"status": "sync queued", "jobs": [self.request_sync(n) for n in names]}
        key = github.item_key(event, payload)
        if key is None:
            return {"status": "ignored", "reason": f"event {event!r} is not indexed"}
        repo, kind, number = key
        collection = self._github_collection(repo)
        source_id = github.source_id_for(repo, kind, number)
        state = github.merge_event(self.webhooks.item_state(source_id), event, payload)
        self.webhooks.save_item(source_id, collection, state)
        self.store.ensure(GITHUB_SOURCE, GITHUB_SOURCE, self.settings.webhooks.github_collection, "webhook")
        if state.get("deleted"):
            job_id = self.submit(GITHUB_SOURCE, collection, [], [(source_id, "github")])
            return {"status": "deleted", "source_id": source_id, "job_id": job_id}
        title, text, metadata = github.render_item(state)
        doc = NewDocument(
            source_id=source_id,
            title=title,
            text=text,
            filename=f"{kind}-{number}.md",
            uri=state.get("url"),
            source_kind="github",
            metadata=metadata,
        )
        job_id = self.submit(GITHUB_SOURCE, collection, [doc], [])
        return {"status": "indexed", "source_id": source_id, "job_id": job_id}

    def _github_collection(self, repo: str) -> str:
        for record in self.store.records(GitSource.kind):
            if record.config.get("github_repo", "").lower() == repo.lower():
                return record.collection
        return self.settings.webhooks.github_collection
