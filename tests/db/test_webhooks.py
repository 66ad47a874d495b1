"""GitHub delivery bookkeeping in a real DuckDB: deliveries seen once, item states replaced whole."""

from __future__ import annotations

import pytest

from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.db.webhooks import WebhookStore


@pytest.fixture
def hooks(tmp_path):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    yield WebhookStore(db)
    db.close()


def test_a_delivery_is_recorded_once(hooks):
    assert not hooks.delivered("d-1")
    hooks.record_delivery("d-1", "issues", "acme/handbook")
    hooks.record_delivery("d-1", "issues", "acme/handbook")  # a redelivery after a crash: no error
    assert hooks.delivered("d-1") and not hooks.delivered("d-2")
    assert hooks.db.fetchone("SELECT count(*) FROM webhook_deliveries")[0] == 1


def test_item_state_round_trips_and_is_replaced(hooks):
    sid = "github:acme/handbook:issue:7"
    assert hooks.item_state(sid) is None
    hooks.save_item(sid, "eng", {"title": "Broken link", "comments": [{"id": 1, "body": "seen"}]})
    hooks.save_item(sid, "docs", {"title": "Broken link (fixed)", "deleted": False})
    assert hooks.item_state(sid) == {"title": "Broken link (fixed)", "deleted": False}
    assert hooks.db.fetchone("SELECT collection FROM github_items WHERE source_id = ?", [sid])[0] == "docs"
