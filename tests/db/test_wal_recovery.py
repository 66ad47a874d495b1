"""A DuckDB WAL that fails to replay is set aside loudly and the database opens; other open errors
(another process holding the file) never cost the WAL its writes."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from appliance.db.connection import Database

# Writes 20 committed inserts after a checkpoint and dies without closing: they live only in the WAL.
WRITER = textwrap.dedent(
    """
    import duckdb, os, sys
    con = duckdb.connect(sys.argv[1])
    con.execute("SET checkpoint_threshold = '1GB'")
    con.execute("CREATE TABLE t (i INTEGER, s VARCHAR)")
    con.execute("INSERT INTO t VALUES (-1, 'checkpointed')")
    con.execute("CHECKPOINT")
    for _ in range(20):
        con.execute("INSERT INTO t SELECT range, 'x' || range FROM range(100)")
    if len(sys.argv) > 2:  # hold the file open until told to go
        sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.readline()
    os._exit(0)
    """
)


def _write_uncheckpointed(db: Path) -> Path:
    subprocess.run([sys.executable, "-c", WRITER, str(db)], check=True)
    wal = db.with_name(db.name + ".wal")
    assert wal.stat().st_size > 10_000
    return wal


def corrupt_wal(db: Path, tmp: Path) -> None:
    """Flips bytes mid-WAL so a record fails its checksum. DuckDB silently drops some damage (a torn
    tail, a damaged header), so each candidate is first tried on a copy: the test then exercises
    the set-aside path, not a silent recovery."""
    wal = db.with_name(db.name + ".wal")
    original = wal.read_bytes()
    for fraction in (0.3, 0.7, 0.5, 0.2, 0.8):
        data = bytearray(original)
        at = int(len(data) * fraction)
        data[at : at + 64] = bytes(b ^ 0xFF for b in data[at : at + 64])
        probe = tmp / f"probe-{fraction}"
        probe.mkdir()
        shutil.copy(db, probe / db.name)
        (probe / wal.name).write_bytes(bytes(data))
        try:
            duckdb.connect(str(probe / db.name)).close()
        except duckdb.Error as exc:
            if "replaying WAL" in str(exc):
                wal.write_bytes(bytes(data))
                return
    raise AssertionError("no corruption of the WAL made DuckDB refuse it")


def test_unreplayable_wal_is_set_aside_loudly_and_the_database_opens(tmp_path, caplog):
    db_path = tmp_path / "appliance.duckdb"
    wal = _write_uncheckpointed(db_path)
    corrupt_wal(db_path, tmp_path)
    with caplog.at_level(logging.ERROR, logger="appliance.db.connection"):
        db = Database(db_path)
    try:
        aside = db.wal_set_aside
        assert aside is not None and aside.exists() and aside.name.startswith(wal.name + ".unreplayable-")
        assert not wal.exists() or wal.stat().st_size < 1000
        assert any(r.levelno == logging.ERROR and "WAL" in r.getMessage() for r in caplog.records)
        # What was checkpointed before the damaged WAL is all there, and the database takes writes.
        assert db.fetchall("SELECT s FROM t WHERE i = -1") == [("checkpointed",)]
        db.write("INSERT INTO t VALUES (1, 'after')")
        assert db.fetchone("SELECT count(*) FROM t WHERE s = 'after'") == (1,)
    finally:
        db.close()
    # The next start finds a clean database and sets nothing aside again.
    again = Database(db_path)
    assert again.wal_set_aside is None
    again.close()


def test_a_healthy_wal_replays_and_nothing_is_set_aside(tmp_path):
    db_path = tmp_path / "appliance.duckdb"
    _write_uncheckpointed(db_path)
    db = Database(db_path)
    try:
        assert db.wal_set_aside is None
        assert db.fetchone("SELECT count(*) FROM t") == (2001,)
    finally:
        db.close()


def test_a_locked_database_raises_and_keeps_its_wal(tmp_path):
    db_path = tmp_path / "appliance.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        wal = db_path.with_name(db_path.name + ".wal")
        assert wal.exists()
        with pytest.raises(duckdb.Error, match="lock"):
            Database(db_path)
        assert wal.exists()
        assert not list(tmp_path.glob("*.unreplayable-*"))
    finally:
        holder.communicate("go\n", timeout=30)
