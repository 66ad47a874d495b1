"""The composition root and its services in-process, over real DuckDB, Tantivy, USearch and Huey in a temp dir."""

from __future__ import annotations

import pytest

from appliance.config import load_settings
from appliance.core import Appliance
from appliance.db.keys import Principal
from appliance.errors import Forbidden, InvalidInput, NotFound
from appliance.ingest.intake import NewDocument


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    data = tmp_path_factory.mktemp("core") / "data"
    settings = load_settings(overrides={"data_dir": str(data), "llm": {"load_at_start": False}}, environ={})
    app = Appliance(settings)
    app.start()
    yield app
    app.close()


def _doc(source_id: str, text: str) -> NewDocument:
    return NewDocument(source_id=source_id, title=None, text=text, content=None, filename=f"{source_id}.md")


def test_documents_flow_through_a_job_into_search_within_the_callers_scope(appliance):
    admin = appliance.access.system_scope()
    appliance.knowledge.create_collection(admin, "alpha")
    appliance.knowledge.create_collection(admin, "bravo")
    job_id, ids = appliance.knowledge.submit(
        admin, "alpha", [_doc("a", "The alpha launch code is ZEBRA-4471.")]
    )
    bravo_job, _ = appliance.knowledge.submit(
        admin, "bravo", [_doc("b", "The bravo launch code is OKAPI-9902.")]
    )
    assert appliance.jobs.wait(job_id).state == "succeeded"
    assert appliance.jobs.wait(bravo_job).state == "succeeded"

    user = appliance.access.scope(Principal("k1", "alpha-reader", "user", ("alpha",)))
    hits = appliance.knowledge.search(user, "launch code", mode="keyword").hits
    assert [h.source_id for h in hits] == ["a"]
    assert appliance.knowledge.get_document(user, ids[0]).collection == "alpha"
    bravo_doc = appliance.knowledge.list_documents(admin, "bravo").documents[0].id
    with pytest.raises(NotFound):
        appliance.knowledge.get_document(user, bravo_doc)
    with pytest.raises(NotFound):
        appliance.jobs.get(user, bravo_job)
    with pytest.raises(NotFound):
        appliance.knowledge.search(user, "launch code", collections=["bravo"])
    assert [j.collection for j in appliance.jobs.list(user)] == ["alpha"]
    with pytest.raises(Forbidden):
        appliance.knowledge.create_collection(user, "charlie")
    with pytest.raises(Forbidden):
        appliance.admin.stats(user)


def test_ingest_jobs_leave_no_cursor_behind(appliance):
    """Each job run prepares its next group on a helper thread of its own: that thread's database
    cursor is closed with it, or every job would leave one open for the life of the process."""
    admin = appliance.access.system_scope()
    appliance.knowledge.create_collection(admin, "cursors")

    def ingest(n: int) -> None:
        job_id, _ = appliance.knowledge.submit(admin, "cursors", [_doc(f"c{n}", f"Cursor note number {n}.")])
        assert appliance.jobs.wait(job_id).state == "succeeded"

    ingest(0)
    before = appliance.db.open_cursors
    for n in range(1, 6):
        ingest(n)
    assert appliance.db.open_cursors == before


def test_job_kinds_register_through_one_door(appliance):
    assert appliance.jobs.kinds == {
        "ingest",
        "sync",
        "verify",
        "eval",
        "evalgen",
        "workflow",
        "calibrate",
        "tune",
        "reembed",
    }
    with pytest.raises(ValueError, match="registered already"):
        appliance.jobs.register("ingest", lambda job_id: None)
    admin = appliance.access.system_scope()
    job = appliance.jobs.submit("no-such-kind", None)
    with pytest.raises(InvalidInput, match="no runner for job kind 'no-such-kind'"):
        appliance.jobs.run(job.id)
    appliance.job_store.cancel(job.id)
    report = appliance.jobs.wait(appliance.jobs.verify_chunks(admin).id)
    assert report.state == "succeeded" and report.summary["counts"]["damaged"] == 0


def test_admin_service_reports_components_and_needs_the_chat_model_for_answers(appliance):
    admin = appliance.access.system_scope()
    names = [c["name"] for c in appliance.admin.stats(admin)["components"]]
    assert names == ["api", "duckdb", "bm25", "vectors", "jobs", "embedder", "model", "disk"]
    assert appliance.admin.models_state(admin)["chat"]["state"] in ("loading", "unloaded")
    with pytest.raises(InvalidInput):
        appliance.answers.answer(admin, "   ")


def test_a_job_whose_signal_was_lost_is_signalled_again_by_the_minute_tick(appliance):
    admin = appliance.access.system_scope()
    appliance.knowledge.create_collection(admin, "stranded")
    # Stored as a submit stores it, but its signal never reached the queue (SQLite full just then),
    # and older than a minute: the tick finds it and runs it.
    job_id = appliance.job_store.create("ingest", "stranded", [])
    appliance.db.write("UPDATE jobs SET created_at = created_at - INTERVAL 5 MINUTE WHERE id = ?", [job_id])
    fresh = appliance.job_store.create("ingest", "stranded", [])  # too young to count as lost
    assert appliance.job_store.queued_before(60) == [job_id]
    appliance._schedule_tick()
    assert appliance.jobs.wait(job_id, 60).state == "succeeded"
    assert appliance.job_store.get(fresh).state == "queued"
    appliance.queue.signal(fresh)
    assert appliance.jobs.wait(fresh, 60).state == "succeeded"
