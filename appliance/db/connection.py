"""The one read-write DuckDB connection of the process, with a cursor per thread."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteOutsideTransaction(RuntimeError):
    """A row write was sent through Database.execute() instead of write()/run_in_transaction()."""


_ROW_WRITES = ("INSERT", "UPDATE", "DELETE", "MERGE")


def _writes_rows(sql: str) -> bool:
    return sql.lstrip()[:6].upper().startswith(_ROW_WRITES)


class Database:
    """Owns the DuckDB file. DuckDB allows one read-write process; threads share it through cursors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The WAL moved aside at open, if replaying it failed: reported by health and metrics.
        self.wal_set_aside: Path | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = self._connect(path)
        self._local = threading.local()
        self._cursors: dict[threading.Thread, duckdb.DuckDBPyConnection] = {}
        self._lock = threading.Lock()
        # One writer at a time in this process. DuckDB 2.0.0 misses a write-write conflict between
        # an UPDATE ... RETURNING and a plain UPDATE of the same row of a table with a primary key:
        # both commit and one is silently lost (a cancelled job came back as running). Serialising
        # write transactions removes the race; readers are not held up.
        self._write_lock = threading.RLock()

    def _connect(self, path: Path) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(path))
        except duckdb.Error as exc:
            wal = path.with_name(path.name + ".wal")
            # Only a WAL that fails to replay is set aside: any other error (another process
            # holding the lock, a damaged database file) must not cost a live WAL its writes.
            if not wal.exists() or "replaying WAL" not in str(exc):
                raise
            # A kill during writes or a damaged disk can leave a WAL that fails to replay;
            # booting must not crash-loop. DuckDB 2.0 already drops a torn tail by itself; this
            # is a WAL whose records fail their checksums mid-file. Keep it for forensics; the
            # index reconciler then restores agreement with what the database holds.
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            aside = wal.with_name(f"{wal.name}.unreplayable-{stamp}")
            log.error(
                "duckdb WAL failed to replay: moved it aside, its uncheckpointed writes are not "
                "in the database",
                extra={"wal": str(aside), "error": str(exc)},
            )
            wal.rename(aside)
            self.wal_set_aside = aside
            return duckdb.connect(str(path))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
            with self._lock:
                self._close_orphans()
                self._cursors[threading.current_thread()] = cur
        return cur

    @property
    def open_cursors(self) -> int:
        """Cursors held for live threads (one per thread that has used the database)."""
        with self._lock:
            self._close_orphans()
            return len(self._cursors)

    def _close_orphans(self) -> None:
        # A thread that ended (a job's helper, a parallel workflow step, a tool call) leaves its
        # cursor behind; closed here, or every short-lived thread would hold one for good.
        for thread in [t for t in self._cursors if not t.is_alive()]:
            try:
                self._cursors.pop(thread).close()
            except duckdb.Error:
                pass

    def execute(self, sql: str, params: object = None) -> duckdb.DuckDBPyConnection:
        """A read (or DDL). Row writes go through write() or run_in_transaction(), which hold the
        write lock; outside a transaction of this thread, one here is a programming error."""
        if _writes_rows(sql) and not self._in_transaction():
            raise WriteOutsideTransaction(
                "row writes go through Database.write() or run_in_transaction(): " + sql.strip()[:60]
            )
        return self.cursor().execute(sql, params) if params is not None else self.cursor().execute(sql)

    def fetchall(self, sql: str, params: object = None) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def write(self, sql: str, params: object = None) -> list[tuple]:
        """One write statement in its own transaction; returns its rows (RETURNING, or the count)."""
        return self.run_in_transaction(
            lambda cur: (cur.execute(sql, params) if params is not None else cur.execute(sql)).fetchall()
        )

    def fetchone(self, sql: str, params: object = None) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def fetch_dicts(self, sql: str, params: object = None) -> list[dict]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @contextmanager
    def own_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own, closed afterwards: for work that sets its own transaction mode (a
        read-only query) without touching the thread's shared cursor."""
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _in_transaction(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._write_lock:
            cur = self.cursor()
            cur.begin()
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                yield cur
            except BaseException:
                cur.rollback()
                raise
            else:
                cur.commit()
            finally:
                self._local.depth -= 1

    def run_in_transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T], attempts: int = 5) -> T:
        """Run `work` in a transaction, retrying write-write conflicts (DuckDB is optimistic)."""
        for attempt in range(attempts):
            try:
                with self.transaction() as cur:
                    return work(cur)
            except duckdb.TransactionException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (2**attempt))
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for cur in self._cursors.values():
                try:
                    cur.close()
                except duckdb.Error:
                    pass
            self._cursors.clear()
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.Error:
            pass
        self._con.close()
