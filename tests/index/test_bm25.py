"""Tantivy keyword index specifics: analysis, hostile queries, boosts, damaged directories."""

from __future__ import annotations

import pytest

from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.protocols import IndexedChunk


def doc(chunk_id: int, title: str, text: str, collection: str = "docs") -> IndexedChunk:
    return IndexedChunk(chunk_id, collection, f"doc-{chunk_id}", title, text)


CORPUS = [
    doc(1, "Field notes", "The dog runs along the river every morning before breakfast."),
    doc(2, "Kafka", "A distributed log that stores streams of records durably."),
    doc(3, "Overview", "Kafka is a distributed log that stores streams of records."),
    doc(4, "Tax rules", "Invoices must be kept for ten years under the commercial code."),
    doc(5, "C++ templates", "Template metaprogramming computes values at compile time (SFINAE)."),
]


@pytest.fixture
def index(tmp_path):
    ix = TantivyKeywordIndex(tmp_path / "bm25")
    ix.upsert(CORPUS)
    ix.commit(1)
    yield ix
    ix.close()


def ids(hits) -> list[int]:
    return [h.chunk_id for h in hits]


def test_stemming_matches_inflections(index):
    assert ids(index.search("running", ["docs"], 5)) == [1]
    assert ids(index.search("RUN", ["docs"], 5)) == [1]
    assert 4 in ids(index.search("invoice keeping", ["docs"], 5))


def test_title_match_outranks_body_match(index):
    hits = index.search("kafka", ["docs"], 5)
    assert ids(hits) == [2, 3]
    assert hits[0].score > hits[1].score > 0


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "((( nested (parens",
        "title:kafka",
        "nosuchfield:kafka",
        "kafka AND OR NOT",
        "AND",
        "[1 TO 5}",
        "{* TO *]",
        "kafka^",
        "kafka~2 dog~",
        "+kafka -log !records",
        "*",
        "?",
        "\\",
        "'; DROP TABLE chunks; --",
        "c++ templates",
        "kafka\x00dog",
        "😀 emoji 🐍",
        "/regex.*/",
        "kafka:" * 500,
        "x" * 100_000,
        " ".join(f"word{i}" for i in range(5000)),
    ],
)
def test_hostile_queries_never_raise(index, query):
    hits = index.search(query, ["docs"], 5)
    assert isinstance(hits, list)
    assert all(h.chunk_id in {1, 2, 3, 4, 5} for h in hits)


def test_query_syntax_is_just_text(index):
    assert set(ids(index.search("title:kafka", ["docs"], 5))) == {2, 3}
    assert ids(index.search("body:dog OR", ["docs"], 5)) == [1]
    assert 5 in ids(index.search("c++ (SFINAE)", ["docs"], 5))


def test_stop_words_only_and_empty(index):
    for q in ["", "  \n\t", "the", "and or not", "of the a is", "!!! ??? ..."]:
        assert index.search(q, ["docs"], 5) == []


def test_collection_filter_and_unknown_collections(index):
    index.upsert([doc(10, "Kafka", "Kafka in another team", collection="other-team")])
    index.commit(2)
    assert ids(index.search("kafka", ["other-team"], 5)) == [10]
    assert 10 not in ids(index.search("kafka", ["docs"], 5))
    assert index.search("kafka", ["Docs", "docs*", "*"], 5) == []


def test_meta_sentinel_is_invisible(index):
    assert index.count() == len(CORPUS)
    assert 0 not in ids(index.search("meta", ["docs"], 50))
    index.commit(2)  # seq moves with no data change
    assert (index.count(), index.applied_seq()) == (len(CORPUS), 2)


def test_writes_are_invisible_until_commit(index):
    index.upsert([doc(20, "Pending", "Zebras graze on the savanna")])
    assert index.search("zebra", ["docs"], 5) == []
    index.commit(2)
    assert ids(index.search("zebra", ["docs"], 5)) == [20]


def test_second_writer_is_refused_not_moved_aside(index, tmp_path):
    with pytest.raises(RuntimeError, match="locked"):
        TantivyKeywordIndex(tmp_path / "bm25")
    assert not list(tmp_path.glob("bm25.corrupt-*"))
    assert index.count() == len(CORPUS)


@pytest.mark.parametrize(
    "damage", ["garbage_meta", "empty_meta", "missing_segment_file", "truncated_segment", "a_file"]
)
def test_corrupt_directory_is_moved_aside(tmp_path, damage):
    path = tmp_path / "bm25"
    ix = TantivyKeywordIndex(path)
    ix.upsert(CORPUS)
    ix.commit(3)
    ix.close()
    segment_files = sorted(p for p in path.iterdir() if p.suffix in {".idx", ".term", ".store"})
    if damage == "garbage_meta":
        (path / "meta.json").write_text("{not json")
    elif damage == "empty_meta":
        (path / "meta.json").write_text("")
    elif damage == "missing_segment_file":
        segment_files[0].unlink()
    elif damage == "truncated_segment":
        with open(segment_files[-1], "r+b") as f:
            f.truncate(7)
    else:
        for p in path.iterdir():
            p.unlink()
        path.rmdir()
        path.write_text("not a directory")

    ix = TantivyKeywordIndex(path)
    try:
        assert ix.applied_seq() is None
        assert ix.count() == 0
        assert len(list(tmp_path.glob("bm25.corrupt-*"))) == 1
        ix.reset()
        ix.upsert(CORPUS[:2])
        ix.commit(4)
        assert ix.count() == 2
    finally:
        ix.close()


def test_missing_meta_means_rebuild(tmp_path):
    path = tmp_path / "bm25"
    ix = TantivyKeywordIndex(path)
    ix.upsert(CORPUS)
    ix.commit(3)
    ix.close()
    (path / "meta.json").unlink()
    ix = TantivyKeywordIndex(path)
    try:
        assert (ix.applied_seq(), ix.count()) == (None, 0)
    finally:
        ix.close()


def test_closed_index_refuses_work(tmp_path):
    from appliance.errors import NotReady

    ix = TantivyKeywordIndex(tmp_path / "bm25")
    ix.close()
    with pytest.raises(NotReady):
        ix.search("kafka", ["docs"], 5)
    with pytest.raises(NotReady):
        ix.upsert(CORPUS)
