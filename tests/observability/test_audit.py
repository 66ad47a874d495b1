"""Audit log: a hash chain that survives concurrent appends and exposes any edit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.db.connection import Database
from appliance.db.keys import Principal
from appliance.db.spine_migrations import AUDIT_MIGRATION_SQL
from appliance.errors import InvalidInput
from appliance.limits import RefusalSummary
from appliance.observability.audit import REFUSALS_ACTION, AuditLog, AuditUnavailable


def open_db(path: Path) -> Database:
    """The table as the migration creates it (the migration list itself is wired in by core)."""
    db = Database(path)
    if db.fetchone("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'audit_log'")[0] == 0:
        db.execute(AUDIT_MIGRATION_SQL)
    return db


@pytest.fixture
def db(tmp_path: Path):
    db = open_db(tmp_path / "audit.duckdb")
    yield db
    db.close()


ADMIN = Principal("key_admin", "admin", "admin", None)


def test_append_and_recent(db: Database) -> None:
    log = AuditLog(db)
    assert log.verify() == (True, None)
    first = log.append(
        "documents.create",
        principal=ADMIN,
        target="sample/doc_1",
        status=202,
        client="127.0.0.1",
        detail={"job_id": "job_1", "size": 12},
    )
    second = log.append(
        "keys.revoke", key_id="key_x", key_name="ci", role="reader", outcome="denied", status=403
    )
    assert second > first

    rows = log.recent()
    assert [r["seq"] for r in rows] == [second, first]
    assert rows[1]["key_name"] == "admin" and rows[1]["detail"] == {"job_id": "job_1", "size": 12}
    assert rows[1]["ts"].endswith("+00:00")
    assert rows[0]["prev_hash"] == rows[1]["hash"]
    assert [r["seq"] for r in log.recent(action="keys.revoke")] == [second]
    assert [r["seq"] for r in log.recent(action="documents.")] == [first]
    assert [r["seq"] for r in log.recent(key_id="key_admin")] == [first]
    assert [r["seq"] for r in log.recent(limit=1, offset=1)] == [first]
    assert log.verify() == (True, None)


def test_bad_arguments_are_clear_errors(db: Database) -> None:
    log = AuditLog(db)
    with pytest.raises(ValueError, match="outcome"):
        log.append("documents.create", outcome="maybe")
    with pytest.raises(InvalidInput, match="limit"):
        log.recent(limit=0)
    with pytest.raises(InvalidInput, match="offset"):
        log.recent(offset=-1)


def test_appends_from_many_threads_keep_one_valid_chain(db: Database) -> None:
    log = AuditLog(db)
    threads, per_thread = 8, 25
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(per_thread):
                log.append("knowledge.search", key_id=f"key_{n}", target="sample", detail={"i": i})
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    assert db.fetchone("SELECT count(*), count(DISTINCT prev_hash) FROM audit_log") == (
        threads * per_thread,
        threads * per_thread,
    )
    assert log.verify() == (True, None)


def test_a_failed_write_raises_and_the_chain_goes_on_from_the_last_commit(db: Database) -> None:
    log = AuditLog(db)
    log.append("keys.create", principal=ADMIN, target="key_1")
    # Squat the next seq so that the insert of the next entry fails on the primary key.
    squat = log.head()[0] + 1
    db.write(
        "INSERT INTO audit_log (seq, ts, action, outcome, prev_hash, hash) "
        "VALUES (?, now(), 'forged', 'ok', 'x', 'y')",
        [squat],
    )
    with pytest.raises(AuditUnavailable, match="not written"):
        log.append("keys.revoke", principal=ADMIN, target="key_1")
    assert log.verify() == (False, squat)  # the squatter is not part of the chain
    db.write("DELETE FROM audit_log WHERE seq = ?", [squat])
    after = log.append("keys.revoke", principal=ADMIN, target="key_1")
    assert after > squat  # a seq is never reused
    assert log.verify() == (True, None)


def test_editing_a_row_is_detected_at_that_seq(db: Database) -> None:
    log = AuditLog(db)
    seqs = [
        log.append("documents.delete", principal=ADMIN, target=f"doc_{i}", detail={"i": i}) for i in range(5)
    ]
    db.write("UPDATE audit_log SET detail = '{\"i\": 99}' WHERE seq = ?", [seqs[2]])
    assert log.verify() == (False, seqs[2])


def test_deleting_a_row_is_detected_at_the_next_one(db: Database) -> None:
    log = AuditLog(db)
    seqs = [log.append("keys.create", principal=ADMIN, target=f"key_{i}") for i in range(4)]
    db.write("DELETE FROM audit_log WHERE seq = ?", [seqs[1]])
    assert log.verify() == (False, seqs[2])


def test_deleting_the_newest_rows_is_detected_by_the_head(db: Database) -> None:
    log = AuditLog(db)
    seqs = [log.append("keys.create", principal=ADMIN, target=f"key_{i}") for i in range(3)]
    db.write("DELETE FROM audit_log WHERE seq = ?", [seqs[-1]])
    assert log.verify() == (False, seqs[-1])


def test_chain_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "audit.duckdb"
    db = open_db(path)
    AuditLog(db).append("collections.create", principal=ADMIN, target="a")
    db.close()
    db = open_db(path)
    try:
        log = AuditLog(db)
        log.append("collections.create", principal=ADMIN, target="b")
        assert log.verify() == (True, None)
        assert [r["target"] for r in log.recent()] == ["b", "a"]
    finally:
        db.close()


def test_text_is_dropped_unless_record_text(db: Database) -> None:
    quiet = AuditLog(db)
    quiet.append(
        "knowledge.search",
        principal=ADMIN,
        target="sample",
        text="salary of the CEO",
        detail={"query": "salary of the CEO", "top_k": 5},
    )
    stored = db.fetchone("SELECT detail FROM audit_log")[0]
    assert "salary" not in stored
    assert quiet.recent()[0]["detail"] == {"top_k": 5}

    db.write("DELETE FROM audit_log")
    loud = AuditLog(db, record_text=True)
    loud.append("knowledge.search", principal=ADMIN, target="sample", text="per diem in Europe")
    assert loud.recent()[0]["detail"] == {"text": "per diem in Europe"}
    assert loud.verify() == (True, None)


def test_refusal_summaries_are_one_entry_each_in_the_chain(db: Database) -> None:
    log = AuditLog(db)
    log.summarise_refusals([RefusalSummary("10.0.0.9", 30, 270, 60.0), RefusalSummary("*", 30, 5, 60.0)])
    rows = log.recent(action=REFUSALS_ACTION)
    assert [(r["client"], r["outcome"], r["status"]) for r in rows] == [
        ("*", "denied", 429),
        ("10.0.0.9", "denied", 429),
    ]
    assert rows[1]["detail"] == {
        "refused_and_counted": 270,
        "audited_individually": 30,
        "window_seconds": 60.0,
    }
    assert log.verify() == (True, None)
