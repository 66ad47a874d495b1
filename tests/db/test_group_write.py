"""A group of documents written in one transaction: what one-at-a-time writes did, row for row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk, EmbedderMoved
from appliance.db.connection import Database
from appliance.db.jobs import ItemResult, JobStore, WorkItem
from appliance.document import Chunk, Location

NOW = datetime.now(UTC)


@pytest.fixture
def catalog(db):
    catalog = Catalog(db)
    catalog.ensure_collection("c")
    return catalog


def _doc(doc_id: str, digest: str, at: datetime = NOW, **metadata) -> DocumentRecord:
    return DocumentRecord(
        doc_id, "c", f"{doc_id}.md", "api", None, doc_id.upper(), digest, "text/markdown", 9, metadata, at
    )


def _chunks(*texts: str, located: bool = False) -> list[EmbeddedChunk]:
    rng = np.random.default_rng(len(texts))
    return [
        EmbeddedChunk(
            Chunk(
                i,
                text,
                Location(
                    page=i + 1,
                    heading_path=("Guide", f"Part {i}"),
                    line_start=i * 10 + 1,
                    line_end=i * 10 + 9,
                )
                if located
                else Location(),
                len(text.split()),
            ),
            rng.standard_normal(8).astype(np.float32),
        )
        for i, text in enumerate(texts)
    ]


def _outbox(db: Database) -> list[tuple[str, int]]:
    return [
        (op, chunk_id) for op, chunk_id in db.fetchall("SELECT op, chunk_id FROM index_outbox ORDER BY seq")
    ]


def test_a_group_stores_every_document_with_its_chunks_locations_and_vectors(catalog, db):
    a, b = _chunks("alpha one", "alpha two", located=True), _chunks("beta")
    ids = catalog.replace_documents([(_doc("a", "sha256:a", team="x"), a), (_doc("b", "sha256:b"), b)])
    assert [len(i) for i in ids] == [2, 1] and ids[0] == sorted(ids[0]) and max(ids[0]) < ids[1][0]
    stored = catalog.chunks_of("a")
    assert [c.text for c in stored] == ["alpha one", "alpha two"]
    assert stored[1].location.page == 2 and stored[1].location.heading_path == ["Guide", "Part 1"]
    assert (stored[1].location.line_start, stored[1].location.line_end) == (11, 19)
    assert catalog.chunks_of("b")[0].location.page is None
    vector = db.fetchone("SELECT embedding FROM chunks WHERE id = ?", [ids[0][1]])[0]
    assert np.allclose(vector, a[1].embedding)
    title, metadata = db.fetchone("SELECT title, metadata FROM documents WHERE id = 'a'")
    assert (title, json.loads(metadata)) == ("A", {"team": "x"})
    assert _outbox(db) == [("upsert", i) for i in ids[0] + ids[1]]


def test_replacing_queues_deletes_for_the_old_chunks_and_the_same_id_twice_ends_with_the_later(catalog, db):
    (old,) = catalog.replace_documents([(_doc("a", "sha256:v1"), _chunks("one", "two"))])
    ids = catalog.replace_documents(
        [(_doc("a", "sha256:v2"), _chunks("second")), (_doc("a", "sha256:v3"), _chunks("third", "fourth"))]
    )
    assert [c.text for c in catalog.chunks_of("a")] == ["third", "fourth"]
    assert catalog.document_hash("a") == "sha256:v3"
    deleted = [chunk_id for op, chunk_id in _outbox(db) if op == "delete"]
    assert deleted == old + ids[0]  # v1's chunks, then v2's, each replaced in turn
    assert db.fetchone("SELECT count(*) FROM chunks")[0] == 2


def test_a_version_submitted_earlier_is_skipped_and_the_rest_of_the_group_written(catalog):
    catalog.replace_documents([(_doc("a", "sha256:new", NOW), _chunks("new text"))])
    ids = catalog.replace_documents(
        [
            (_doc("a", "sha256:old", NOW - timedelta(seconds=5)), _chunks("old text")),
            (_doc("b", "sha256:b"), _chunks("b")),
        ]
    )
    assert ids[0] is None and len(ids[1]) == 1
    assert [c.text for c in catalog.chunks_of("a")] == ["new text"]


def test_an_embedder_switch_leaves_the_whole_group_unwritten(catalog, db):
    with pytest.raises(EmbedderMoved):
        catalog.replace_documents(
            [(_doc("a", "sha256:a"), _chunks("a")), (_doc("b", "sha256:b"), _chunks("b"))], 7
        )
    assert db.fetchone("SELECT count(*) FROM documents")[0] == 0 and _outbox(db) == []


def test_one_collection_per_group(catalog):
    other = DocumentRecord("z", "other", "z", "api", None, "Z", "sha256:z", "text/plain", 1, {}, NOW)
    with pytest.raises(ValueError, match="one collection"):
        catalog.replace_documents([(_doc("a", "sha256:a"), _chunks("a")), (other, _chunks("z"))])


def test_pending_items_come_in_groups_bounded_by_count_and_bytes(db):
    jobs = JobStore(db)
    sizes = [10, 600, 10, 10, 5000, 10]
    items = [
        WorkItem(i, f"d{i}", f"s{i}", "api", None, None, None, b"x" * n, {"i": i})
        for i, n in enumerate(sizes)
    ]
    job_id = jobs.create("ingest", "c", items)
    assert [it.ordinal for it in jobs.pending_items(job_id, 100)] == [0, 1, 2, 3, 4, 5]
    assert [it.ordinal for it in jobs.pending_items(job_id, 3)] == [0, 1, 2]
    # The item that crosses the budget is the group's last; one alone over it still goes.
    assert [it.ordinal for it in jobs.pending_items(job_id, 100, max_bytes=500)] == [0, 1]
    assert [it.ordinal for it in jobs.pending_items(job_id, 100, max_bytes=100, after=3)] == [4]
    first = jobs.pending_items(job_id, 1)[0]
    assert (first.content, first.metadata, first.action) == (b"x" * 10, {"i": 0}, "upsert")

    jobs.finish_items(
        job_id, [ItemResult(0, "done", chunks=1), ItemResult(1, "failed", "bad"), ItemResult(2, "unchanged")]
    )
    jobs.finish_items(job_id, [ItemResult(0, "done", chunks=1)])  # a second finish of an item does not count
    progress = jobs.get(job_id).progress
    assert (progress.indexed, progress.failed, progress.unchanged, progress.processed) == (1, 1, 1, 3)
    assert [it.ordinal for it in jobs.pending_items(job_id, 100)] == [3, 4, 5]
    kept = {i.ordinal: i for i in jobs.items(job_id)}
    assert kept[1].error == "bad" and kept[0].chunks == 1
    # A failed item keeps its bytes for a retry; a finished one drops them.
    assert db.fetchall(
        "SELECT ordinal FROM job_items WHERE job_id = ? AND content IS NULL ORDER BY ordinal", [job_id]
    ) == [(0,), (2,)]
