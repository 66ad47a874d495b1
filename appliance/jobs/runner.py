"""Runs one ingest job: claims its lease, applies its pending items in groups, records outcomes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import msgspec

from appliance.db.catalog import Catalog
from appliance.db.jobs import ItemResult, JobStore, WorkItem
from appliance.errors import NotFound
from appliance.index.sync import IndexSync
from appliance.ingest.pipeline import IngestPipeline, ItemOutcome, PreparedGroup
from appliance.observability.metrics import Metrics
from appliance.records import Job

log = logging.getLogger(__name__)

# Documents prepared and embedded together, up to this many bytes of content (always at least
# one). Short documents need hundreds per group: the embedder sorts a call's texts by length
# into batches, and MiniLM embedded groups of 32 MS MARCO passages at 57/s, of 256 at 96/s.
JOB_GROUP = 256
JOB_GROUP_BYTES = 4 << 20

# Told about every item's outcome (sources keep their quarantine and file state with it).
OutcomeHook = Callable[[Job, WorkItem, ItemOutcome], None]


def _delete(catalog: Catalog, item: WorkItem) -> ItemOutcome:
    try:
        catalog.delete_document(item.document_id)
    except NotFound:
        return ItemOutcome(item.ordinal, "unchanged")  # already gone: deleting twice is a no-op
    return ItemOutcome(item.ordinal, "done")


def _record(
    jobs: JobStore,
    job: Job,
    items: list[WorkItem],
    outcomes: list[ItemOutcome],
    stop: threading.Event,
    metrics: Metrics,
    on_outcome: OutcomeHook | None,
) -> None:
    if stop.is_set():
        # Shutting down mid-group: a failure now may be the parser sandbox closing under us,
        # not the document. Leave failed items pending; they run again at the next start.
        outcomes = [o for o in outcomes if o.state != "failed"]
    jobs.finish_items(job.id, [ItemResult(o.ordinal, o.state, o.error, o.chunks) for o in outcomes])
    by_ordinal = {it.ordinal: it for it in items}
    for outcome in outcomes:
        metrics.add_chunks_indexed(outcome.chunks)
        if outcome.reused:
            metrics.add_chunks_reused(outcome.chunks)
        if outcome.error:
            log.warning("document failed", extra={"job_id": job.id, "error": outcome.error})
        if on_outcome is not None:
            on_outcome(job, by_ordinal[outcome.ordinal], outcome)


def run_ingest_job(
    job_id: str,
    jobs: JobStore,
    pipeline: IngestPipeline,
    sync: IndexSync,
    owner: str,
    lease_seconds: float,
    stop: threading.Event,
    metrics: Metrics,
    on_outcome: OutcomeHook | None = None,
    on_finished: Callable[[Job], None] | None = None,
) -> None:
    """Safe to call twice for one job: the lease decides who runs it. Items already finished are
    skipped, so a job interrupted by a crash resumes where it stood. Within a group, upserts go
    before deletions, so a file moved in one scan reuses its embeddings instead of recomputing."""
    token = jobs.claim(job_id, owner, lease_seconds)
    if token is None:
        return
    try:
        job = jobs.get(job_id)
        log.info("job started", extra={"job_id": job_id, "total": job.progress.total})
        submitted = datetime.fromisoformat(job.created_at)

        def prepare(after: int | None) -> tuple[list[WorkItem], PreparedGroup | None]:
            items = jobs.pending_items(job_id, JOB_GROUP, JOB_GROUP_BYTES, after=after)
            upserts = [it for it in items if it.action != "delete"]
            return items, pipeline.prepare(job.collection, upserts, submitted) if upserts else None

        # One group ahead: the next group is parsed and chunked while this one is embedded (the
        # embedder waits for nothing but its own lock). Leaving the block waits for it.
        with ThreadPoolExecutor(1, thread_name_prefix="ingest-prepare") as ahead:
            upcoming = ahead.submit(prepare, None)
            while not stop.is_set():
                # Each group renews the lease first: a job cancelled (and perhaps retried on another
                # worker) since the last group is no longer this run's.
                if not jobs.renew(job_id, token, lease_seconds):
                    log.info("job cancelled or taken over; this run stops", extra={"job_id": job_id})
                    return
                items, group = upcoming.result()
                if not items:
                    break
                upcoming = ahead.submit(prepare, items[-1].ordinal)
                outcomes = pipeline.embed_and_write(group) if group is not None else []
                outcomes += [_delete(pipeline.catalog, it) for it in items if it.action == "delete"]
                _record(jobs, job, items, outcomes, stop, metrics, on_outcome)
                sync.apply_pending()
                # Lag: from the moment a change was accepted to the moment it became searchable.
                label = job.source or next(iter({item.source_kind for item in items}))
                metrics.set_ingestion_lag(label, (datetime.now(UTC) - submitted).total_seconds())
        if stop.is_set():
            return  # shutting down: the job stays running and is resumed at next start
        progress = jobs.get(job_id).progress
        if progress.total and progress.failed == progress.total:
            jobs.finish(
                job_id, "failed", "every document failed; see the job's items for reasons", token=token
            )
        else:
            error = f"{progress.failed} of {progress.total} documents failed" if progress.failed else None
            jobs.finish(job_id, "succeeded", error, token=token)
        log.info("job finished", extra={"job_id": job_id, **msgspec.structs.asdict(progress)})
        if on_finished is not None:
            on_finished(job)
    except Exception as exc:
        log.exception("job crashed", extra={"job_id": job_id})
        jobs.finish(job_id, "failed", f"internal error: {type(exc).__name__}: {exc}", token=token)
