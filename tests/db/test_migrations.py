"""Migrations run in order, are recorded by name, and run once."""

from __future__ import annotations

import pytest

from appliance.db.connection import Database
from appliance.db.migrations import MIGRATIONS, migrate


def test_migrations_apply_in_order_once(tmp_path):
    db = Database(tmp_path / "m.duckdb")
    assert migrate(db) == [name for name, _ in MIGRATIONS]
    assert migrate(db) == []
    recorded = [r[0] for r in db.fetchall("SELECT name FROM schema_migrations ORDER BY applied_at, name")]
    assert recorded == [name for name, _ in MIGRATIONS]
    tables = {r[0] for r in db.fetchall("SELECT table_name FROM information_schema.tables")}
    assert {"collections", "documents", "chunks", "jobs", "job_items", "index_outbox", "api_keys"} <= tables
    db.close()


def test_names_are_unique_and_ordered():
    names = [name for name, _ in MIGRATIONS]
    assert names == sorted(names) and len(set(names)) == len(names)


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    db = Database(tmp_path / "m.duckdb")
    migrate(db)
    db.write("INSERT INTO schema_migrations (name) VALUES ('9999_from_the_future')")
    with pytest.raises(RuntimeError, match="9999_from_the_future"):
        migrate(db)
    db.close()


def test_data_survives_reopen(tmp_path):
    db = Database(tmp_path / "m.duckdb")
    migrate(db)
    db.write("INSERT INTO collections (name) VALUES ('kept')")
    db.close()
    db = Database(tmp_path / "m.duckdb")
    assert migrate(db) == []
    assert db.fetchone("SELECT name FROM collections")[0] == "kept"
    db.close()
