"""IndexSync against a real DuckDB outbox and a real Tantivy index: pausing holds every index still."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk
from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.document import Chunk, Location
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
