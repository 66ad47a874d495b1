"""Runs one ingest job: claims its lease, ingests its pending items in groups, records outcomes."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from appliance.db.jobs import JobStore
from appliance.index.sync import IndexSync
from appliance.ingest.pipeline import IngestPipeline
from appliance.observability.metrics import Metrics

log = logging.getLogger(__name__)

JOB_GROUP = 32  # documents prepared and embedded together


def run_ingest_job(job_id: str, jobs: JobStore, pipeline: IngestPipeline, sync: IndexSync, owner: str,
                   lease_seconds: float, stop: threading.Event, metrics: Metrics) -> None:
    """Safe to call twice for one job: the lease decides who runs it. Items already finished are
    skipped, so a job interrupted by a crash resumes where it stood."""
    if not jobs.claim(job_id, owner, lease_seconds):
        return
    try:
        job = jobs.get(job_id)
        log.info("job started", extra={"job_id": job_id, "total": job["progress"]["total"]})
        while not stop.is_set():
            items = jobs.pending_items(job_id, JOB_GROUP)
            if not items:
                break
            for outcome in pipeline.ingest(job["collection"], items):
                jobs.finish_item(job_id, outcome.ordinal, outcome.state, outcome.error, outcome.chunks)
                metrics.add_chunks_indexed(outcome.chunks)
                if outcome.error:
                    log.warning("document failed", extra={"job_id": job_id, "error": outcome.error})
            sync.apply_pending()
            # Lag: from the moment a document was accepted to the moment it became searchable.
            created = datetime.fromisoformat(job["created_at"])
            for kind in {item.source_kind for item in items}:
                metrics.set_ingestion_lag(kind, (datetime.now(UTC) - created).total_seconds())
            jobs.renew(job_id, owner, lease_seconds)
        if stop.is_set():
            return  # shutting down: the job stays running and is resumed at next start
        progress = jobs.get(job_id)["progress"]
        if progress["total"] and progress["failed"] == progress["total"]:
            jobs.finish(job_id, "failed", "every document failed; see the job's items for reasons")
        else:
            error = f"{progress['failed']} of {progress['total']} documents failed" if progress["failed"] else None
            jobs.finish(job_id, "succeeded", error)
        log.info("job finished", extra={"job_id": job_id, **progress})
    except Exception as exc:
        log.exception("job crashed", extra={"job_id": job_id})
        jobs.finish(job_id, "failed", f"internal error: {type(exc).__name__}: {exc}")
