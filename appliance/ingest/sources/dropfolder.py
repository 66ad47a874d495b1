"""The drop folder: `<inbox>/<collection>/...` watched and scanned, settled files handed in as jobs."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.db.catalog import document_id_for
from appliance.db.sources import KnownFile, SourceRecord
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument
from appliance.ingest.parsers import unsupported_reason
from appliance.ingest.pipeline import content_hash
from appliance.ingest.secrets import sensitive_name
from appliance.ingest.sources.files import ignored_name, path_key
from appliance.ingest.sources.protocols import Sink, SourceConfig, SyncResult
from appliance.names import is_collection_name

log = logging.getLogger(__name__)

SOURCE = "inbox"  # the drop folder's name among the sources: there is one, configured in settings
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Removal:
    path: str  # "<collection>/<relative path>"
    collection: str
    source_id: str


@dataclass(slots=True)
class Changes:
    """What one scan of one collection folder found ready."""

    collection: str
    upserts: list[NewDocument] = field(default_factory=list)
    seen: list[KnownFile] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)


def source_id_for(relative: str) -> str:
    return f"inbox:{relative}"


class DropFolder:
    """A file is taken once its size and mtime held still for `settle_seconds` across two looks,
    so a half-copied file waits. Only regular files under the root are read: symlinks leaving it,
    symlink loops, devices and FIFOs are refused and listed in the quarantine with their reason.

    Unlike other kinds it keeps state between syncs (the files still settling), so the one
    instance a source service holds is the one its watcher scans with."""

    kind = "dropfolder"

    def __init__(
        self,
        root: Path,
        *,
        settle_seconds: float,
        max_file_bytes: int,
        sensitive_patterns: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.settle_seconds = settle_seconds
        self.max_file_bytes = max_file_bytes
        self.sensitive_patterns = tuple(sensitive_patterns)
        self._pending: dict[
            str, tuple[str, float]
        ] = {}  # path -> (fingerprint, first seen on the monotonic clock)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DropFolder:
        return cls(
            settings.inbox_path,
            settle_seconds=settings.dropfolder.settle_seconds,
            max_file_bytes=settings.limits.max_file_bytes,
            sensitive_patterns=settings.hygiene.sensitive_patterns,
        )

    # -- the Source protocol ----------------------------------------------------------------------
    def validate(self, config: SourceConfig) -> SourceConfig:
        raise InvalidInput(
            "the drop folder is not added by hand: it is configured in settings ([dropfolder] path)"
        )

    def sync(self, record: SourceRecord, sink: Sink) -> SyncResult:
        """A full scan; the cursor stays unset, since what the folder holds is compared file by file."""
        return SyncResult(None, {"jobs": self.scan(sink)})

    def source_id(self, name: str, path: str) -> str:
        return source_id_for(path.split("/", 1)[1])

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending_collections(self) -> set[str]:
        return {key.split("/", 1)[0] for key in list(self._pending)}

    def seconds_until_settled(self) -> float | None:
        """When the first waiting file may be taken (None: nothing waits)."""
        if not self._pending:
            return None
        first = min(since for _, since in list(self._pending.values()))
        return max(0.0, first + self.settle_seconds - time.monotonic())

    # -- scanning -------------------------------------------------------------------------------
    def scan(self, sink: Sink, collections: Sequence[str] | None = None) -> list[str]:
        """Scan the given collection folders (all when None); returns the ids of jobs created."""
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            known = sink.known_files(SOURCE)
            names = sorted(collections) if collections is not None else self._collection_folders(sink, known)
            jobs = []
            for name in names:
                changes = self._scan_collection(sink, name, known)
                if changes.upserts or changes.removals:
                    job_id = sink.submit(
                        SOURCE,
                        changes.collection,
                        changes.upserts,
                        [(r.source_id, self.kind) for r in changes.removals],
                    )
                    if job_id:
                        jobs.append(job_id)
                if changes.seen or changes.removals:
                    sink.record_files(SOURCE, changes.seen, [r.path for r in changes.removals])
            return jobs

    def _collection_folders(self, sink: Sink, known: dict[str, KnownFile]) -> list[str]:
        names = {f.collection for f in known.values()}
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:
            log.warning("drop folder cannot be listed", extra={"path": str(self.root), "error": str(exc)})
            return []
        for entry in entries:
            if ignored_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False) and is_collection_name(entry.name):
                names.add(entry.name)
            elif entry.is_dir(follow_symlinks=False):
                self._refuse(
                    sink,
                    entry.name,
                    None,
                    "refused",
                    "folder name is not a valid collection name (a-z, 0-9, '_', '-'; at most 64)",
                )
            else:
                self._refuse(
                    sink,
                    path_key(entry.name),
                    None,
                    "refused",
                    "files must be placed in a collection folder: <inbox>/<collection>/...",
                )
        return sorted(names)

    def _scan_collection(self, sink: Sink, collection: str, known: dict[str, KnownFile]) -> Changes:
        changes = Changes(collection)
        folder = self.root / collection
        present: set[str] = set()
        if folder.is_dir() and not folder.is_symlink():
            real_root = os.path.realpath(self.root)
            for path, rel in self._walk(folder, "", 0):
                key = f"{collection}/{path_key(rel)}"
                present.add(key)
                self._consider(sink, collection, key, rel, path, real_root, known.get(key), changes)
        prefix = collection + "/"
        waiting = any(k.startswith(prefix) for k in self._pending)
        for key, item in known.items():
            if item.collection == collection and key not in present:
                if waiting:
                    continue  # maybe a move: delete the old path once the new one is taken
                changes.removals.append(Removal(key, collection, source_id_for(key[len(prefix) :])))
        for key in [k for k in self._pending if k.startswith(prefix) and k not in present]:
            del self._pending[key]
        sink.release_missing(SOURCE, collection, present)
        return changes

    def _walk(self, folder: Path, rel: str, depth: int):
        """Regular files and symlinks under `folder`; symlinked folders are never entered (no loops)."""
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("folder cannot be listed", extra={"path": str(folder), "error": str(exc)})
            return
        for entry in entries:
            if ignored_name(entry.name):
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH:
                    yield from self._walk(Path(entry.path), child, depth + 1)
                continue
            yield Path(entry.path), child

    def _consider(
        self,
        sink: Sink,
        collection: str,
        key: str,
        rel: str,
        path: Path,
        real_root: str,
        known: KnownFile | None,
        changes: Changes,
    ) -> None:
        if (pattern := sensitive_name(rel, self.sensitive_patterns)) is not None:
            if self._refuse(
                sink, key, collection, "sensitive", f"sensitive file name ({pattern}): never indexed"
            ):
                sink.count_secret(pattern)
            return
        try:
            real = os.path.realpath(path, strict=True)
        except (OSError, RuntimeError) as exc:
            reason = (
                "symlink loop" if "loop" in str(exc).lower() or isinstance(exc, RuntimeError) else str(exc)
            )
            self._refuse(sink, key, collection, "refused", f"cannot be resolved: {reason}")
            return
        if os.path.commonpath([real, real_root]) != real_root:
            self._refuse(sink, key, collection, "refused", "symlink points outside the drop folder")
            return
        try:
            st = os.stat(real)
        except OSError as exc:
            self._refuse(sink, key, collection, "refused", f"cannot be read: {exc.strerror or exc}")
            return
        if stat.S_ISDIR(st.st_mode):
            return  # a symlink to a folder inside the root: that folder is scanned where it lives
        if not stat.S_ISREG(st.st_mode):
            self._refuse(sink, key, collection, "refused", "not a regular file (device, FIFO or socket)")
            return
        fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
        if known is not None and known.fingerprint == fingerprint:
            return
        now = time.monotonic()
        first = self._pending.get(key)
        if first is None or first[0] != fingerprint:
            self._pending[key] = (fingerprint, now)
            if self.settle_seconds > 0:
                return
        elif now - first[1] < self.settle_seconds:
            return
        self._pending.pop(key, None)
        if st.st_size > self.max_file_bytes:
            self._refuse(
                sink,
                key,
                collection,
                "too_large",
                f"{st.st_size} bytes exceeds the limit of {self.max_file_bytes} bytes",
                st.st_size,
            )
            changes.seen.append(KnownFile(key, collection, fingerprint, None, self._doc_id(collection, rel)))
            return
        data = self._read(real, st)
        if data is None:
            return  # changed while we looked: the next scan sees it again
        digest = content_hash(data)
        doc_id = self._doc_id(collection, rel)
        changes.seen.append(KnownFile(key, collection, fingerprint, digest, doc_id))
        if known is not None and known.content_hash == digest:
            return  # touched, not changed
        if (reason := unsupported_reason(data, path_key(path.name))) is not None:
            self._refuse(sink, key, collection, "unsupported", reason, len(data), digest)
            return
        sink.release(SOURCE, key)  # taken now; a failed parse quarantines it again
        changes.upserts.append(
            NewDocument(
                source_id=source_id_for(path_key(rel)),
                content=data,
                filename=path_key(path.name),
                uri=path.absolute().as_uri() if path_key(rel) == rel else None,
                source_kind=self.kind,
                metadata={"path": path_key(rel)},
            )
        )

    def _read(self, real: str, before: os.stat_result) -> bytes | None:
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the scanner.
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (
                before.st_size,
                before.st_mtime_ns,
            ):
                return None
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(self.max_file_bytes + 1)
        finally:
            os.close(fd)
        return data if len(data) == before.st_size else None

    @staticmethod
    def _doc_id(collection: str, rel: str) -> str:
        return document_id_for(collection, source_id_for(path_key(rel)))

    def _refuse(
        self,
        sink: Sink,
        key: str,
        collection: str | None,
        kind: str,
        reason: str,
        size: int | None = None,
        digest: str | None = None,
    ) -> bool:
        """Quarantine a file the scanner will not take. True the first time (for counting)."""
        if sink.quarantine(SOURCE, key, collection, kind, reason, size, digest):
            log.warning("drop folder file not taken", extra={"path": key, "kind": kind, "reason": reason})
            return True
        return False


class DropFolderWatcher:
    """Runs scans on file-system events (watchfiles/inotify) and on a timer as the safety net."""

    def __init__(self, folder: DropFolder, sink: Sink, scan_interval: float, watch: bool = True) -> None:
        self.folder = folder
        self.sink = sink
        self.scan_interval = scan_interval
        self.watch = watch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._dirty: set[str] | None = None  # None: everything
        # The watcher thread adds to _dirty while the scan thread swaps it out: without the lock an
        # update can land in the set just taken, and that change waits for the next full scan.
        self._dirty_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.scans = 0

    def start(self) -> None:
        self.folder.root.mkdir(parents=True, exist_ok=True)
        self._spawn(self._scan_loop, "dropfolder-scan")
        if self.watch:
            self._spawn(self._watch_loop, "dropfolder-watch")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def poke(self, collections: Sequence[str] | None = None) -> None:
        with self._dirty_lock:
            if collections is None or self._dirty is None:
                self._dirty = None
            else:
                self._dirty.update(collections)
        self._wake.set()

    def _watch_loop(self) -> None:
        try:
            from watchfiles import watch
        except ImportError:
            log.warning("watchfiles is not installed: the drop folder is scanned on a timer only")
            return
        root = self.folder.root
        try:
            for changes in watch(
                root,
                stop_event=self._stop,
                debounce=200,
                step=50,
                recursive=True,
                raise_interrupt=False,
                ignore_permission_denied=True,
            ):
                collections = set()
                for _, changed in changes:
                    try:
                        parts = Path(changed).relative_to(root).parts
                    except ValueError:
                        continue
                    if len(parts) > 1:
                        collections.add(parts[0])
                    else:
                        collections = None
                        break
                self.poke(collections)
        except Exception:
            log.exception("drop folder watcher stopped; scanning on a timer only")

    def _scan_loop(self) -> None:
        next_full = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            full = now >= next_full
            with self._dirty_lock:
                targets, self._dirty = self._dirty, set()
            if full:
                next_full = now + self.scan_interval
                targets = None
            if targets is None or targets or self.folder.has_pending:
                try:
                    self.folder.scan(
                        self.sink,
                        None if targets is None else sorted(set(targets) | self.folder.pending_collections()),
                    )
                except Exception:
                    log.exception("drop folder scan failed; will retry")
                self.scans += 1
            # While files are settling, look again the moment the first of them may have settled.
            settled = self.folder.seconds_until_settled()
            timeout = next_full - time.monotonic() if settled is None else settled + 0.05
            self._wake.wait(timeout=max(0.05, timeout))
            self._wake.clear()
