"""The append-only audit log: who did what, hash-chained in DuckDB so that edits are detectable."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appliance.db.connection import Database
from appliance.errors import ApplianceError, InvalidInput
from appliance.limits import RefusalSummary

if TYPE_CHECKING:
    from appliance.db.keys import Principal

GENESIS_HASH = "0" * 64
OUTCOMES = frozenset({"ok", "denied", "error"})
# Detail keys that carry what users typed or documents said; kept only when record_text is on.
TEXT_KEYS = frozenset({"text", "query", "prompt", "messages", "input", "content", "answer"})
MAX_RECENT = 1000
# The action of an entry that stands for many refused unauthenticated requests of one client.
REFUSALS_ACTION = "refused without a valid key (summary)"
_COLUMNS = "seq, ts, key_id, key_name, role, action, target, outcome, status, client, detail, prev_hash, hash"
_VERIFY_BATCH = 5000
_INSERT_ROWS = 200  # rows per INSERT statement of a group commit
_ROW_PLACEHOLDERS = "(" + ", ".join(["?"] * 13) + ")"


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _ts_text(ts: datetime) -> str:
    # DuckDB keeps microseconds and hands TIMESTAMPTZ back in the session's zone: hash UTC, to the µs.
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """sha256 over the previous hash and the canonical JSON of the entry (every column but the hashes)."""
    fields = {**entry, "ts": _ts_text(entry["ts"])}
    return hashlib.sha256((prev_hash + _canonical(fields)).encode()).hexdigest()


class AuditUnavailable(ApplianceError):
    """The entry could not be made durable, so the action it records must not pass as audited."""

    status = 503
    title = "Audit log unavailable"


class AuditLog:
    """Appends under one short lock around the chain head; commits in groups; reads and verifies without it.

    One DuckDB commit costs milliseconds (the WAL is synced), far more than hashing. So `append`
    chains its entry in memory under `_lock`, then waits until a commit covers it: whichever waiter
    holds `_flush_lock` writes every pending entry in one transaction (group commit). Alone, a caller
    pays one commit; under load, one commit serves all the callers that queued meanwhile.
    """

    def __init__(self, db: Database, record_text: bool = False) -> None:
        self.db = db
        self.record_text = record_text
        self._lock = threading.Lock()  # the chain head, the next seq and the pending entries
        self._flush_lock = threading.Lock()  # one writer at a time
        self._loaded = False
        self._head = (0, GENESIS_HASH)  # (seq, hash) of the last entry chained, durable or not
        self._durable = (0, GENESIS_HASH)  # (seq, hash) of the last committed entry
        self._next_seq = 1
        self._pending: list[list[Any]] = []
        self._failed: dict[int, str] = {}  # seq -> why its batch failed, until its caller learns it

    def _load(self) -> None:
        """Called under _lock: pick up the chain where the database left it."""
        if not self._loaded:
            row = self.db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            self._head = self._durable = (int(row[0]), row[1]) if row else (0, GENESIS_HASH)
            self._next_seq = self._head[0] + 1
            self._loaded = True

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last committed entry; (0, GENESIS_HASH) when empty. Worth copying off the box."""
        with self._lock:
            self._load()
            return self._durable

    def append(
        self,
        action: str,
        *,
        outcome: str = "ok",
        principal: Principal | None = None,
        key_id: str | None = None,
        key_name: str | None = None,
        role: str | None = None,
        target: str | None = None,
        status: int | None = None,
        client: str | None = None,
        detail: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> int:
        """Record one entry; returns its seq once it is committed. `text` (a prompt, a query) is kept only
        with record_text. Raises AuditUnavailable when it cannot be written: an action that cannot be
        audited should not pass silently.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        if principal is not None:
            key_id, key_name, role = principal.key_id, principal.name, principal.role
        detail = dict(detail or {})
        if self.record_text:
            if text is not None:
                detail["text"] = text
        else:
            for key in TEXT_KEYS & detail.keys():
                del detail[key]
        # Serialise once, outside the lock; the stored text is exactly what was hashed.
        detail_json = _canonical(detail) if detail else None
        entry: dict[str, Any] = {
            "key_id": key_id,
            "key_name": key_name,
            "role": role,
            "action": action,
            "target": target,
            "outcome": outcome,
            "status": status,
            "client": client,
            "detail": json.loads(detail_json) if detail_json else None,
        }
        with self._lock:
            self._load()
            # seq is allocated here rather than by a DuckDB sequence: a sequence costs a commit of
            # its own, and this lock already orders the chain. It only ever grows, even past
            # entries whose batch failed, so a seq is never reused.
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            ts = datetime.now(UTC)  # under the lock, so ts never goes backwards along the chain
            prev_hash = self._head[1]
            digest = entry_hash(prev_hash, {"seq": seq, "ts": ts, **entry})
            self._pending.append(
                [
                    seq,
                    ts,
                    key_id,
                    key_name,
                    role,
                    action,
                    target,
                    outcome,
                    status,
                    client,
                    detail_json,
                    prev_hash,
                    digest,
                ]
            )
            self._head = (seq, digest)
        self._commit_through(seq)
        return seq

    def summarise_refusals(self, summaries: Iterable[RefusalSummary]) -> None:
        """One entry per client and window for the unauthenticated requests that were refused
        beyond the ones audited individually (see limits.FailedAuthLimiter)."""
        for summary in summaries:
            self.append(
                REFUSALS_ACTION,
                outcome="denied",
                status=429,
                client=summary.client,
                detail={
                    "refused_and_counted": summary.counted,
                    "audited_individually": summary.audited,
                    "window_seconds": summary.window_seconds,
                },
            )

    def _commit_through(self, seq: int) -> None:
        with self._flush_lock:
            if seq in self._failed:
                raise AuditUnavailable(f"audit entry not written: {self._failed.pop(seq)}")
            if self._durable[0] >= seq:
                return  # an earlier writer's batch carried it
            with self._lock:
                batch, self._pending = self._pending, []
            try:
                self.db.run_in_transaction(lambda cur: self._insert(cur, batch))
            except Exception as exc:
                with self._lock:
                    # Entries chained since the batch was taken point at hashes never written:
                    # fail them too, and chain again from the last committed entry.
                    lost, self._pending = batch + self._pending, []
                    self._head = self._durable
                for row in lost:
                    if row[0] != seq:
                        self._failed[row[0]] = repr(exc)
                raise AuditUnavailable(f"audit entry not written: {exc!r}") from exc
            self._durable = (batch[-1][0], batch[-1][-1])

    @staticmethod
    def _insert(cur: Any, batch: list[list[Any]]) -> None:
        for start in range(0, len(batch), _INSERT_ROWS):
            part = batch[start : start + _INSERT_ROWS]
            values = ", ".join([_ROW_PLACEHOLDERS] * len(part))
            cur.execute(
                f"INSERT INTO audit_log ({_COLUMNS}) VALUES {values}", [v for row in part for v in row]
            )

    def recent(
        self, limit: int = 100, offset: int = 0, action: str | None = None, key_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first. `action` ending in "." matches a family ("documents." for every documents action)."""
        if not 1 <= limit <= MAX_RECENT:
            raise InvalidInput(f"limit must be within 1..{MAX_RECENT}")
        if offset < 0:
            raise InvalidInput("offset must be >= 0")
        where, params = [], []
        if action:
            if action.endswith("."):
                where.append("starts_with(action, ?)")
            else:
                where.append("action = ?")
            params.append(action)
        if key_id:
            where.append("key_id = ?")
            params.append(key_id)
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        rows = self.db.fetch_dicts(sql, [*params, limit, offset])
        for row in rows:
            row["ts"] = _ts_text(row["ts"])
            row["detail"] = json.loads(row["detail"]) if row["detail"] is not None else None
        return rows

    def verify(self) -> tuple[bool, int | None]:
        """Walk the chain from the first entry. Returns (True, None), or (False, seq of the first bad entry).

        An entry is bad when its hash does not match its content, or its prev_hash does not match the
        entry before it (an entry edited, inserted or deleted). Entries deleted from the end leave a
        valid shorter chain: the head this process committed last catches that (reported as that
        head's seq) while it runs; across restarts, compare with a head copied off the box earlier.
        """
        # Rows committed after this snapshot must chain on as well, so the walk goes to the end.
        head_seq, head_hash = self.head()
        cur = self.db.cursor().execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq")
        prev_hash, passed_head = GENESIS_HASH, head_seq == 0
        while batch := cur.fetchmany(_VERIFY_BATCH):
            for row in batch:
                (
                    seq,
                    ts,
                    key_id,
                    key_name,
                    role,
                    action,
                    target,
                    outcome,
                    status,
                    client,
                    detail,
                    stored_prev,
                    stored_hash,
                ) = row
                entry = {
                    "seq": seq,
                    "ts": ts,
                    "key_id": key_id,
                    "key_name": key_name,
                    "role": role,
                    "action": action,
                    "target": target,
                    "outcome": outcome,
                    "status": status,
                    "client": client,
                    "detail": json.loads(detail) if detail is not None else None,
                }
                if stored_prev != prev_hash or entry_hash(prev_hash, entry) != stored_hash:
                    return False, seq
                prev_hash = stored_hash
                if seq == head_seq:
                    passed_head = stored_hash == head_hash
        if not passed_head:
            return False, head_seq
        return True, None
