"""Dense vector index: one USearch HNSW index per collection, saved as atomic file generations."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path

import numpy as np
from usearch.index import Index

from appliance.errors import NotReady
from appliance.files import fsync_path
from appliance.index.protocols import COLLECTION_RE, IndexedChunk, IndexHit, check_chunk_id, check_vector

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^(?P<coll>[a-z0-9][a-z0-9_-]{0,63})\.g(?P<gen>\d{8,})\.usearch$")
MANIFEST, PREVIOUS = "manifest.json", "manifest.prev.json"
FORMAT = 1
DTYPES = ("i8", "f16")
# Adds hold the lock that searches need; sub-batches bound how long a search can wait.
SUB_BATCH = 1024
# A collection this small is searched exactly (brute force over its vectors: about 1.6 ms at 50,000
# 384-d i8 vectors on this machine's two cores). HNSW may miss true neighbours, most of all in a
# small graph built by concurrent inserts (measured: 3% of 40-vector graphs lost a neighbour).
EXACT_SEARCH_MAX = 50_000


class USearchVectorIndex:
    """VectorIndex with exact per-collection isolation (one HNSW graph per collection).

    Upserts and deletes are searchable at once; `commit(seq)` saves every changed collection
    as a new generation file, then swaps the manifest that names the files and the seq.
    `applied_seq()` is None when neither manifest.json nor, as a fallback to the generation
    before it, manifest.prev.json describes a complete, checksum-valid set of files for these
    dimensions and dtype (also after `reset()` without a later commit); it then starts empty.
    """

    name = "vectors"
    count_settle_seconds = 0.0  # counts exactly what it committed

    def __init__(
        self, path: Path, dimensions: int, dtype: str = "i8", exact_search_max: int = EXACT_SEARCH_MAX
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if int(dimensions) <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        self.path = Path(path)
        self.dimensions = int(dimensions)
        self.dtype = dtype
        self.exact_search_max = int(exact_search_max)
        self._lock = threading.Lock()  # the in-memory graphs: mutations against searches
        self._write_lock = threading.Lock()  # one mutator at a time, held across a save
        self._indexes: dict[str, Index] = {}
        self._where: dict[int, str] = {}  # chunk id -> collection, so deletes need no collection
        self._dirty: set[str] = set()
        self._seq: int | None = None
        self._manifest: dict | None = None  # the manifest now on disk that our state came from
        self._generation = 0
        self._closed = False
        if self.path.exists() and not self.path.is_dir():
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            )
            log.error("vector index path is not a directory; moving it aside", extra={"aside": str(aside)})
            os.replace(self.path, aside)
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):  # an interrupted save
                p.unlink(missing_ok=True)
            elif m := FILE_RE.match(p.name):
                self._generation = max(self._generation, int(m["gen"]))
        self._load()

    # -- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        for name in (MANIFEST, PREVIOUS):
            if not (self.path / name).exists():
                continue
            try:
                manifest = json.loads((self.path / name).read_text())
                indexes, where = self._read(manifest)
            except Exception as exc:
                log.warning("vector index manifest unusable", extra={"manifest": name, "error": str(exc)})
                continue
            if name == PREVIOUS:
                log.warning(
                    "vector index fell back to the previous generation", extra={"seq": manifest["seq"]}
                )
            self._indexes, self._where, self._manifest = indexes, where, manifest
            self._seq = int(manifest["seq"])
            self._generation = max(self._generation, int(manifest["generation"]))
            return
        log.info("vector index has no usable manifest; starting empty", extra={"path": str(self.path)})

    def _read(self, manifest: dict) -> tuple[dict[str, Index], dict[int, str]]:
        if manifest.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {manifest.get('format')!r}")
        if (manifest["dimensions"], manifest["dtype"]) != (self.dimensions, self.dtype):
            raise ValueError(
                f"built for {manifest['dimensions']}-d {manifest['dtype']}, configured {self.dimensions}-d {self.dtype}"
            )
        if not isinstance(manifest["seq"], int) or not isinstance(manifest["generation"], int):
            raise ValueError("seq and generation must be integers")
        indexes: dict[str, Index] = {}
        where: dict[int, str] = {}
        for coll, entry in manifest["files"].items():
            m = FILE_RE.match(entry["file"])
            if not COLLECTION_RE.match(coll) or not m or m["coll"] != coll:
                raise ValueError(f"bad manifest entry {coll!r}: {entry!r}")
            file = self.path / entry["file"]
            # USearch trusts its input; a damaged graph may crash the interpreter rather than
            # raise, so nothing reaches it unless size and CRC match what the save recorded.
            if file.stat().st_size != entry["size"] or _crc32(file) != entry["crc32"]:
                raise ValueError(f"{file.name}: size or checksum mismatch")
            meta = Index.metadata(str(file))
            if (
                meta is None
                or meta["dimensions"] != self.dimensions
                or meta["kind_scalar"].name.lower() != self.dtype
                or meta["count_present"] != entry["count"]
            ):
                raise ValueError(f"{file.name}: header disagrees with manifest ({meta})")
            index = self._new_index()
            index.load(str(file))  # a private copy in RAM: never a view, which cannot take adds
            keys = index.keys[:].tolist()
            if len(keys) != entry["count"] or any(k in where for k in keys):
                raise ValueError(f"{file.name}: key count mismatch or key in two collections")
            where.update(zip(keys, repeat(coll)))
            indexes[coll] = index
        return indexes, where

    def _new_index(self) -> Index:
        return Index(ndim=self.dimensions, metric="cos", dtype=self.dtype)

    # -- SearchIndex -------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        return self._seq

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        latest: dict[int, tuple[str, np.ndarray]] = {}
        for c in chunks:  # validate everything before touching the graphs
            chunk_id = check_chunk_id(c.chunk_id)
            if not COLLECTION_RE.match(c.collection):
                raise ValueError(f"invalid collection name {c.collection!r}")
            if c.embedding is None:
                raise ValueError(f"chunk {chunk_id} has no embedding")
            latest[chunk_id] = (c.collection, check_vector(c.embedding, self.dimensions))
        groups: dict[str, list[int]] = {}
        for chunk_id, (coll, _) in latest.items():
            groups.setdefault(coll, []).append(chunk_id)
        with self._write_lock:
            self._check_open()
            for coll, ids in groups.items():
                for start in range(0, len(ids), SUB_BATCH):
                    part = ids[start : start + SUB_BATCH]
                    vectors = np.stack([latest[i][1] for i in part])
                    with self._lock:
                        self._remove_locked(part)  # USearch rejects duplicate keys: replace = remove + add
                        index = self._indexes.get(coll)
                        if index is None:
                            index = self._indexes[coll] = self._new_index()
                        index.add(np.asarray(part, dtype=np.uint64), vectors)
                        self._where.update(zip(part, repeat(coll)))
                        self._dirty.add(coll)

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [check_chunk_id(i) for i in chunk_ids]
        with self._write_lock, self._lock:
            self._check_open()
            self._remove_locked(ids)

    def _remove_locked(self, ids: Sequence[int]) -> None:
        by_coll: dict[str, list[int]] = {}
        for chunk_id in ids:
            coll = self._where.pop(chunk_id, None)
            if coll is not None:
                by_coll.setdefault(coll, []).append(chunk_id)
        for coll, keys in by_coll.items():
            self._indexes[coll].remove(np.asarray(keys, dtype=np.uint64))
            self._dirty.add(coll)

    def commit(self, seq: int) -> None:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        with self._write_lock:
            self._check_open()
            if not self._dirty and self._manifest is not None and seq == self._seq:
                return  # the caller commits after every batch; an unchanged state costs nothing
            gen = self._generation + 1
            files = dict(self._manifest["files"]) if self._manifest else {}
            # Saving only reads the graphs, and the write lock keeps mutators out: searches go on.
            for coll in sorted(self._dirty):
                index = self._indexes.get(coll)
                if index is None or len(index) == 0:
                    files.pop(coll, None)
                else:
                    files[coll] = self._save_file(index, f"{coll}.g{gen:08d}.usearch")
            fsync_path(self.path)
            manifest = {
                "format": FORMAT,
                "seq": seq,
                "dimensions": self.dimensions,
                "dtype": self.dtype,
                "generation": gen,
                "files": files,
            }
            previous = self._manifest
            if previous is not None:
                self._write_json(PREVIOUS, previous)
            else:
                # A stale previous manifest may name files the sweep below deletes.
                (self.path / PREVIOUS).unlink(missing_ok=True)
            self._write_json(MANIFEST, manifest)
            self._manifest, self._generation, self._seq = manifest, gen, seq
            self._dirty.clear()
            with self._lock:
                for coll in [c for c, i in self._indexes.items() if len(i) == 0]:
                    del self._indexes[coll]
            self._sweep(manifest, previous)

    def _save_file(self, index: Index, name: str) -> dict:
        tmp = self.path / f".{name}.tmp"
        try:
            index.save(str(tmp))  # USearch writes in place, unsynced: hence temp, fsync, rename
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())
                size = os.fstat(f.fileno()).st_size
            crc = _crc32(tmp)
            os.replace(tmp, self.path / name)
        finally:
            tmp.unlink(missing_ok=True)
        return {"file": name, "size": size, "crc32": crc, "count": len(index)}

    def _write_json(self, name: str, obj: dict) -> None:
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(obj, sort_keys=True).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)
        fsync_path(self.path)

    def _sweep(self, manifest: dict, previous: dict | None) -> None:
        # Keep the current and the previous generation: the fallback if the newest is damaged.
        keep = {e["file"] for e in manifest["files"].values()}
        keep |= {e["file"] for e in previous["files"].values()} if previous else set()
        for p in self.path.iterdir():
            if FILE_RE.match(p.name) and p.name not in keep:
                p.unlink(missing_ok=True)

    def count(self) -> int:
        with self._lock:
            return len(self._where)

    def reset(self) -> None:
        # The manifests go first and durably: a crash before the rebuild commits reopens as
        # None (rebuild again), never as an old seq over files the next sweep may delete.
        with self._write_lock, self._lock:
            self._check_open()
            for name in (MANIFEST, PREVIOUS):
                (self.path / name).unlink(missing_ok=True)
            fsync_path(self.path)
            self._indexes.clear()
            self._where.clear()
            self._dirty.clear()
            self._manifest, self._seq = None, 0

    def close(self) -> None:
        with self._write_lock, self._lock:
            self._closed = True
            self._indexes.clear()
            self._where.clear()

    # -- VectorIndex -------------------------------------------------------------------------
    def search(self, vector: np.ndarray, collections: Sequence[str], k: int) -> list[IndexHit]:
        query = check_vector(vector, self.dimensions)
        colls = list(dict.fromkeys(collections))
        if k <= 0 or not colls:
            return []
        found: list[tuple[float, int]] = []
        with self._lock:
            self._check_open()
            for coll in colls:
                index = self._indexes.get(coll)
                if index is None or len(index) == 0:
                    continue
                size = len(index)
                matches = index.search(query, min(k, size), exact=size <= self.exact_search_max)
                found.extend(zip(matches.distances.tolist(), matches.keys.tolist(), strict=True))
        found.sort()
        # Quantised distances can stray just outside [0, 2].
        return [IndexHit(int(key), min(1.0, max(-1.0, 1.0 - dist))) for dist, key in found[:k]]

    # -- helpers -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise NotReady("vector index is closed")


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc
