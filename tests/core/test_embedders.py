"""A collection's embedder, changed blue-green: the packaged MiniLM (384-d, the server's) to mpnet
(768-d, a registry version) re-embeds into a new generation while search goes on, passes or fails
its retrieval gate, switches atomically (ingestion and search follow), survives a restart, and
is confirmed or rolled back; bad references and callers get clear errors."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.db.catalog import DocumentRecord, EmbeddedChunk, EmbedderMoved
from appliance.db.keys import Principal
from appliance.document import Chunk, Location
from appliance.errors import Conflict, Forbidden, InvalidInput, NotFound
from appliance.index.spaces import generation_dir
from appliance.models import catalog
from appliance.ops.doctor import run_checks
from tests.inprocess import echo_appliance, ingest

DOCS = {
    "rockets": "Rockets launch satellites into orbit with powerful boosters and liquid fuel.",
    "pasta": "Cook pasta in plenty of salted boiling water and stir it now and then.",
    "garden": "Water the vegetable garden early in the morning during hot summer weeks.",
    "bees": "Honey bees live in hives and make honey from the nectar of flowers.",
    "trains": "High-speed trains run on electrified rails between the big cities.",
    "violin": "A violin has four strings and is played with a bow made of horsehair.",
}
QUESTIONS = [
    ("How do rockets reach orbit?", "rockets"),
    ("How should I cook pasta?", "pasta"),
    ("When should a garden be watered?", "garden"),
    ("Where does honey come from?", "bees"),
    ("How many strings does a violin have?", "violin"),
]
MPNET = "mpnet-test"


def _register_mpnet(app, path: Path) -> None:
    app.registry.registry.register_pinned(
        MPNET,
        "embedding",
        "sentence-transformers",
        path,
        catalog.MPNET_WEIGHTS_SHA256,
        None,
        source="test",
        tags=["embedding"],
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory, mpnet_dir):
    app = echo_appliance(tmp_path_factory.mktemp("embedders") / "data")
    ingest(app, "docs", DOCS)
    ingest(app, "other", {"note": "Rockets and trains are both ways to travel far."})
    admin = app.access.system_scope()
    app.evals.create_qa_set(
        admin,
        "docs-questions",
        [{"question": q, "answers": [s], "gold": [s]} for q, s in QUESTIONS],
        collection="docs",
    )
    _register_mpnet(app, mpnet_dir)
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(app):
    return app.access.system_scope()


def _semantic(app, admin, query: str, collections=("docs",)) -> list[str]:
    hits = app.knowledge.search(admin, query, list(collections), top_k=3, mode="semantic", cache=False).hits
    return [h.source_id for h in hits]


def _stored_dimensions(app, collection: str) -> set[int]:
    rows = app.db.fetchall(
        "SELECT DISTINCT len(k.embedding) FROM chunks k JOIN documents d ON k.document_id = d.id "
        "WHERE d.collection = ?",
        [collection],
    )
    return {r[0] for r in rows}


def test_bad_references_and_callers_get_clear_errors(app, admin):
    with pytest.raises(NotFound, match="no model"):
        app.embedders.switch(admin, "docs", "no-such-model")
    chat = app.registry.default_chat()
    assert chat
    with pytest.raises(InvalidInput, match="not an embedding model"):
        app.embedders.switch(admin, "docs", chat)
    with pytest.raises(NotFound):
        app.embedders.switch(admin, "no-such-collection", MPNET)
    with pytest.raises(InvalidInput, match="min_gain"):
        app.embedders.switch(admin, "docs", MPNET, min_gain=5)
    with pytest.raises(Conflict, match="already embeds"):
        app.embedders.switch(admin, "docs", "all-MiniLM-L6-v2")
    with pytest.raises(Conflict, match="no switch waiting"):
        app.embedders.confirm(admin, "docs")
    with pytest.raises(Conflict, match="no earlier embedder"):
        app.embedders.rollback(admin, "docs")
    user = app.access.scope(Principal(key_id="k1", name="reader", role="user", collections=("docs",)))
    with pytest.raises(Forbidden):
        app.embedders.switch(user, "docs", MPNET)


def test_a_failing_gate_leaves_the_collection_on_its_old_embedder(app, admin):
    before = _semantic(app, admin, "honey from flowers")
    # MiniLM already ranks every question's document first: nothing can gain 0.5 nDCG@10 on it.
    job = app.embedders.switch(admin, "docs", MPNET, min_gain=0.5)
    done = app.jobs.wait(job.id, timeout=300)
    assert done.state == "failed" and "gate failed" in done.error, done.error
    gate = done.summary["gate"]
    assert not gate["passed"] and gate["queries"] == len(QUESTIONS)
    assert gate["sources"] == ["docs-questions@1"] and gate["live"]["ndcg@10"] > 0.5
    # The paired difference and its interval say how sure the comparison is.
    low, high = gate["interval"]
    assert gate["ndcg_difference"] == pytest.approx(
        gate["candidate"]["ndcg@10"] - gate["live"]["ndcg@10"], abs=2e-4
    )
    assert low <= gate["ndcg_difference"] <= high and "95% interval" in gate["reason"]
    record = app.embedders.get(admin, "docs")
    assert record.live.generation == 0 and record.previous is None
    assert app.vector_spaces.index_for("docs") is app.vector_index
    assert app.embedder_store.generations("docs") == set()  # its staged vectors are gone
    assert not generation_dir(app.vector_spaces.root, "docs", done.summary["generation"]).exists()
    assert _stored_dimensions(app, "docs") == {384}
    assert _semantic(app, admin, "honey from flowers") == before


def test_a_passing_gate_switches_search_and_ingestion_to_the_new_generation_served_throughout(app, admin):
    answered, failures, stop = [], [], threading.Event()

    def keep_searching() -> None:
        while not stop.is_set():
            try:
                answered.append(_semantic(app, admin, "bees and honey"))
            except Exception as exc:  # any error while the job runs is the failure under test
                failures.append(exc)

    searcher = threading.Thread(target=keep_searching)
    searcher.start()
    try:
        job = app.embedders.switch(admin, "docs", MPNET)
        # Written while the job runs: embedded by whichever embedder is live when it is stored.
        ingest(app, "docs", {"comets": "Comets are icy bodies with glowing tails near the Sun."})
        done = app.jobs.wait(job.id, timeout=300)
    finally:
        stop.set()
        searcher.join()
    assert done.state == "succeeded", done.error
    assert failures == []
    wrong = [r for r in answered if not r or r[0] != "bees"]
    assert answered and wrong == []
    assert done.summary["gate"]["passed"] and done.summary["switched_to"] == f"{MPNET}@1"
    assert done.progress.total >= len(DOCS)

    record = app.embedders.get(admin, "docs")
    assert (record.live.resolved, record.live.dimensions) == (f"{MPNET}@1", 768)
    assert record.previous.generation == 0 and not record.confirmed
    generation, embedder = app.embedders.embedder_for("docs")
    assert generation == record.live.generation and embedder.dimensions == 768
    index = app.vector_spaces.index_for("docs")
    assert index is not app.vector_index and index.dimensions == 768
    assert _stored_dimensions(app, "docs") == {768}
    assert _stored_dimensions(app, "other") == {384}  # the other collection kept the server's
    assert _semantic(app, admin, "icy bodies with tails")[0] == "comets"
    # A search over both collections embeds the query once per embedder and merges.
    both = app.knowledge.search(admin, "honey bees", ["docs", "other"], top_k=10, mode="hybrid").hits
    assert {h.collection for h in both} == {"docs", "other"}
    # Written after the switch: embedded by mpnet, found in the new generation.
    ingest(app, "docs", {"tides": "Tides rise and fall twice a day because of the Moon."})
    assert _stored_dimensions(app, "docs") == {768}
    assert _semantic(app, admin, "why do tides rise and fall")[0] == "tides"
    assert app.sync.status()["vectors"]["count"] == app.catalog.chunk_count()
    # A write whose vectors the old embedder made (embedded before the switch) is refused whole.
    record = DocumentRecord(
        "late", "docs", "late.md", "upload", None, "Late", "sha256:0", "text/plain", 4, {}
    )
    vector = np.full(384, 0.05, dtype=np.float32)
    with pytest.raises(EmbedderMoved):
        app.catalog.replace_document(record, [EmbeddedChunk(Chunk(0, "late", Location(), 1), vector)], 0)
    assert "late.md" not in {d.source_id for d in app.knowledge.list_documents(admin, "docs").documents}


def test_rollback_restores_the_old_embedder_and_a_later_switch_can_be_confirmed(app, admin):
    record = app.embedders.get(admin, "docs")
    assert record.previous is not None, "runs after the passing switch"
    ingest(app, "docs", {"owls": "Owls hunt at night and see well in the dark."})
    back = app.embedders.rollback(admin, "docs")
    assert back.live.generation == 0 and back.previous is None
    assert app.vector_spaces.index_for("docs") is app.vector_index
    assert _stored_dimensions(app, "docs") == {384}
    assert not generation_dir(app.vector_spaces.root, "docs", record.live.generation).exists()
    # Kept vectors came back; chunks written under mpnet were embedded by MiniLM again.
    assert _semantic(app, admin, "birds that hunt at night")[0] == "owls"
    assert _semantic(app, admin, "why do tides rise and fall")[0] == "tides"

    job = app.embedders.switch(admin, "docs", MPNET, ungated=True)
    done = app.jobs.wait(job.id, timeout=300)
    assert done.state == "succeeded" and done.summary["gate"]["ungated"]
    kept = app.embedders.get(admin, "docs").previous.generation
    assert kept in app.embedder_store.generations("docs")
    confirmed = app.embedders.confirm(admin, "docs")
    assert confirmed.confirmed and confirmed.previous is None
    assert app.embedder_store.generations("docs") == set()
    with pytest.raises(Conflict):
        app.embedders.rollback(admin, "docs")


def test_a_switched_collection_reopens_on_its_generation_without_a_rebuild(tmp_path, mpnet_dir):
    data = tmp_path / "data"
    first = echo_appliance(data)
    try:
        ingest(first, "docs", DOCS)
        _register_mpnet(first, mpnet_dir)
        admin = first.access.system_scope()
        done = first.jobs.wait(first.embedders.switch(admin, "docs", MPNET, ungated=True).id, timeout=300)
        assert done.state == "succeeded", done.error
    finally:
        first.close()
    # Stopped, `appliance doctor` counts the collection's own index with the shared one.
    checks = {c.name: c for c in run_checks(first.settings, url="http://127.0.0.1:9")}
    assert checks["index consistency"].status == "ok", checks["index consistency"].detail
    second = echo_appliance(data)
    try:
        assert all(r.startswith("up to date") for r in second.reconcile_report.values()), (
            second.reconcile_report
        )
        admin = second.access.system_scope()
        assert second.vector_spaces.index_for("docs").dimensions == 768
        assert _semantic(second, admin, "How should I cook pasta?")[0] == "pasta"
    finally:
        second.close()
