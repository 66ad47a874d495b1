"""Second-stage rerankers: a locally built tiny cross-encoder, MiniLM and mpnet bi-encoders, and the factory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.models import catalog
from appliance.models.embedder import SentenceTransformerEmbedder
from appliance.retrieve.rerank import (
    BiEncoderReranker,
    CrossEncoderReranker,
    NoReranker,
    RerankCandidate,
    Reranker,
    load_reranker,
    passage_text,
)

QUERY = "how do plants make energy from sunlight"
RELEVANT = RerankCandidate(
    7,
    "Photosynthesis converts light energy into chemical energy stored in glucose in chloroplasts.",
    "Botany",
)
IRRELEVANT = [
    RerankCandidate(3, "The 1966 World Cup final was played at Wembley between England and West Germany."),
    RerankCandidate(
        11, "To reset a PostgreSQL password, edit pg_hba.conf to trust local connections.", "Admin"
    ),
    RerankCandidate(5, "Sourdough bread rises because wild yeast ferments the flour's sugars."),
]
# The relevant passage last, so the first stage's order is wrong and the reranker has to fix it.
CANDIDATES = [*IRRELEVANT, RELEVANT]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _build_tiny_cross_encoder(dest: Path, minilm_dir: Path, num_labels: int) -> Path:
    """A 2-layer, 32-wide BERT sequence classifier with random (seeded) weights and MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(dest)
    for name in _TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return catalog.default_embedding_dir()


@pytest.fixture(scope="module")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return _build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"), minilm_dir, num_labels=1)


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder_dir: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_cross_encoder_dir, device="cpu", max_length=128)


@pytest.fixture(scope="module")
def minilm_reranker(minilm_dir: Path) -> BiEncoderReranker:
    return BiEncoderReranker(SentenceTransformerEmbedder(minilm_dir, device="cpu", name=catalog.MINILM_NAME))


@pytest.fixture(scope="module")
def mpnet_reranker(mpnet_dir: Path) -> BiEncoderReranker:
    return BiEncoderReranker(SentenceTransformerEmbedder(mpnet_dir, device="cpu", name=catalog.MPNET_NAME))


@pytest.fixture(params=["none", "cross-encoder", "bi-encoder"])
def any_reranker(request: pytest.FixtureRequest) -> Reranker:
    if request.param == "none":
        return NoReranker()
    if request.param == "cross-encoder":
        return request.getfixturevalue("cross_encoder")
    return request.getfixturevalue("minilm_reranker")


def test_contract_one_finite_score_per_candidate(any_reranker: Reranker) -> None:
    assert isinstance(any_reranker, Reranker)
    assert isinstance(any_reranker.name, str) and any_reranker.name
    scores = any_reranker.rerank(QUERY, CANDIDATES)
    assert len(scores) == len(CANDIDATES)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert any_reranker.rerank(QUERY, []) == []
    assert len(any_reranker.rerank(QUERY, CANDIDATES[:1])) == 1


def test_contract_deterministic_and_order_preserving(any_reranker: Reranker) -> None:
    scores = any_reranker.rerank(QUERY, CANDIDATES)
    assert any_reranker.rerank(QUERY, CANDIDATES) == scores
    if not isinstance(any_reranker, NoReranker):
        # Scores follow their candidate, not their position.
        reversed_scores = any_reranker.rerank(QUERY, CANDIDATES[::-1])
        assert reversed_scores == pytest.approx(scores[::-1], abs=1e-5)


def test_no_reranker_keeps_the_incoming_order() -> None:
    scores = NoReranker().rerank(QUERY, CANDIDATES)
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == len(scores)


def test_title_is_prefixed_to_the_passage() -> None:
    assert passage_text(RerankCandidate(1, "body", "Title")) == "Title\nbody"
    assert passage_text(RerankCandidate(1, "body")) == "body"


