"""In-memory keyword (BM25) and vector (exact cosine) indexes, optionally committed to one file."""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import NotReady
from appliance.files import fsync_path, write_atomically
from appliance.index.protocols import COLLECTION_RE, IndexedChunk, IndexHit, check_chunk_id, check_vector

log = logging.getLogger(__name__)

FORMAT = 1
# Okapi BM25 with Tantivy's defaults, and its title boost, so rankings resemble the real index.
K1, B = 1.2, 0.75
TITLE_BOOST = 1.5
MAX_TOKEN_BYTES = 40  # longer tokens are dropped, like Tantivy's remove_long(40)
MAX_QUERY_CHARS = 4096
MAX_QUERY_TERMS = 64
# The English stop words Tantivy removes from queries; removed here when indexing too.
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
_TOKEN_RE = re.compile(r"[^\W_]+")  # runs of letters and digits: Tantivy's simple tokenizer


def terms(text: str) -> list[str]:
    """Lowercased alphanumeric tokens, without stop words or overlong tokens (no stemming)."""
    return [
        t
        for t in _TOKEN_RE.findall(text.lower())
        if t not in STOP_WORDS and len(t.encode()) < MAX_TOKEN_BYTES
    ]


def _check_collection(collection: str) -> str:
    if not isinstance(collection, str) or not COLLECTION_RE.match(collection):
        raise ValueError(f"invalid collection name {collection!r}")
    return collection


class _CommitFile:
    """The one file a durable memory index commits to, replaced whole; no file when volatile."""

    def __init__(self, folder: Path | None, name: str) -> None:
        self.file = Path(folder) / name if folder is not None else None
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            for leftover in self.file.parent.glob(f".{name}.*.tmp"):  # a commit killed mid-write
                leftover.unlink(missing_ok=True)

    def read(self) -> bytes | None:
        if self.file is None or not self.file.exists():
            return None
        return self.file.read_bytes()

    def write(self, data: bytes) -> None:
        if self.file is not None:
            write_atomically(self.file, data)

    def remove(self) -> None:
        # Durably gone before a rebuild starts: a crash then reopens as "missing", never as stale.
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            fsync_path(self.file.parent)


# -- keyword ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Doc:
    collection: str
    document_id: str
    title: str
    text: str
    title_terms: Counter[str]
    body_terms: Counter[str]


class _Field:
    """Postings and lengths of one text field, and its BM25 contribution."""

    def __init__(self, boost: float) -> None:
        self.boost = boost
        self.postings: dict[str, dict[int, int]] = {}  # term -> chunk id -> term frequency
        self.lengths: dict[int, int] = {}
        self.total = 0

    def add(self, chunk_id: int, counts: Counter[str]) -> None:
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[chunk_id] = tf
        self.lengths[chunk_id] = length = sum(counts.values())
        self.total += length

    def remove(self, chunk_id: int, counts: Counter[str]) -> None:
        for term in counts:
            postings = self.postings[term]
            del postings[chunk_id]
            if not postings:
                del self.postings[term]
        self.total -= self.lengths.pop(chunk_id)

    def score_into(
        self, scores: dict[int, float], query: list[str], n_docs: int, docs: dict[int, _Doc], colls: set[str]
    ) -> None:
        # Corpus statistics span every collection, as in Tantivy, whose collection filter scores 0.
        if not self.total:
            return
        avg_length = self.total / n_docs
        for term in query:
            postings = self.postings.get(term)
            if not postings:
                continue
            df = len(postings)
            weight = self.boost * math.log(1 + (n_docs - df + 0.5) / (df + 0.5)) * (K1 + 1)
            for chunk_id, tf in postings.items():
                if docs[chunk_id].collection in colls:
                    norm = K1 * (1 - B + B * self.lengths[chunk_id] / avg_length)
                    scores[chunk_id] = scores.get(chunk_id, 0.0) + weight * tf / (tf + norm)


