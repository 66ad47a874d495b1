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


class Database:
    """Owns the DuckDB file. DuckDB allows one read-write process; threads share it through cursors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The WAL moved aside at open, if replaying it failed: reported by health and metrics.
        self.wal_set_aside: Path | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = self._connect(path)
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()

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
                self._cursors.append(cur)
        return cur

    def execute(self, sql: str, params: object = None) -> duckdb.DuckDBPyConnection:
        return self.cursor().execute(sql, params) if params is not None else self.cursor().execute(sql)

    def fetchall(self, sql: str, params: object = None) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def write(self, sql: str, params: object = None) -> None:
        """One write statement in a retried transaction: concurrent writers to the same row are
        DuckDB write conflicts (optimistic concurrency), which a plain execute turns into errors."""
        self.run_in_transaction(
            lambda cur: cur.execute(sql, params) if params is not None else cur.execute(sql)
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

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self.cursor()
        cur.begin()
        try:
            yield cur
        except BaseException:
            cur.rollback()
            raise
        else:
            cur.commit()

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
            for cur in self._cursors:
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
