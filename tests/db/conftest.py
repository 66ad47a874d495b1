"""A migrated DuckDB database in a temp dir, for the store tests."""

from __future__ import annotations

import pytest

from appliance.db.connection import Database
from appliance.db.migrations import migrate


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "store.duckdb")
    migrate(database)
    yield database
    database.close()