class MemoryKeywordIndex:
    """KeywordIndex held in RAM: Okapi BM25 over title (boosted) and body, no stemming.

    Like the Tantivy index, upserts and deletes wait in a pending batch and become searchable
    at `commit`. With a `path` (a folder) each commit first writes the whole state to one file,
    atomically, so a reopen or a kill -9 keeps exactly the last commit; without one nothing
    outlives the object. `applied_seq()` is None until a commit (or a usable file) says
    otherwise, and again after `reset()` until the next commit.
    """

    name = "memory-bm25"
    count_settle_seconds = 0.0  # counts exactly what it committed
    FILE = "keyword.json"

    def __init__(self, path: Path | None = None) -> None:
        self._file = _CommitFile(path, self.FILE)
        self._lock = threading.Lock()  # the searchable state: commits against searches
        self._write_lock = threading.Lock()  # one mutator at a time, held across a commit's write
        self._docs: dict[int, _Doc] = {}
        self._title, self._body = _Field(TITLE_BOOST), _Field(1.0)
        self._pending: dict[int, IndexedChunk | None] = {}  # None: a delete
        self._seq: int | None = None
        self._committed = False  # whether `_seq` names a state committed since the last reset
        self._closed = False
        self._load()

    def _load(self) -> None:
        try:
            data = self._file.read()
            if data is None:
                return
            state = json.loads(data)
            if state.get("format") != FORMAT or not isinstance(state.get("seq"), int) or state["seq"] < 0:
                raise ValueError(f"unknown format or bad seq in {self._file.file}")
            for chunk_id, collection, document_id, title, text in state["chunks"]:
                if not all(isinstance(s, str) for s in (document_id, title, text)):
                    raise ValueError(f"chunk {chunk_id!r}: fields must be strings")
                if check_chunk_id(chunk_id) in self._docs:
                    raise ValueError(f"chunk {chunk_id} appears twice")
                self._add(IndexedChunk(chunk_id, _check_collection(collection), document_id, title, text))
        except Exception as exc:
            log.warning(
                "memory keyword index file unusable; starting empty",
                extra={"path": str(self._file.file), "error": str(exc)},
            )
            self._docs.clear()
            self._title, self._body = _Field(TITLE_BOOST), _Field(1.0)
            return
        self._seq, self._committed = state["seq"], True

    # -- SearchIndex -------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        return self._seq

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        for c in chunks:  # validate everything before queueing anything
            check_chunk_id(c.chunk_id)
            _check_collection(c.collection)
        with self._write_lock:
            self._check_open()
            for c in chunks:
                self._pending[int(c.chunk_id)] = c  # the last version in the batch wins

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [check_chunk_id(i) for i in chunk_ids]
        with self._write_lock:
            self._check_open()
            self._pending.update(dict.fromkeys(ids))

    def commit(self, seq: int) -> None:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        with self._write_lock:
            self._check_open()
            if not self._pending and self._committed and seq == self._seq:
                return
            if self._file.file is not None:
                # Written before the batch is applied: a failed write leaves state and seq as they were.
                self._file.write(self._serialise(seq))
            with self._lock:
                for chunk_id, c in self._pending.items():
                    self._remove(chunk_id)
                    if c is not None:
                        self._add(c)
            self._pending.clear()
            self._seq, self._committed = seq, True

    def _serialise(self, seq: int) -> bytes:
        rows = {cid: [cid, d.collection, d.document_id, d.title, d.text] for cid, d in self._docs.items()}
        for cid, c in self._pending.items():
            if c is None:
                rows.pop(cid, None)
            else:
                rows[cid] = [cid, c.collection, str(c.document_id), c.title or "", c.text or ""]
        state = {"format": FORMAT, "seq": seq, "chunks": [rows[cid] for cid in sorted(rows)]}
        return json.dumps(state, ensure_ascii=False).encode()

    def count(self) -> int:
        with self._lock:
            return len(self._docs)

    def reset(self) -> None:
        with self._write_lock, self._lock:
            self._check_open()
            self._file.remove()
            self._pending.clear()  # pending writes would otherwise survive the reset
            self._docs.clear()
            self._title, self._body = _Field(TITLE_BOOST), _Field(1.0)
            self._seq, self._committed = 0, False

    def close(self) -> None:
        with self._write_lock, self._lock:
            self._closed = True
            self._pending.clear()
            self._docs.clear()
            self._title, self._body = _Field(TITLE_BOOST), _Field(1.0)

    # -- KeywordIndex ------------------------------------------------------------------------
    def search(self, query: str, collections: Sequence[str], k: int) -> list[IndexHit]:
        words = list(dict.fromkeys(terms((query or "")[:MAX_QUERY_CHARS])))[:MAX_QUERY_TERMS]
        colls = {c for c in collections if isinstance(c, str)}
        with self._lock:
            self._check_open()
            if not words or not colls or k <= 0 or not self._docs:
                return []
            scores: dict[int, float] = {}
            for field in (self._title, self._body):
                field.score_into(scores, words, len(self._docs), self._docs, colls)
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [IndexHit(cid, score) for cid, score in best]

    # -- helpers -----------------------------------------------------------------------------
    def _add(self, c: IndexedChunk) -> None:
        title, text = c.title or "", c.text or ""
        doc = _Doc(c.collection, str(c.document_id), title, text, Counter(terms(title)), Counter(terms(text)))
        chunk_id = int(c.chunk_id)  # a NumPy id would not serialise
        self._docs[chunk_id] = doc
        self._title.add(chunk_id, doc.title_terms)
        self._body.add(chunk_id, doc.body_terms)

    def _remove(self, chunk_id: int) -> None:
        doc = self._docs.pop(chunk_id, None)
        if doc is not None:
            self._title.remove(chunk_id, doc.title_terms)
            self._body.remove(chunk_id, doc.body_terms)

    def _check_open(self) -> None:
        if self._closed:
            raise NotReady("memory keyword index is closed")


