"""Answer traces, their ratings, and drift checks: the SQL of feedback and drift."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import numpy as np

from appliance.db.connection import Database
from appliance.records import Citation, DriftReport, GivenSource, Rating, RetrievedChunk, Trace, Usage

_TRACE_COLUMNS = """id, created_at, key_id, conversation_id, collections, question, query, model,
    prompt_version, answer, refused, citations, retrieved, sources, prompt_tokens, completion_tokens,
    timings, top_similarity, answer_chars, latency_ms"""
# The SQL type of each column of _TRACE_COLUMNS and the embedding, as insert() sends them.
_INSERT_TYPES = (
    ["VARCHAR", "TIMESTAMPTZ", "VARCHAR", "VARCHAR", "VARCHAR[]"]
    + ["VARCHAR"] * 5
    + [
        "BOOLEAN",
        "JSON",
        "JSON",
        "JSON",
        "INTEGER",
        "INTEGER",
        "JSON",
        "DOUBLE",
        "INTEGER",
        "DOUBLE",
        "FLOAT[]",
    ]
)


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which traces a caller reaches: its own (`key_id`; None: every key's) over collections it
    sees (`collections`; None: all). Decided by the access service's Scope, applied here in SQL."""

    key_id: str | None
    collections: list[str] | None

    def where(self, alias: str = "t") -> tuple[str, list]:
        sql, params = [], []
        if self.key_id is not None:
            sql.append(f"{alias}.key_id = ?")
            params.append(self.key_id)
        if self.collections is not None:
            sql.append(f"list_has_all(?::VARCHAR[], {alias}.collections)")
            params.append(self.collections)
        return " AND ".join(sql) or "TRUE", params


@dataclass(frozen=True, slots=True)
class SignalRows:
    """The answers of one drift window: query embeddings and scalar signals, one row per answer."""

    ids: list[str]
    embeddings: np.ndarray  # (n, d) float32; rows without an embedding are left out of it
    top_similarity: np.ndarray  # NaN where no vector search ran
    refused: np.ndarray
    answer_chars: np.ndarray
    latency_ms: np.ndarray
    thumbs_down: np.ndarray  # 1 down, 0 up, NaN unrated


def _iso(value: datetime) -> str:
    return value.isoformat()


def _trace(row: tuple) -> Trace:
    # The route rides in the timings' JSON (no column of its own yet): taken out again here.
    timings = msgspec.json.decode(row[16])
    route = timings.pop("route", None) if isinstance(timings, dict) else None
    usage = Usage(prompt_tokens=row[14], completion_tokens=row[15], total_tokens=row[14] + row[15])
    return Trace(
        id=row[0],
        created_at=_iso(row[1]),
        key_id=row[2],
        conversation_id=row[3],
        collections=list(row[4]),
        question=row[5],
        query=row[6],
        model=row[7],
        prompt_version=row[8],
        answer=row[9],
        refused=row[10],
        citations=msgspec.json.decode(row[11], type=list[Citation]),
        retrieved=msgspec.json.decode(row[12], type=list[RetrievedChunk]),
        sources=msgspec.json.decode(row[13], type=list[GivenSource]),
        usage=usage,
        timings=timings,
        top_similarity=row[17],
        answer_chars=row[18],
        latency_ms=row[19],
        route=route,
    )


_RATING_COLUMNS = (
    "r.answer_id, r.key_id, r.rating, r.comment, r.correct_answer, r.confirmed_sources, r.created_at"
)