def test_cross_encoder_scores_a_locally_built_model(cross_encoder: CrossEncoderReranker) -> None:
    assert cross_encoder.name.startswith("cross-encoder:")
    scores = cross_encoder.rerank(QUERY, CANDIDATES)
    assert cross_encoder.loaded
    # Raw logits, not sigmoid probabilities: a random head still gives distinct, unsaturated values.
    assert len(set(scores)) == len(scores)
    long_passage = RerankCandidate(1, "lorem ipsum " * 2000)
    assert math.isfinite(cross_encoder.rerank(QUERY, [long_passage])[0])


def test_cross_encoder_with_two_labels_scores_yes_minus_no(tmp_path: Path, minilm_dir: Path) -> None:
    model_dir = _build_tiny_cross_encoder(tmp_path / "ce2", minilm_dir, num_labels=2)
    reranker = CrossEncoderReranker(model_dir, device="cpu", max_length=4096)
    assert reranker.max_length == 512  # clamped to the position table
    scores = reranker.rerank(QUERY, CANDIDATES)
    assert len(scores) == len(CANDIDATES) and all(math.isfinite(s) for s in scores)


def test_minilm_bi_encoder_ranks_the_relevant_passage_first(minilm_reranker: BiEncoderReranker) -> None:
    scores = minilm_reranker.rerank(QUERY, CANDIDATES)
    assert max(range(len(scores)), key=scores.__getitem__) == CANDIDATES.index(RELEVANT)
    assert minilm_reranker.name == f"bi-encoder:{catalog.MINILM_NAME}"


def test_mpnet_bi_encoder_ranks_the_relevant_passage_first(mpnet_reranker: BiEncoderReranker) -> None:
    scores = mpnet_reranker.rerank(QUERY, CANDIDATES)
    assert max(range(len(scores)), key=scores.__getitem__) == CANDIDATES.index(RELEVANT)
    relevant = scores[CANDIDATES.index(RELEVANT)]
    assert all(relevant > s + 0.2 for i, s in enumerate(scores) if CANDIDATES[i] is not RELEVANT)


def test_load_reranker_kinds(minilm_dir: Path, tiny_cross_encoder_dir: Path) -> None:
    assert isinstance(load_reranker("none", None, "cpu"), NoReranker)
    assert isinstance(load_reranker("cross-encoder", tiny_cross_encoder_dir, "cpu"), CrossEncoderReranker)
    assert isinstance(load_reranker("bi-encoder", minilm_dir, "cpu"), BiEncoderReranker)


def test_load_reranker_errors(tmp_path: Path, minilm_dir: Path, tiny_cross_encoder_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown reranker kind 'colbert'"):
        load_reranker("colbert", minilm_dir, "cpu")
    with pytest.raises(InvalidInput, match="needs a model directory"):
        load_reranker("cross-encoder", None, "cpu")
    with pytest.raises(InvalidInput, match="does not exist"):
        load_reranker("bi-encoder", tmp_path / "missing", "cpu")
    with pytest.raises(InvalidInput, match="no config.json"):
        load_reranker("cross-encoder", tmp_path, "cpu")
    with pytest.raises(InvalidInput, match="not a cross-encoder"):
        load_reranker("cross-encoder", minilm_dir, "cpu")
    with pytest.raises(InvalidInput, match="device"):
        load_reranker("cross-encoder", tiny_cross_encoder_dir, "gpu0")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(InvalidInput, match="no weights"):
        load_reranker("cross-encoder", weightless, "cpu")


def test_load_reranker_checks_before_importing_torch(tmp_path: Path, minilm_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from appliance.errors import InvalidInput\n"
        "from appliance.retrieve.rerank import load_reranker\n"
        f"reranker = load_reranker('bi-encoder', Path({str(minilm_dir)!r}), 'auto')\n"
        "print(reranker.embedder.dimensions)\n"
        "try:\n"
        f"    load_reranker('cross-encoder', Path({str(tmp_path)!r}), 'auto')\n"
        "except InvalidInput as exc:\n"
        "    print('refused')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["384", "refused"]