# -- vectors ---------------------------------------------------------------------------------


class MemoryVectorIndex:
    """VectorIndex held in RAM: exact cosine similarity over float32 unit vectors.

    Like the USearch index, upserts and deletes are searchable at once; with a `path` (a
    folder) `commit(seq)` writes every vector and the seq to one file, atomically, so a reopen
    keeps exactly the last commit. `applied_seq()` is None when there is no usable file for
    these dimensions (and after `reset()` until the next commit).
    """

    name = "memory-vectors"
    count_settle_seconds = 0.0  # counts exactly what it committed
    FILE = "vectors.npz"

    def __init__(self, dimensions: int, path: Path | None = None) -> None:
        if int(dimensions) <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        self.dimensions = int(dimensions)
        self._file = _CommitFile(path, self.FILE)
        self._lock = threading.Lock()  # the vectors: mutations against searches
        self._write_lock = threading.Lock()  # one mutator at a time, held across a commit's write
        self._vectors: dict[str, dict[int, np.ndarray]] = {}  # collection -> chunk id -> unit vector
        self._where: dict[int, str] = {}  # chunk id -> collection, so deletes need no collection
        self._matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # (ids, rows), built by searches
        self._dirty = False
        self._seq: int | None = None
        self._committed = False
        self._closed = False
        self._load()

    def _load(self) -> None:
        try:
            data = self._file.read()
            if data is None:
                return
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                version, seq, dims = int(z["format"]), int(z["seq"]), int(z["dimensions"])
                ids, colls, vectors = z["ids"], z["collections"], z["vectors"]
            if version != FORMAT or seq < 0:
                raise ValueError(f"unknown format {version} or bad seq {seq}")
            if dims != self.dimensions:
                raise ValueError(f"built for {dims} dimensions, configured {self.dimensions}")
            if vectors.shape != (len(ids), dims) or colls.shape != ids.shape or vectors.dtype != np.float32:
                raise ValueError("arrays disagree in shape or type")
            for chunk_id, coll, vector in zip(ids.tolist(), colls.tolist(), vectors, strict=True):
                if check_chunk_id(chunk_id) in self._where:
                    raise ValueError(f"chunk {chunk_id} appears twice")
                self._vectors.setdefault(_check_collection(coll), {})[chunk_id] = self._as_unit(vector)
                self._where[chunk_id] = coll
        except Exception as exc:
            log.warning(
                "memory vector index file unusable; starting empty",
                extra={"path": str(self._file.file), "error": str(exc)},
            )
            self._vectors.clear()
            self._where.clear()
            return
        self._seq, self._committed = seq, True

    # -- SearchIndex -------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        return self._seq

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        latest: dict[int, tuple[str, np.ndarray]] = {}
        for c in chunks:  # validate everything before touching the state
            chunk_id = check_chunk_id(c.chunk_id)
            if c.embedding is None:
                raise ValueError(f"chunk {chunk_id} has no embedding")
            latest[chunk_id] = (_check_collection(c.collection), self._as_unit(c.embedding))
        with self._write_lock, self._lock:
            self._check_open()
            self._remove_locked(latest)
            for chunk_id, (coll, vector) in latest.items():
                self._vectors.setdefault(coll, {})[chunk_id] = vector
                self._where[chunk_id] = coll
                self._matrices.pop(coll, None)
            self._dirty = self._dirty or bool(latest)

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [check_chunk_id(i) for i in chunk_ids]
        with self._write_lock, self._lock:
            self._check_open()
            self._remove_locked(ids)

    def _remove_locked(self, ids: Iterable[int]) -> None:
        for chunk_id in ids:
            coll = self._where.pop(chunk_id, None)
            if coll is not None:
                del self._vectors[coll][chunk_id]
                if not self._vectors[coll]:
                    del self._vectors[coll]
                self._matrices.pop(coll, None)
                self._dirty = True

    def commit(self, seq: int) -> None:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        with self._write_lock:
            self._check_open()
            if not self._dirty and self._committed and seq == self._seq:
                return
            if self._file.file is not None:
                # Mutators wait on the write lock, so the state holds still while it is written.
                self._file.write(self._serialise(seq))
            self._seq, self._committed, self._dirty = seq, True, False

    def _serialise(self, seq: int) -> bytes:
        ids = sorted(self._where)
        colls = [self._where[i] for i in ids]
        vectors = [self._vectors[c][i] for i, c in zip(ids, colls, strict=True)]
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.int64(FORMAT),
            seq=np.int64(seq),
            dimensions=np.int64(self.dimensions),
            ids=np.asarray(ids, dtype=np.int64),
            collections=np.asarray(colls, dtype="<U64"),
            vectors=np.stack(vectors) if vectors else np.zeros((0, self.dimensions), np.float32),
        )
        return buf.getvalue()

    def count(self) -> int:
        with self._lock:
            return len(self._where)

    def reset(self) -> None:
        with self._write_lock, self._lock:
            self._check_open()
            self._file.remove()
            self._vectors.clear()
            self._where.clear()
            self._matrices.clear()
            self._seq, self._committed, self._dirty = 0, False, False

    def close(self) -> None:
        with self._write_lock, self._lock:
            self._closed = True
            self._vectors.clear()
            self._where.clear()
            self._matrices.clear()

    # -- VectorIndex -------------------------------------------------------------------------
    def search(self, vector: np.ndarray, collections: Sequence[str], k: int) -> list[IndexHit]:
        query = self._as_unit(vector)
        colls = list(dict.fromkeys(collections))
        if k <= 0 or not colls:
            return []
        found_ids, found_scores = [], []
        with self._lock:
            self._check_open()
            for coll in colls:
                if coll not in self._vectors:
                    continue
                ids, rows = self._matrix_locked(coll)
                found_ids.append(ids)
                found_scores.append(rows @ query)
        if not found_ids:
            return []
        ids, scores = np.concatenate(found_ids), np.clip(np.concatenate(found_scores), -1.0, 1.0)
        best = np.lexsort((ids, -scores))[:k]  # by score, ties by chunk id
        return [IndexHit(int(ids[i]), float(scores[i])) for i in best]

    # -- helpers -----------------------------------------------------------------------------
    def _matrix_locked(self, coll: str) -> tuple[np.ndarray, np.ndarray]:
        # Stacked once per change of the collection, not once per search.
        cached = self._matrices.get(coll)
        if cached is None:
            rows = self._vectors[coll]
            ids = np.fromiter(rows, np.int64, len(rows))
            cached = self._matrices[coll] = (ids, np.stack(list(rows.values())))
        return cached

    def _as_unit(self, vector: np.ndarray) -> np.ndarray:
        v = check_vector(vector, self.dimensions)
        return v / np.linalg.norm(v)

    def _check_open(self) -> None:
        if self._closed:
            raise NotReady("memory vector index is closed")
