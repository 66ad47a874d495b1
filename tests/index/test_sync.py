"""IndexSync against a real DuckDB outbox and a real Tantivy index: pausing holds every index still;
a rebuild reports its progress."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk
from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.document import Chunk, Location
from appliance.index import sync as sync_module
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.sync import IndexSync


@pytest.fixture
def world(tmp_path):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    index = TantivyKeywordIndex(tmp_path / "bm25")
    sync = IndexSync(db, [index])
    sync.reconcile()
    yield Catalog(db), index, sync
    index.close()
    db.close()


def store(catalog: Catalog, doc_id: str, text: str) -> None:
    catalog.ensure_collection("c")
    record = DocumentRecord(
        doc_id, "c", f"{doc_id}.md", "api", None, doc_id, f"sha256:{doc_id}", "text/markdown", len(text), {}
    )
    catalog.replace_document(
        record, [EmbeddedChunk(Chunk(0, text, Location(), 3), np.ones(4, dtype=np.float32))]
    )


def outbox_rows(catalog: Catalog) -> int:
    return catalog.db.fetchone("SELECT count(*) FROM index_outbox")[0]


def test_paused_applies_nothing_until_it_ends(world):
    catalog, index, sync = world
    store(catalog, "a", "glaciers retreat every summer")
    sync.apply_pending()
    assert index.count() == 1
    store(catalog, "b", "sourdough starters ferment flour")
    store(catalog, "c", "invoices paid by bank transfer")
    pending, committed = outbox_rows(catalog), index.applied_seq()

    applier = threading.Thread(target=sync.flush)
    with sync.paused():
        applier.start()
        applier.join(timeout=0.5)
        # Held: the flush waits, the index does not move and the outbox keeps its rows.
        assert applier.is_alive()
        assert index.count() == 1 and outbox_rows(catalog) == pending
        assert index.applied_seq() == committed
    applier.join()
    assert index.count() == 3
    assert outbox_rows(catalog) < pending  # compacted once the flush made everything durable


def test_status_answers_while_an_apply_holds_the_indexes(world):
    catalog, index, sync = world
    store(catalog, "a", "glaciers retreat every summer")
    sync.apply_pending()
    settled = sync.status()[index.name]
    assert settled["count"] == 1 and settled["settled"] is True
    answers: list[dict] = []
    with sync.paused():  # as a long apply would: the readiness probe must still get an answer
        reader = threading.Thread(target=lambda: answers.append(sync.status()))
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive()
    assert answers[0][index.name]["settled"] is False
    assert answers[0][index.name]["count"] == 1


def test_a_rebuild_reports_progress_in_the_log_and_its_file_then_removes_the_file(
    tmp_path, monkeypatch, caplog
):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    catalog = Catalog(db)
    for n in range(5):
        store(catalog, f"d{n}", f"document number {n} about lighthouses")
    progress = tmp_path / "rebuild-progress.json"
    seen = []

    class Watching(TantivyKeywordIndex):
        def upsert(self, chunks):  # after each batch: what the progress file says by now
            super().upsert(chunks)
            seen.append(progress.read_text() if progress.exists() else None)

    monkeypatch.setattr(sync_module, "BATCH", 2)
    monkeypatch.setattr(sync_module, "REBUILD_LOG_EVERY_S", 0.0)
    watched = Watching(tmp_path / "bm25")
    caplog.set_level("INFO", logger="appliance.index.sync")
    try:
        IndexSync(db, [watched], progress_path=progress).reconcile()
        assert watched.count() == 5
    finally:
        watched.close()
        db.close()
    # Batches of 2: reports after 2 and 4 chunks (each written after its batch, so the next sees it).
    reports = [json.loads(s) for s in seen if s]
    assert [(r["index"], r["chunks_done"], r["chunks"]) for r in reports] == [("bm25", 2, 5), ("bm25", 4, 5)]
    assert [r.chunks_done for r in caplog.records if r.msg == "rebuilding index"] == [2, 4, 5]
    assert not progress.exists()