def _rating(row: tuple) -> Rating:
    return Rating(
        answer_id=row[0],
        key_id=row[1],
        rating=row[2],
        comment=row[3],
        correct_answer=row[4],
        confirmed_sources=list(row[5]),
        created_at=_iso(row[6]),
    )


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class TraceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- traces ------------------------------------------------------------------------------------
    def insert(self, traces: Sequence[tuple[Trace, np.ndarray | None]]) -> None:
        """Traces with their query embeddings, in one statement (a trace seen twice is kept once).
        One INSERT over unnested column lists: ~15x faster than executemany, row by row."""
        if not traces:
            return
        columns = [
            [t.id for t, _ in traces],
            [t.created_at for t, _ in traces],
            [t.key_id for t, _ in traces],
            [t.conversation_id for t, _ in traces],
            [t.collections for t, _ in traces],
            [t.question for t, _ in traces],
            [t.query for t, _ in traces],
            [t.model for t, _ in traces],
            [t.prompt_version for t, _ in traces],
            [t.answer for t, _ in traces],
            [t.refused for t, _ in traces],
            [_json(t.citations) for t, _ in traces],
            [_json(t.retrieved) for t, _ in traces],
            [_json(t.sources) for t, _ in traces],
            [t.usage.prompt_tokens for t, _ in traces],
            [t.usage.completion_tokens for t, _ in traces],
            [_json({**t.timings, "route": t.route} if t.route else t.timings) for t, _ in traces],
            [t.top_similarity for t, _ in traces],
            [t.answer_chars for t, _ in traces],
            [t.latency_ms for t, _ in traces],
            [None if v is None else np.asarray(v, dtype=np.float32).tolist() for _, v in traces],
        ]
        self.db.write(
            f"INSERT OR IGNORE INTO answer_traces ({_TRACE_COLUMNS}, embedding) SELECT * FROM (SELECT "
            + ", ".join(f"unnest(?::{kind}[])" for kind in _INSERT_TYPES)
            + ")",
            columns,
        )

    def get(self, answer_id: str) -> Trace | None:
        row = self.db.fetchone(f"SELECT {_TRACE_COLUMNS} FROM answer_traces WHERE id = ?", [answer_id])
        if row is None:
            return None
        return msgspec.structs.replace(_trace(row), ratings=self.ratings(answer_id))

    def prune(self, before: datetime) -> int:
        """Delete the traces made before `before`, and their ratings. Returns how many traces."""

        def work(cur) -> int:
            cur.execute(
                "DELETE FROM answer_ratings WHERE answer_id IN "
                "(SELECT id FROM answer_traces WHERE created_at < ?)",
                [before],
            )
            return cur.execute("DELETE FROM answer_traces WHERE created_at < ?", [before]).fetchone()[0]

        return self.db.run_in_transaction(work)

    # -- ratings -----------------------------------------------------------------------------------
    def rate(
        self,
        answer_id: str,
        key_id: str,
        rating: str,
        comment: str | None,
        correct_answer: str | None,
        confirmed_sources: list[str],
    ) -> Rating:
        """A key's rating of an answer; rating again replaces its earlier one."""
        self.db.write(
            """INSERT INTO answer_ratings (answer_id, key_id, rating, comment, correct_answer, confirmed_sources)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (answer_id, key_id) DO UPDATE SET rating = excluded.rating,
                   comment = excluded.comment, correct_answer = excluded.correct_answer,
                   confirmed_sources = excluded.confirmed_sources, created_at = now()""",
            [answer_id, key_id, rating, comment, correct_answer, confirmed_sources],
        )
        return next(r for r in self.ratings(answer_id) if r.key_id == key_id)

    def ratings(self, answer_id: str) -> list[Rating]:
        rows = self.db.fetchall(
            f"SELECT {_RATING_COLUMNS} FROM answer_ratings r WHERE answer_id = ? ORDER BY created_at",
            [answer_id],
        )
        return [_rating(r) for r in rows]

    def _rated(self, seen: Visibility, collection: str | None, rating: str | None) -> tuple[str, list]:
        where, params = seen.where("t")
        if collection is not None:
            where += " AND list_contains(t.collections, ?)"
            params.append(collection)
        if rating is not None:
            where += " AND r.rating = ?"
            params.append(rating)
        return (
            f"FROM answer_ratings r JOIN answer_traces t ON t.id = r.answer_id WHERE {where}",
            params,
        )

    def list_ratings(
        self, seen: Visibility, collection: str | None, rating: str | None, limit: int, offset: int
    ) -> tuple[list[tuple[Rating, Trace]], int]:
        """Ratings (newest first) with the traces they rate, and how many there are in all."""
        source, params = self._rated(seen, collection, rating)
        total = self.db.fetchone(f"SELECT count(*) {source}", params)[0]
        rows = self.db.fetchall(
            f"""SELECT {_RATING_COLUMNS}, {", ".join("t." + c.strip() for c in _TRACE_COLUMNS.split(","))}
                {source} ORDER BY r.created_at DESC, r.answer_id LIMIT ? OFFSET ?""",
            [*params, limit, offset],
        )
        return [(_rating(r[:7]), _trace(r[7:])) for r in rows], total

    def model_ratings(self, models: list[str], since: str) -> tuple[int, int]:
        """(thumbs down, ratings) of the answers any of `models` gave since `since` (ISO 8601): a
        canary's arms compared (core/rollout.py)."""
        row = self.db.fetchone(
            """SELECT count(*) FILTER (WHERE r.rating = 'down'), count(*)
               FROM answer_ratings r JOIN answer_traces t ON t.id = r.answer_id
               WHERE lower(t.model) IN (SELECT unnest(?)) AND t.created_at >= ?::TIMESTAMPTZ""",
            [[m.lower() for m in models], since],
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def rating_counts(self, seen: Visibility, since: datetime) -> list[tuple[str, int, int, int]]:
        """(collection, up, down, answers) over the answers given since `since`, by collection."""
        where, params = seen.where("t")
        rows = self.db.fetchall(
            f"""SELECT c,
                       count(*) FILTER (WHERE r.rating = 'up'),
                       count(*) FILTER (WHERE r.rating = 'down'),
                       count(DISTINCT t.id)
                FROM (SELECT *, unnest(collections) AS c FROM answer_traces) t
                LEFT JOIN answer_ratings r ON r.answer_id = t.id
                WHERE t.created_at >= ? AND {where}
                GROUP BY c ORDER BY c""",
            [since, *params],
        )
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    # -- drift windows -----------------------------------------------------------------------------
    def collections_answered(self, since: datetime) -> list[str]:
        rows = self.db.fetchall(
            "SELECT DISTINCT unnest(collections) AS c FROM answer_traces WHERE created_at >= ? ORDER BY c",
            [since],
        )
        return [r[0] for r in rows]

    def window_ids(
        self, collection: str, start: datetime | None, end: datetime | None, first_n: int | None
    ) -> list[str]:
        """The answers over `collection` from `start` to `end` (exclusive), oldest first; with
        `first_n`, only the first that many."""
        where, params = ["list_contains(collections, ?)"], [collection]
        if start is not None:
            where.append("created_at >= ?")
            params.append(start)
        if end is not None:
            where.append("created_at < ?")
            params.append(end)
        limit = f" LIMIT {int(first_n)}" if first_n else ""
        rows = self.db.fetchall(
            f"SELECT id FROM answer_traces WHERE {' AND '.join(where)} ORDER BY created_at, id{limit}",
            params,
        )
        return [r[0] for r in rows]

    def signals(self, ids: Sequence[str]) -> SignalRows:
        rows = self.db.fetchall(
            """SELECT t.id, t.embedding, t.top_similarity, t.refused, t.answer_chars, t.latency_ms,
                   (SELECT bool_or(r.rating = 'down') FROM answer_ratings r WHERE r.answer_id = t.id)
               FROM answer_traces t WHERE t.id IN (SELECT unnest(?::VARCHAR[])) ORDER BY t.created_at, t.id""",
            [list(ids)],
        )
        vectors = [r[1] for r in rows if r[1] is not None]

        def column(i: int) -> np.ndarray:
            return np.array([np.nan if r[i] is None else float(r[i]) for r in rows], dtype=np.float64)

        return SignalRows(
            ids=[r[0] for r in rows],
            embeddings=np.array(vectors, dtype=np.float32) if vectors else np.zeros((0, 0), np.float32),
            top_similarity=column(2),
            refused=column(3),
            answer_chars=column(4),
            latency_ms=column(5),
            thumbs_down=column(6),
        )

    # -- drift checks ------------------------------------------------------------------------------
    def save_check(self, report: DriftReport) -> None:
        self.db.write(
            """INSERT INTO drift_checks (id, collection, checked_at, trigger, reference, current, drifted, signals)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                report.id,
                report.collection,
                report.checked_at,
                report.trigger,
                _json(report.reference),
                _json(report.current),
                report.drifted,
                _json(report.signals),
            ],
        )

    def latest_checks(self, collections: list[str] | None) -> list[DriftReport]:
        """The latest check of each collection (of `collections`; None: all), by collection name."""
        where, params = "TRUE", []
        if collections is not None:
            where, params = "list_contains(?::VARCHAR[], collection)", [collections]
        rows = self.db.fetchall(
            f"""SELECT id, collection, checked_at, trigger, reference, current, drifted, signals
                FROM drift_checks WHERE {where}
                QUALIFY row_number() OVER (PARTITION BY collection ORDER BY checked_at DESC, id DESC) = 1
                ORDER BY collection""",
            params,
        )
        return [
            msgspec.convert(
                {
                    "id": r[0],
                    "collection": r[1],
                    "checked_at": _iso(r[2]),
                    "trigger": r[3],
                    "reference": msgspec.json.decode(r[4]),
                    "current": msgspec.json.decode(r[5]),
                    "drifted": r[6],
                    "signals": msgspec.json.decode(r[7]),
                },
                DriftReport,
            )
            for r in rows
        ]

    def last_check_at(self, trigger: str) -> datetime | None:
        row = self.db.fetchone("SELECT max(checked_at) FROM drift_checks WHERE trigger = ?", [trigger])
        return row[0] if row else None
