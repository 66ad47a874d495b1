"""USearch vector index specifics: generations, damaged files, dtypes, large batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from appliance.errors import NotReady
from appliance.index.protocols import IndexedChunk
from appliance.index.vectors import USearchVectorIndex

DIM = 64


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def chunks(vs: np.ndarray, start: int = 1, collection: str = "docs") -> list[IndexedChunk]:
    return [IndexedChunk(start + i, collection, f"d{start + i}", "", "", v) for i, v in enumerate(vs)]


def generation_files(path) -> list[str]:
    return sorted(p.name for p in path.glob("*.usearch"))


@pytest.fixture
def two_generations(tmp_path):
    """An index committed twice: seq 1 holds 50 vectors, seq 2 holds 80."""
    path = tmp_path / "vec"
    ix = USearchVectorIndex(path, DIM)
    ix.upsert(chunks(vectors(50)))
    ix.commit(1)
    ix.upsert(chunks(vectors(30, seed=1), start=51))
    ix.commit(2)
    ix.close()
    return path


def reopen(path, **kw) -> USearchVectorIndex:
    return USearchVectorIndex(path, kw.pop("dimensions", DIM), **kw)


def test_reopen_keeps_exact_state(two_generations):
    ix = reopen(two_generations)
    assert (ix.applied_seq(), ix.count()) == (2, 80)
    assert ix.search(vectors(30, seed=1)[4], ["docs"], 1)[0].chunk_id == 55


def test_truncated_newest_generation_falls_back_to_previous(two_generations):
    manifest = json.loads((two_generations / "manifest.json").read_text())
    newest = two_generations / manifest["files"]["docs"]["file"]
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    ix = reopen(two_generations)
    assert (ix.applied_seq(), ix.count()) == (1, 50)


def test_bit_flip_is_caught_by_checksum(two_generations):
    manifest = json.loads((two_generations / "manifest.json").read_text())
    newest = two_generations / manifest["files"]["docs"]["file"]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the CRC notices
    newest.write_bytes(bytes(data))
    assert reopen(two_generations).applied_seq() == 1


def test_missing_manifest_falls_back_then_gives_up(two_generations):
    (two_generations / "manifest.json").unlink()
    assert reopen(two_generations).applied_seq() == 1
    (two_generations / "manifest.prev.json").write_text('{"format": 1, "seq": ')
    ix = reopen(two_generations)
    assert (ix.applied_seq(), ix.count()) == (None, 0)
    ix.upsert(chunks(vectors(5)))  # starts empty and usable
    ix.commit(3)
    assert reopen(two_generations).applied_seq() == 3


def test_every_file_damaged_means_none(two_generations):
    for p in two_generations.glob("*.usearch"):
        p.write_bytes(p.read_bytes()[:100])
    ix = reopen(two_generations)
    assert (ix.applied_seq(), ix.count()) == (None, 0)


def test_leftover_temp_files_are_ignored_and_removed(two_generations):
    (two_generations / ".docs.g00000099.usearch.tmp").write_bytes(b"\x00" * 1000)
    (two_generations / ".manifest.json.tmp").write_text("{")
    ix = reopen(two_generations)
    assert ix.applied_seq() == 2
    assert not list(two_generations.glob(".*.tmp"))


def test_path_that_is_a_file_is_moved_aside(tmp_path):
    (tmp_path / "vec").write_text("not a directory")
    ix = USearchVectorIndex(tmp_path / "vec", DIM)
    assert (ix.applied_seq(), ix.count()) == (None, 0)
    assert len(list(tmp_path.glob("vec.corrupt-*"))) == 1


def test_settings_change_means_rebuild(two_generations):
    assert reopen(two_generations, dtype="f16").applied_seq() is None
    assert reopen(two_generations, dimensions=DIM * 2).applied_seq() is None


def test_generations_keep_current_and_previous_only(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM)
    for seq in range(1, 6):
        ix.upsert(chunks(vectors(3, seed=seq), start=seq * 10))
        ix.commit(seq)
    assert generation_files(tmp_path) == ["docs.g00000004.usearch", "docs.g00000005.usearch"]
    ix.upsert(chunks(vectors(2), collection="other"))
    ix.commit(6)  # only "other" changed: "docs" keeps its file
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {c: e["file"] for c, e in manifest["files"].items()} == {
        "docs": "docs.g00000005.usearch",
        "other": "other.g00000006.usearch",
    }
    assert manifest["seq"] == 6 and manifest["generation"] == 6
    ix.delete([1, 2])
    ix.commit(7)  # "other" is now empty: dropped from the manifest, its file swept later
    assert "other" not in json.loads((tmp_path / "manifest.json").read_text())["files"]


def test_clean_commit_costs_nothing(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM)
    ix.upsert(chunks(vectors(10)))
    ix.commit(1)
    before = (tmp_path / "manifest.json").stat().st_mtime_ns, generation_files(tmp_path)
    ix.commit(1)
    assert ((tmp_path / "manifest.json").stat().st_mtime_ns, generation_files(tmp_path)) == before
    ix.commit(2)  # the seq moved, nothing else: a new manifest, no new index file
    assert generation_files(tmp_path) == before[1]
    assert reopen(tmp_path).applied_seq() == 2


def test_searchable_before_commit(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM)
    vs = vectors(20)
    ix.upsert(chunks(vs))
    assert ix.search(vs[7], ["docs"], 1)[0].chunk_id == 8
    ix.delete([8])
    assert 8 not in [h.chunk_id for h in ix.search(vs[7], ["docs"], 5)]


@pytest.mark.parametrize("dtype", ["i8", "f16"])
def test_dtypes_find_neighbours(tmp_path, dtype):
    ix = USearchVectorIndex(tmp_path, DIM, dtype=dtype)
    vs = vectors(2000, seed=3)
    ix.upsert(chunks(vs))
    top = [ix.search(v, ["docs"], 1)[0] for v in vs[:200]]
    assert np.mean([h.chunk_id == i + 1 for i, h in enumerate(top)]) > 0.95
    assert all(h.score > 0.95 for i, h in enumerate(top) if h.chunk_id == i + 1)  # i8 rounding
    noisy = vs[:50] + 0.05 * vectors(50, seed=4)
    hits = [ix.search(v / np.linalg.norm(v), ["docs"], 5) for v in noisy]
    assert np.mean([h[0].chunk_id == i + 1 for i, h in enumerate(hits)]) > 0.9
    ix.commit(1)
    assert reopen(tmp_path, dtype=dtype).count() == 2000


def clustered(seed: int, topics: int = 20, dim: int = 384) -> tuple[np.ndarray, np.ndarray]:
    """Two near-duplicate vectors per topic, all topics close to one another (as the embeddings of
    short documents written from one template are), and a noisy query per topic."""
    rng = np.random.default_rng(seed)
    base, centres = rng.standard_normal(dim), rng.standard_normal((topics, dim))
    pairs = np.repeat(base + 0.6 * centres, 2, axis=0) + 0.15 * rng.standard_normal((2 * topics, dim))
    queries = base + 0.6 * centres + 0.3 * rng.standard_normal((topics, dim))
    return (
        pairs / np.linalg.norm(pairs, axis=1, keepdims=True),
        queries / np.linalg.norm(queries, axis=1, keepdims=True),
    )


def test_a_small_collection_is_searched_exactly(tmp_path):
    """Through its HNSW graph, built by concurrent inserts in a shuffled order, about one such
    40-vector collection in 30 lost a topic's neighbour from its top 10 (an eval test failed on it)."""
    for trial in range(100):
        vs, queries = clustered(trial)
        order = np.random.default_rng(trial).permutation(len(vs))
        ix = USearchVectorIndex(tmp_path / str(trial), 384)
        ix.upsert([IndexedChunk(int(i) + 1, "docs", "d", "", "", vs[i]) for i in order])
        for topic, query in enumerate(queries):
            top = {h.chunk_id for h in ix.search(query, ["docs"], 10)}
            assert {2 * topic + 1, 2 * topic + 2} <= top, (trial, topic)
        ix.close()


