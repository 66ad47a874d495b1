"""Two job workers writing the same rows (issue 10's audit): leases per run, versions per document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk
from appliance.db.jobs import JobStore, WorkItem
from appliance.document import Chunk, Location
from appliance.errors import Conflict


def _record(text_hash: str, submitted_at: datetime) -> DocumentRecord:
    return DocumentRecord(
        "doc-1", "c", "a.md", "api", None, "A", text_hash, "text/markdown", 10, {}, submitted_at=submitted_at
    )


def _chunks(text: str) -> list[EmbeddedChunk]:
    return [EmbeddedChunk(Chunk(0, text, Location(), 3), np.ones(4, dtype=np.float32))]


def test_an_older_version_finishing_last_does_not_overwrite_the_newer_one(db):
    catalog = Catalog(db)
    catalog.ensure_collection("c")
    now = datetime.now(UTC)
    assert catalog.replace_document(_record("sha256:v2", now), _chunks("version two")) is not None
    # The job that carried version one was created earlier and ends later: it is superseded.
    assert (
        catalog.replace_document(_record("sha256:v1", now - timedelta(seconds=5)), _chunks("version one"))
        is None
    )
    assert [c.text for c in catalog.chunks_of("doc-1")] == ["version two"]
    assert catalog.document_hash("doc-1") == "sha256:v2"
    # A later submission still replaces it.
    assert (
        catalog.replace_document(_record("sha256:v3", now + timedelta(seconds=1)), _chunks("three"))
        is not None
    )
    assert [c.text for c in catalog.chunks_of("doc-1")] == ["three"]


def test_a_twin_is_copied_with_the_text_of_the_hash_it_was_found_by(db):
    catalog = Catalog(db)
    catalog.ensure_collection("c")
    catalog.replace_document(_record("sha256:same", datetime.now(UTC)), _chunks("the shared text"))
    found = catalog.embedded_copy("sha256:same", "doc-other")
    assert found is not None and [e.chunk.text for e in found[1]] == ["the shared text"]
    assert catalog.embedded_copy("sha256:other", "doc-other") is None
    assert catalog.embedded_copy("sha256:same", "doc-1") is None  # never itself


def _item(n: int) -> WorkItem:
    return WorkItem(n, f"doc-{n}", f"s{n}", "api", None, None, None, b"x", {})


def test_a_run_whose_job_was_cancelled_and_retried_loses_its_lease(db):
    jobs = JobStore(db)
    job_id = jobs.create("ingest", "c", [_item(0), _item(1)])
    first = jobs.claim(job_id, "instance", 60)
    assert first and first.startswith("instance:")
    assert jobs.claim(job_id, "instance", 60) is None  # running under this process: not claimed twice
    assert jobs.renew(job_id, first, 60)
    jobs.finish_item(job_id, 0, "failed", "boom")
    jobs.cancel(job_id)
    assert not jobs.renew(job_id, first, 60)  # cancelled: the first run stops at its next group
    jobs.retry(job_id)
    second = jobs.claim(job_id, "instance", 60)
    assert second and second != first
    assert not jobs.renew(job_id, first, 60) and jobs.renew(job_id, second, 60)
    jobs.finish(job_id, "failed", "from the first run", token=first)  # ignored: not its lease any more
    assert jobs.get(job_id).state == "running"
    jobs.finish(job_id, "succeeded", token=second)
    assert jobs.get(job_id).state == "succeeded"


def test_a_previous_process_lease_is_taken_over_at_start(db):
    jobs = JobStore(db)
    job_id = jobs.create("ingest", "c", [_item(0)])
    old = jobs.claim(job_id, "old-process", 60)
    new = jobs.claim(job_id, "new-process", 60)  # a restart: another instance id
    assert old and new and new.startswith("new-process:")
    assert not jobs.renew(job_id, old, 60)


def test_a_second_retry_of_the_same_job_is_refused(db):
    jobs = JobStore(db)
    job_id = jobs.create("ingest", "c", [_item(0)])
    token = jobs.claim(job_id, "i", 60)
    jobs.finish_item(job_id, 0, "failed", "boom")
    jobs.finish(job_id, "failed", "every document failed", token=token)
    assert jobs.retry(job_id).state == "queued"
    with pytest.raises(Conflict):
        jobs.retry(job_id)


def test_a_cancel_racing_a_worker_is_never_lost(db):
    """DuckDB 2.0.0 lets a plain UPDATE and an UPDATE ... RETURNING of one row both commit (no
    write-write conflict): a cancel that raced the worker's claim came back as running (CI, stop
    26). The database's one-writer lock must keep every cancel."""
    import threading

    store = JobStore(db)
    lost = []
    for trial in range(80):
        items = [WorkItem(i, f"d{i}", f"s{i}", "api", None, None, None, b"x", {}) for i in range(20)]
        job_id = store.create("ingest", None, items)

        def work(job_id: str = job_id, items: list[WorkItem] = items) -> None:
            if store.claim(job_id, "inst", 30) is not None:
                for item in items[:10]:
                    store.finish_item(job_id, item.ordinal, "done")

        worker = threading.Thread(target=work)
        worker.start()
        answered = store.cancel(job_id).state
        worker.join()
        if answered != "cancelled" or store.get(job_id).state != "cancelled":
            lost.append((trial, answered, store.get(job_id).state))
    assert lost == []


def test_a_row_write_outside_a_transaction_is_refused(db):
    from appliance.db.connection import WriteOutsideTransaction

    with pytest.raises(WriteOutsideTransaction):
        db.execute("INSERT INTO collections (name) VALUES ('x')")
    assert db.write("INSERT INTO collections (name) VALUES ('x') RETURNING name") == [("x",)]
    assert db.fetchall("SELECT name FROM collections WHERE name = 'x'") == [("x",)]


def test_a_thread_that_ended_leaves_no_cursor_open(db):
    import threading

    db.fetchall("SELECT 1")
    before = db.open_cursors
    for _ in range(5):
        worker = threading.Thread(
            target=lambda: db.write("INSERT INTO collections (name) VALUES (uuid()::VARCHAR)")
        )
        worker.start()
        worker.join()
    assert db.open_cursors == before
    assert db.fetchone("SELECT count(*) FROM collections")[0] == 5
