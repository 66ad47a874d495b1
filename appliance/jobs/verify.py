"""Runs one chunk-verification job: checks stored documents against their sources, optionally queues repairs."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from appliance.db.catalog import Catalog
from appliance.db.jobs import JobStore, WorkItem
from appliance.ingest.verify import ChunkVerifier, SourceCopy

log = logging.getLogger(__name__)


def run_verify_job(
    job_id: str,
    jobs: JobStore,
    catalog: Catalog,
    verifier: ChunkVerifier,
    owner: str,
    lease_seconds: float,
    signal: Callable[[str], None],
) -> None:
    """The job's summary holds its options ({"repair": bool}) when queued and the report when done.
    Interrupted, it simply runs again from the start: verification writes nothing until the end."""
    token = jobs.claim(job_id, owner, lease_seconds)
    if token is None:
        return
    job = jobs.get(job_id)
    options = (job.summary or {}).get("options", {})
    try:
        documents = verifier.documents(job.collection)
        jobs.set_progress(job_id, len(documents), 0)

        def progress(n: int) -> None:
            jobs.set_progress(job_id, len(documents), n)
            jobs.renew(job_id, token, lease_seconds)

        sources: dict[str, SourceCopy] = {}
        report = verifier.verify(documents, progress, sources)
        summary = {"options": options, **report.as_dict(), "repair_jobs": []}
        if options.get("repair") and sources:
            summary["repair_jobs"] = _queue_repairs(jobs, catalog, sources, signal)
    except Exception as exc:
        log.exception("chunk verification failed", extra={"job_id": job_id})
        jobs.finish(job_id, "failed", f"{type(exc).__name__}: {exc}", token=token)
        return
    log.info("chunk verification finished", extra={"job_id": job_id, "counts": summary["counts"]})
    jobs.finish(job_id, "succeeded", None, summary, token=token)


def _queue_repairs(
    jobs: JobStore, catalog: Catalog, sources: dict[str, SourceCopy], signal: Callable[[str], None]
) -> list[str]:
    """One ingest job per collection that chunks and embeds each damaged document again from its
    source bytes (kept in the job, so the repair itself survives a crash)."""
    by_collection: dict[str, list[WorkItem]] = defaultdict(list)
    for document_id, copy in sources.items():
        doc = catalog.get_document(document_id)
        items = by_collection[doc.collection]
        items.append(
            WorkItem(
                ordinal=len(items),
                document_id=document_id,
                source_id=doc.source_id,
                source_kind=doc.source_kind,
                uri=doc.uri,
                title=doc.title,
                filename=copy.filename,
                content=copy.content or b"",
                metadata=doc.metadata or {},
                action="reingest",
            )
        )
    job_ids = []
    for collection, items in sorted(by_collection.items()):
        job_id = jobs.create("ingest", collection, items)
        signal(job_id)
        job_ids.append(job_id)
    return job_ids