def test_f16_files_are_larger_than_i8(tmp_path):
    sizes = {}
    for dtype in ("i8", "f16"):
        ix = USearchVectorIndex(tmp_path / dtype, DIM, dtype=dtype)
        ix.upsert(chunks(vectors(500)))
        ix.commit(1)
        sizes[dtype] = sum(p.stat().st_size for p in (tmp_path / dtype).glob("*.usearch"))
    assert sizes["f16"] > sizes["i8"]


def test_large_batch(tmp_path):
    ix = USearchVectorIndex(tmp_path, 96)
    vs = vectors(20_000, seed=5, dim=96)
    ix.upsert([IndexedChunk(i + 1, "big", "d", "", "", v) for i, v in enumerate(vs)])
    assert ix.count() == 20_000
    ix.upsert([IndexedChunk(i + 1, "big", "d", "", "", v) for i, v in enumerate(vs[:5000])])  # replay
    assert ix.count() == 20_000
    ix.commit(1)
    ix.close()
    ix = reopen(tmp_path, dimensions=96)
    assert ix.count() == 20_000
    probe = range(0, 20_000, 100)  # HNSW is approximate: ask for a high hit rate, not perfection
    assert np.mean([ix.search(vs[i], ["big"], 1)[0].chunk_id == i + 1 for i in probe]) > 0.95


def test_scores_are_cosine_similarity(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM, dtype="f16")
    a, b = vectors(2, seed=9)
    ix.upsert(chunks(np.stack([a, b])))
    hits = {h.chunk_id: h.score for h in ix.search(a, ["docs"], 2)}
    assert hits[1] == pytest.approx(1.0, abs=1e-3)
    assert hits[2] == pytest.approx(float(a @ b), abs=1e-2)


def test_bad_vectors_are_refused(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM)
    for bad in (None, np.zeros(DIM), np.ones(DIM + 1), np.full(DIM, np.nan)):
        with pytest.raises(ValueError):
            ix.upsert([IndexedChunk(1, "docs", "d", "", "", bad)])
    with pytest.raises(ValueError):
        ix.search(np.ones(DIM - 1), ["docs"], 3)
    assert ix.count() == 0
    with pytest.raises(ValueError):
        USearchVectorIndex(tmp_path / "x", DIM, dtype="f32")


def test_closed_index_refuses_work(tmp_path):
    ix = USearchVectorIndex(tmp_path, DIM)
    ix.close()
    with pytest.raises(NotReady):
        ix.search(vectors(1)[0], ["docs"], 1)
    with pytest.raises(NotReady):
        ix.commit(1)
