"""GitHub deliveries in DuckDB: which deliveries were processed, and the merged state of each issue or pull."""

from __future__ import annotations

import json

from appliance.db.connection import Database


class WebhookStore:
    """The `webhook_deliveries` and `github_items` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def delivered(self, delivery_id: str) -> bool:
        return (
            self.db.fetchone("SELECT 1 FROM webhook_deliveries WHERE delivery_id = ?", [delivery_id])
            is not None
        )

    def record_delivery(self, delivery_id: str, event: str, repo: str | None) -> None:
        self.db.write(
            "INSERT INTO webhook_deliveries (delivery_id, event, repo) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [delivery_id, event, repo],
        )

    def item_state(self, source_id: str) -> dict | None:
        """The merged state of one issue or pull request (None: never delivered)."""
        row = self.db.fetchone("SELECT state FROM github_items WHERE source_id = ?", [source_id])
        return json.loads(row[0]) if row else None

    def save_item(self, source_id: str, collection: str, state: dict) -> None:
        self.db.write(
            """INSERT INTO github_items (source_id, collection, state) VALUES (?, ?, ?)
               ON CONFLICT (source_id) DO UPDATE SET state = excluded.state, collection = excluded.collection,
               updated_at = now()""",
            [source_id, collection, json.dumps(state)],
        )
