"""In-memory index specifics: BM25 arithmetic, agreement with Tantivy, visibility, damaged files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.errors import NotReady
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.memory import MemoryKeywordIndex, MemoryVectorIndex, terms
from appliance.index.protocols import IndexedChunk

DIM = 16


def doc(chunk_id: int, title: str, text: str, collection: str = "docs") -> IndexedChunk:
    return IndexedChunk(chunk_id, collection, f"doc-{chunk_id}", title, text)


def vec(chunk_id: int, vector, collection: str = "docs") -> IndexedChunk:
    return IndexedChunk(chunk_id, collection, f"doc-{chunk_id}", "", "", np.asarray(vector))


def ids(hits) -> list[int]:
    return [h.chunk_id for h in hits]


CORPUS = [
    doc(1, "Field notes", "The dog runs along the river every morning before breakfast."),
    doc(2, "Kafka", "A distributed log that stores streams of records durably."),
    doc(3, "Overview", "Kafka is a distributed log that stores streams of records."),
    doc(4, "Tax rules", "Invoices must be kept for ten years under the commercial code."),
    doc(5, "C++ templates", "Template metaprogramming computes values at compile time (SFINAE)."),
]


def test_terms_are_lowercased_alphanumeric_runs_without_stop_words():
    assert terms("C++ (SFINAE) is_valid, Straße 42x!") == ["c", "sfinae", "valid", "straße", "42x"]
    assert terms("the and of a") == []
    assert terms("x" * 39 + " " + "y" * 40) == ["x" * 39]


def test_bm25_scores_follow_okapi_with_tantivy_defaults():
    ix = MemoryKeywordIndex()
    ix.upsert([doc(1, "", "apple banana"), doc(2, "", "apple apple cherry date")])
    ix.commit(1)
    idf = math.log(1 + (2 - 2 + 0.5) / (2 + 0.5))  # both documents contain "apple"
    avg = (2 + 4) / 2

    def expected(tf: int, length: int) -> float:
        return idf * 2.2 * tf / (tf + 1.2 * (0.25 + 0.75 * length / avg))

    hits = ix.search("Apple", ["docs"], 5)
    assert ids(hits) == [2, 1]
    assert [h.score for h in hits] == pytest.approx([expected(2, 4), expected(1, 2)])


def test_title_terms_weigh_one_and_a_half_times_body_terms():
    ix = MemoryKeywordIndex()
    ix.upsert([doc(1, "apple", "banana"), doc(2, "cherry", "apple")])  # symmetric statistics
    ix.commit(1)
    title, body = ix.search("apple", ["docs"], 5)
    assert (title.chunk_id, body.chunk_id) == (1, 2)
    assert title.score == pytest.approx(1.5 * body.score)


def test_title_match_outranks_body_match():
    ix = MemoryKeywordIndex()
    ix.upsert(CORPUS)
    ix.commit(1)
    hits = ix.search("kafka", ["docs"], 5)
    assert ids(hits) == [2, 3]
    assert hits[0].score > hits[1].score > 0


@pytest.mark.parametrize(
    "query", ["kafka", "dog river", "commercial code years", "compile values", "records"]
)
def test_rankings_agree_with_tantivy(tmp_path, query):
    # Words that stemming leaves alone: the two analysers then see the same terms.
    tantivy, memory = TantivyKeywordIndex(tmp_path / "bm25"), MemoryKeywordIndex()
    try:
        for ix in (tantivy, memory):
            ix.upsert(CORPUS)
            ix.commit(1)
        assert ids(memory.search(query, ["docs"], 5)) == ids(tantivy.search(query, ["docs"], 5))
    finally:
        tantivy.close()


def test_keyword_writes_are_invisible_until_commit():
    ix = MemoryKeywordIndex()
    ix.upsert(CORPUS)
    ix.commit(1)
    ix.upsert([doc(20, "Pending", "Zebras graze on the savanna")])
    ix.delete([2])
    assert ix.search("zebras", ["docs"], 5) == []
    assert ids(ix.search("kafka", ["docs"], 5)) == [2, 3]
    assert ix.count() == 5
    ix.commit(2)
    assert ids(ix.search("zebras", ["docs"], 5)) == [20]
    assert ids(ix.search("kafka", ["docs"], 5)) == [3]


def test_vectors_are_searchable_before_commit_with_exact_cosine():
    ix = MemoryVectorIndex(DIM)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(DIM), rng.standard_normal(DIM)
    ix.upsert([vec(1, a * 10), vec(2, b)])  # stored normalised, whatever the input's length
    hits = {h.chunk_id: h.score for h in ix.search(a.astype(np.float64), ["docs"], 2)}
    assert hits[1] == pytest.approx(1.0, abs=1e-6)
    assert hits[2] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-6)
    ix.delete([1])
    assert ids(ix.search(a, ["docs"], 5)) == [2]


def test_vector_ties_are_broken_by_chunk_id():
    ix = MemoryVectorIndex(DIM)
    e = np.eye(DIM)
    ix.upsert([vec(9, e[0]), vec(4, e[0]), vec(7, e[1], "other"), vec(5, e[0], "other")])
    assert ids(ix.search(e[0], ["docs", "other"], 3)) == [4, 5, 9]


def test_bad_vectors_are_refused():
    ix = MemoryVectorIndex(DIM)
    for bad in (None, np.zeros(DIM), np.ones(DIM + 1), np.full(DIM, np.nan)):
        with pytest.raises(ValueError):
            ix.upsert([vec(1, np.ones(DIM)), IndexedChunk(2, "docs", "d", "", "", bad)])
    with pytest.raises(ValueError):
        ix.search(np.ones(DIM - 1), ["docs"], 3)
    assert ix.count() == 0  # a refused batch leaves nothing behind
    with pytest.raises(ValueError):
        MemoryVectorIndex(0)


@pytest.mark.parametrize("kind", ["keyword", "vectors"])
def test_damaged_file_means_rebuild_and_stays_usable(tmp_path, kind):
    def open_index():
        return MemoryKeywordIndex(tmp_path) if kind == "keyword" else MemoryVectorIndex(DIM, tmp_path)

    ix = open_index()
    ix.upsert([IndexedChunk(1, "docs", "d", "Kafka", "log", np.ones(DIM))])
    ix.commit(4)
    ix.close()
    file = tmp_path / ix.FILE
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    (tmp_path / f".{ix.FILE}.abc123.tmp").write_bytes(b"half a commit")
    ix = open_index()
    assert (ix.applied_seq(), ix.count()) == (None, 0)
    assert not list(tmp_path.glob(".*.tmp"))
    ix.upsert([IndexedChunk(2, "docs", "d", "Kafka", "log", np.ones(DIM))])
    ix.commit(5)
    ix.close()
    ix = open_index()
    assert (ix.applied_seq(), ix.count()) == (5, 1)


def test_other_dimensions_mean_rebuild(tmp_path):
    ix = MemoryVectorIndex(DIM, tmp_path)
    ix.upsert([vec(1, np.ones(DIM))])
    ix.commit(3)
    assert MemoryVectorIndex(DIM * 2, tmp_path).applied_seq() is None
    again = MemoryVectorIndex(DIM, tmp_path)
    assert (again.applied_seq(), again.count()) == (3, 1)


def test_clean_commit_writes_nothing(tmp_path):
    ix = MemoryKeywordIndex(tmp_path)
    ix.upsert(CORPUS)
    ix.commit(1)
    before = (tmp_path / ix.FILE).stat().st_mtime_ns
    ix.commit(1)
    assert (tmp_path / ix.FILE).stat().st_mtime_ns == before
    ix.commit(2)  # only the seq moved: still written, or a reopen would replay from 1
    assert MemoryKeywordIndex(tmp_path).applied_seq() == 2


@pytest.mark.parametrize("kind", ["keyword", "vectors"])
def test_closed_index_refuses_work(kind):
    ix = MemoryKeywordIndex() if kind == "keyword" else MemoryVectorIndex(DIM)
    ix.close()
    with pytest.raises(NotReady):
        ix.search("kafka" if kind == "keyword" else np.ones(DIM), ["docs"], 5)
    with pytest.raises(NotReady):
        ix.upsert([IndexedChunk(1, "docs", "d", "t", "x", np.ones(DIM))])
    with pytest.raises(NotReady):
        ix.commit(1)
