"""Sources in DuckDB: what each one is, the files it has handed in, and the files it quarantined."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import msgspec

from appliance.db.connection import Database
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.names import check_source_name
from appliance.records import QuarantinedFile, Source

SCHEDULES = {"manual": None, "hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}
_EVERY = re.compile(r"^every\s+(\d+)\s*(m|min|minutes?|h|hours?)$")


def schedule_interval(schedule: str) -> float | None:
    """Seconds between scheduled syncs (None: manual). Accepts manual, hourly, daily, weekly,
    and "every N minutes|hours"."""
    if schedule in SCHEDULES:
        return SCHEDULES[schedule]
    match = _EVERY.match(schedule.strip().lower())
    if not match:
        raise InvalidInput(
            f"unknown schedule {schedule!r}: use manual, hourly, daily, weekly or 'every N minutes|hours'"
        )
    n = int(match.group(1))
    seconds = n * (60 if match.group(2).startswith("m") else 3600)
    if seconds < 60:
        raise InvalidInput("a schedule must be at least a minute apart")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class KnownFile:
    path: str
    collection: str
    fingerprint: str
    content_hash: str | None
    document_id: str


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A registered source as a sync sees it: where it reads, into which collection, and from where on."""

    name: str
    kind: str
    collection: str
    location: str
    schedule: str
    config: dict
    cursor: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class SourceStore:
    """The `sources`, `source_files` and `quarantine` tables: the bookkeeping every source kind shares."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sources ------------------------------------------------------------------------------
    def create(
        self, name: str, kind: str, collection: str, location: str, config: dict, schedule: str
    ) -> Source:
        check_source_name(name)
        schedule_interval(schedule)

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            if cur.execute("SELECT 1 FROM sources WHERE name = ?", [name]).fetchone():
                raise Conflict(f"source {name!r} already exists")
            cur.execute(
                "INSERT INTO sources (name, kind, collection, location, config, schedule) VALUES (?, ?, ?, ?, ?, ?)",
                [name, kind, collection, location, json.dumps(config), schedule],
            )

        self.db.run_in_transaction(work)
        return self.get(name)

    def ensure(self, name: str, kind: str, collection: str, location: str) -> None:
        """Register a source the appliance keeps itself (the drop folder, GitHub deliveries) if it is not there yet."""
        self.db.write(
            """INSERT INTO sources (name, kind, collection, location, config, schedule)
               VALUES (?, ?, ?, ?, '{}', 'manual') ON CONFLICT (name) DO UPDATE SET location = excluded.location""",
            [name, kind, collection, location],
        )

    def get(self, name: str) -> Source:
        return self._present(self._row(name))

    def _row(self, name: str) -> dict:
        rows = self.db.fetch_dicts("SELECT * FROM sources WHERE name = ?", [name])
        if not rows:
            raise NotFound(f"source {name!r} does not exist")
        return rows[0]

    def record(self, name: str) -> SourceRecord:
        return self._record(self._row(name))

    def records(self, kind: str | None = None) -> list[SourceRecord]:
        if kind is None:
            rows = self.db.fetch_dicts("SELECT * FROM sources ORDER BY name")
        else:
            rows = self.db.fetch_dicts("SELECT * FROM sources WHERE kind = ? ORDER BY name", [kind])
        return [self._record(r) for r in rows]

    def list(self, collections: Sequence[str] | None = None) -> list[Source]:
        rows = self.db.fetch_dicts("SELECT * FROM sources ORDER BY name")
        counts = dict(self.db.fetchall("SELECT source, count(*) FROM source_files GROUP BY source"))
        counts.update(
            self.db.fetchall(
                "SELECT 'github', count(*) FROM github_items WHERE NOT coalesce(CAST(state->>'deleted' AS BOOLEAN), false)"
            )
        )
        quarantined = dict(self.db.fetchall("SELECT source, count(*) FROM quarantine GROUP BY source"))
        out = []
        for row in rows:
            if collections is not None and row["collection"] not in collections:
                continue
            source = self._present(row)
            out.append(
                msgspec.structs.replace(
                    source,
                    documents=counts.get(row["name"], 0),
                    quarantined=quarantined.get(row["name"], 0),
                )
            )
        return out

    def delete(self, name: str) -> None:
        self.get(name)

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            cur.execute("DELETE FROM sources WHERE name = ?", [name])
            cur.execute("DELETE FROM source_files WHERE source = ?", [name])
            cur.execute("DELETE FROM quarantine WHERE source = ?", [name])

        self.db.run_in_transaction(work)

    def due(self, now: datetime) -> list[str]:
        due = []
        for name, schedule, last in self.db.fetchall("SELECT name, schedule, last_sync_at FROM sources"):
            interval = schedule_interval(schedule)
            if interval is not None and (last is None or (now - last).total_seconds() >= interval):
                due.append(name)
        return due

    def sync_started(self, name: str) -> None:
        self.db.write("UPDATE sources SET last_sync_at = now() WHERE name = ?", [name])

    def sync_succeeded(self, name: str, cursor: str | None = None) -> None:
        self.db.write(
            "UPDATE sources SET cursor = coalesce(?, cursor), last_success_at = now(), last_error = NULL WHERE name = ?",
            [cursor, name],
        )

    def sync_failed(self, name: str, error: str) -> None:
        self.db.write("UPDATE sources SET last_error = ? WHERE name = ?", [error[:2000], name])

    def record_lag(self, name: str, seconds: float) -> None:
        self.db.write("UPDATE sources SET lag_seconds = ? WHERE name = ?", [seconds, name])

    @staticmethod
    def _record(row: dict) -> SourceRecord:
        return SourceRecord(
            row["name"],
            row["kind"],
            row["collection"],
            row["location"],
            row["schedule"],
            json.loads(row["config"]) if row["config"] else {},
            row["cursor"],
        )

    @staticmethod
    def _present(row: dict) -> Source:
        return Source(
            name=row["name"],
            kind=row["kind"],
            collection=row["collection"],
            location=row["location"],
            schedule=row["schedule"],
            config=json.loads(row["config"]) if row["config"] else {},
            cursor=row["cursor"],
            state="error" if row["last_error"] else ("never synced" if not row["last_sync_at"] else "ok"),
            last_sync_at=_iso(row["last_sync_at"]),
            last_success_at=_iso(row["last_success_at"]),
            lag_seconds=row["lag_seconds"],
            last_error=row["last_error"],
        )

    # -- files a source has handed in -----------------------------------------------------------
    def known_files(self, source: str) -> dict[str, KnownFile]:
        rows = self.db.fetchall(
            "SELECT path, collection, fingerprint, content_hash, document_id FROM source_files WHERE source = ?",
            [source],
        )
        return {r[0]: KnownFile(*r) for r in rows}

    def record_files(self, source: str, seen: Sequence[KnownFile], gone: Sequence[str]) -> None:
        """Called after the job holding these changes exists: a crash in between only means the
        next scan submits the same content again, which the content hash makes a no-op."""
        now = datetime.now(UTC)

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            # Set-wise over column lists: a sync of 10,000 files ran 10,000 upserts one by one.
            if seen:
                files = list({f.path: f for f in seen}.values())  # one row per path: the last word on it
                cur.execute(
                    """INSERT INTO source_files (source, path, collection, fingerprint, content_hash, document_id,
                       seen_at)
                       SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]),
                              unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), ?
                       ON CONFLICT (source, path) DO UPDATE SET
                       collection = excluded.collection, fingerprint = excluded.fingerprint,
                       content_hash = excluded.content_hash, document_id = excluded.document_id,
                       seen_at = excluded.seen_at""",
                    [
                        source,
                        [f.path for f in files],
                        [f.collection for f in files],
                        [f.fingerprint for f in files],
                        [f.content_hash for f in files],
                        [f.document_id for f in files],
                        now,
                    ],
                )
            if gone:
                for table in ("source_files", "quarantine"):
                    cur.execute(
                        f"DELETE FROM {table} WHERE source = ? AND path IN (SELECT unnest(?::VARCHAR[]))",
                        [source, list(gone)],
                    )

        self.db.run_in_transaction(work)

    # -- quarantine -----------------------------------------------------------------------------
    def quarantine(
        self,
        source: str,
        path: str,
        collection: str | None,
        kind: str,
        reason: str,
        size_bytes: int | None = None,
        content_hash: str | None = None,
    ) -> bool:
        """Record (or refresh) why a file was not taken. True when this is news: the file was not
        quarantined before, or for another reason (so callers log and count it once)."""
        reason = reason[:2000]

        def work(cur: duckdb.DuckDBPyConnection) -> bool:
            before = cur.execute(
                "SELECT kind, reason FROM quarantine WHERE source = ? AND path = ?", [source, path]
            ).fetchone()
            cur.execute(
                """INSERT INTO quarantine (source, path, collection, kind, reason, size_bytes, content_hash)
                   VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, path) DO UPDATE SET
                   collection = excluded.collection, kind = excluded.kind, reason = excluded.reason,
                   size_bytes = excluded.size_bytes, content_hash = excluded.content_hash, last_seen = now()""",
                [source, path, collection, kind, reason, size_bytes, content_hash],
            )
            return before != (kind, reason)

        return self.db.run_in_transaction(work)

    def release(self, source: str, path: str) -> None:
        self.db.write("DELETE FROM quarantine WHERE source = ? AND path = ?", [source, path])

    def quarantined(
        self, collections: Sequence[str] | None, source: str | None = None, limit: int = 200
    ) -> list[QuarantinedFile]:
        where, params = [], []
        if collections is not None:
            where.append("collection IN (SELECT unnest(?))")
            params.append(list(collections))
        if source:
            where.append("source = ?")
            params.append(source)
        sql = "SELECT * FROM quarantine" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.db.fetch_dicts(sql + " ORDER BY last_seen DESC LIMIT ?", [*params, limit])
        return [
            QuarantinedFile(**{**r, "first_seen": _iso(r["first_seen"]), "last_seen": _iso(r["last_seen"])})
            for r in rows
        ]

    def release_missing(self, source: str, collection: str, present: set[str]) -> None:
        """Forget refusals of files that are no longer there."""
        rows = self.db.fetchall(
            "SELECT path FROM quarantine WHERE source = ? AND collection = ?", [source, collection]
        )
        gone = [(source, r[0]) for r in rows if r[0] not in present]
        if gone:
            self.db.run_in_transaction(
                lambda cur: cur.executemany("DELETE FROM quarantine WHERE source = ? AND path = ?", gone)
            )
