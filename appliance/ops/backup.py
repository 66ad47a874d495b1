"""Consistent snapshots of a data directory (taken by the running server, or offline) and their restore."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from appliance import __version__
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.files import fsync_path, fsync_tree, replace_durably, sha256_file
from appliance.names import check_backup_name

if TYPE_CHECKING:
    from appliance.config import Settings
    from appliance.db.connection import Database
    from appliance.index.sync import IndexSync

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "MANIFEST.json"
DB_NAME = "appliance.duckdb"
# What a snapshot holds, relative to the data dir. The model files are left out: they are big and
# come back from the packages; their manifest (names and pins an admin wrote) is kept.
DATA_ITEMS = (DB_NAME, "index", "admin.key", "models/manifest.toml")
# Replaced on restore: the huey queue only signals work; start-up re-signals from DuckDB's jobs.
RESTORE_ASIDE = (DB_NAME, DB_NAME + ".wal", "index", "admin.key", "queue")
_LOCK_FILES = {".tantivy-writer.lock", ".tantivy-meta.lock"}


def backup_name(name: str | None) -> str:
    name = name or time.strftime("backup-%Y%m%dT%H%M%S")
    return check_backup_name(name)


def snapshot_online(
    db: Database, sync: IndexSync, data_dir: Path, dest: Path, config_file: Path | None
) -> dict:
    """Snapshot while the server runs and writes. DuckDB is copied inside one transaction
    (COPY FROM DATABASE reads a consistent MVCC view, sequences included) while the index sync is
    paused, so the copied indexes are at a seq the copied outbox still holds: a restore replays
    instead of rebuilding."""
    tmp = _start(dest)
    try:
        sync.flush()  # less to replay after a restore
        with sync.paused():
            _copy_tree(data_dir / "index", tmp / "index")
            counts = _copy_database(db, tmp / DB_NAME)
        for item in ("admin.key", "models/manifest.toml"):
            _copy_if_exists(data_dir / item, tmp / item)
        return _finish(tmp, dest, data_dir, config_file, counts, online=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def snapshot_stopped(settings: Settings, dest: Path, config_file: Path | None) -> dict:
    """Snapshot of a data dir no process has open: its files are at rest, so a copy is consistent."""
    data = settings.data_path
    if not (data / DB_NAME).exists():
        raise NotFound(f"no appliance data in {data} (no {DB_NAME})")
    ensure_not_in_use(data)
    tmp = _start(dest)
    try:
        for item in (*DATA_ITEMS, DB_NAME + ".wal"):
            _copy_if_exists(data / item, tmp / item)
        return _finish(tmp, dest, data, config_file, {}, online=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_not_in_use(data: Path) -> None:
    """Refuse when a process holds the DuckDB file: DuckDB locks it for its one read-write process."""
    path = data / DB_NAME
    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise Conflict(
                f"the data directory {data} is in use by a running appliance; stop it first "
                "(sudo systemctl stop appliance)"
            ) from None
        raise


def verify(src: Path) -> dict:
    """Read a snapshot's manifest and check every file against its recorded size and sha256."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise NotFound(f"{src} is not an appliance backup (no {MANIFEST})") from None
    except ValueError as exc:
        raise InvalidInput(f"{src / MANIFEST} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"backup format {manifest.get('format')!r} is not supported (expected {FORMAT})")
    for rel, meta in manifest["files"].items():
        path = src / rel
        if not path.is_file() or path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            raise InvalidInput(f"backup file {rel} is missing or does not match its recorded sha256")
    return manifest


def restore(settings: Settings, src: Path) -> dict:
    """Put a snapshot in place of the data dir's catalogue and indexes. The previous files are moved
    to <data dir>/pre-restore-<time>/, never deleted. The server must be stopped."""
    src = src.expanduser().resolve()
    manifest = verify(src)
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    ensure_not_in_use(data)
    aside = data / time.strftime("pre-restore-%Y%m%dT%H%M%S")
    moved = []
    for item in RESTORE_ASIDE:
        if (data / item).exists():
            aside.mkdir(exist_ok=True)
            os.replace(data / item, aside / item)
            moved.append(item)
    owner = data.stat()
    restored = []
    for rel in manifest["files"]:
        if rel.startswith("config/"):
            continue  # the config is the admin's: restore reports where it is, never overwrites it
        target = data / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        restored.append(target)
        if os.geteuid() == 0:  # keep the service user's ownership when root restores
            for path in (target, *target.relative_to(data).parents):
                os.chown(data / path, owner.st_uid, owner.st_gid)
    if (data / "admin.key").exists():
        os.chmod(data / "admin.key", 0o600)
    # On disk before the service starts on it: a power cut must not leave it empty files, the
    # previous ones already moved aside.
    folders = {data}
    for target in restored:
        fsync_path(target)
        folders.update(p for p in target.parents if p.is_relative_to(data))
    for folder in folders:
        fsync_path(folder)
    return {
        "restored": str(src),
        "data_dir": str(data),
        "moved_aside": str(aside) if moved else None,
        "created": manifest["created"],
        "appliance_version": manifest["appliance_version"],
        "counts": manifest.get("counts", {}),
        "config": str(src / "config" / "appliance.toml") if (src / "config").exists() else None,
    }


# -- internals -----------------------------------------------------------------------------------
def _start(dest: Path) -> Path:
    dest = dest.expanduser()
    if dest.exists():
        raise Conflict(f"{dest} already exists; choose a new destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(mode=0o700)  # a snapshot holds the admin key and every document
    return tmp


def _copy_database(db, target: Path) -> dict:
    alias = f"snapshot_{uuid.uuid4().hex[:12]}"
    cur = db.cursor()
    source = cur.execute("SELECT current_database()").fetchone()[0]
    cur.execute(f"ATTACH '{target}' AS {alias}")
    try:
        cur.execute(f"COPY FROM DATABASE {source} TO {alias}")
        counts = {
            "documents": cur.execute(f"SELECT count(*) FROM {alias}.documents").fetchone()[0],
            "chunks": cur.execute(f"SELECT count(*) FROM {alias}.chunks").fetchone()[0],
            "outbox_seq": cur.execute(f"SELECT coalesce(max(seq), 0) FROM {alias}.index_outbox").fetchone()[
                0
            ],
        }
    finally:
        cur.execute(f"DETACH {alias}")
    return counts


def _copy_tree(src: Path, dst: Path, attempts: int = 3) -> None:
    # Tantivy's merge threads may delete superseded segment files while we copy: copy again.
    for attempt in range(attempts):
        try:
            shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in _LOCK_FILES])
            return
        except (FileNotFoundError, shutil.Error):
            shutil.rmtree(dst, ignore_errors=True)
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


def _copy_if_exists(src: Path, dst: Path) -> None:
    if src.is_dir():
        _copy_tree(src, dst)
    elif src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _finish(tmp: Path, dest: Path, data: Path, config_file: Path | None, counts: dict, online: bool) -> dict:
    if config_file and config_file.is_file():
        _copy_if_exists(config_file, tmp / "config" / "appliance.toml")
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        files[str(path.relative_to(tmp))] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "appliance_version": __version__,
        "data_dir": str(data),
        "online": online,
        "counts": counts,
        "files": files,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    fsync_tree(tmp)
    replace_durably(tmp, dest)  # the snapshot appears whole or not at all
    log.info("backup written", extra={"path": str(dest), "files": len(files), **counts})
    return {
        "path": str(dest),
        **manifest,
        "files": len(files),
        "bytes": sum(f["size"] for f in files.values()),
    }
