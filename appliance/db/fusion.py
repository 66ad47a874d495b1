"""Per-collection fusion settings (chosen by calibration), read by every hybrid search."""

from __future__ import annotations

import threading

import msgspec

from appliance.db.connection import Database
from appliance.errors import NotFound
from appliance.records import CollectionFusion, FusionSettings


class FusionStore:
    """The `collection_fusion` table, mirrored in memory: searches read the mirror, so a stored
    setting costs a search nothing; this process is the table's only writer."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._settings: dict[str, FusionSettings] | None = None

    def _mirror(self) -> dict[str, FusionSettings]:
        with self._lock:
            if self._settings is None:
                rows = self.db.fetchall("SELECT collection, settings FROM collection_fusion")
                self._settings = {c: msgspec.json.decode(s, type=FusionSettings) for c, s in rows}
            return self._settings

    def settings_for(self, collections: list[str] | tuple[str, ...]) -> FusionSettings | None:
        """The stored settings shared by all of `collections`, or None (some have none, or they
        differ: a search over several collections then uses the server's defaults)."""
        mirror = self._mirror()
        found = {mirror.get(c) for c in set(collections)}
        if len(found) != 1:
            return None
        return found.pop()

    def save(self, record: CollectionFusion) -> CollectionFusion:
        self._mirror()
        self.db.write(
            """INSERT OR REPLACE INTO collection_fusion (collection, settings, record, calibrated_at)
               VALUES (?, ?, ?, now())""",
            [
                record.collection,
                msgspec.json.encode(record.settings).decode(),
                msgspec.json.encode(record).decode(),
            ],
        )
        with self._lock:
            self._settings[record.collection] = record.settings
        return self.get(record.collection)

    def get(self, collection: str) -> CollectionFusion:
        row = self.db.fetchone(
            "SELECT record, strftime(calibrated_at, '%Y-%m-%dT%H:%M:%SZ') FROM collection_fusion WHERE collection = ?",
            [collection],
        )
        if row is None:
            raise NotFound(f"collection {collection!r} has no calibrated fusion settings")
        record = msgspec.json.decode(row[0], type=CollectionFusion)
        return msgspec.structs.replace(record, calibrated_at=row[1])

    def delete(self, collection: str) -> bool:
        """Back to the server's defaults. True when there was something to delete."""
        self._mirror()
        existed = self.db.fetchone("SELECT 1 FROM collection_fusion WHERE collection = ?", [collection])
        self.db.write("DELETE FROM collection_fusion WHERE collection = ?", [collection])
        with self._lock:
            self._settings.pop(collection, None)
        return existed is not None
