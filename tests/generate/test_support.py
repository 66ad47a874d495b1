"""The CitationVerifier contract, written once; each verifier passes it as a small subclass."""

from __future__ import annotations

import pytest

from appliance.generate.support import (
    CitationVerifier,
    CombinedVerifier,
    EmbeddingVerifier,
    LexicalVerifier,
    is_claim,
    terms,
)
from appliance.models.catalog import default_embedding_dir
from appliance.models.embedder import SentenceTransformerEmbedder

TABLE = "| Region | Per diem |\n|---|---|\n| Europe | 75 EUR |\n| Asia | 60 USD |"
LEAD_IN = "Employees on business travel receive a daily allowance (per diem) for meals and incidentals:"
UNRELATED = "The incident commander owns all communication during a SEV1 outage and pages the on-call team."


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(default_embedding_dir())


class VerifierContract:
    """What every CitationVerifier promises."""

    @pytest.fixture
    def verifier(self, embedder) -> CitationVerifier:
        raise NotImplementedError

    def test_it_is_a_citation_verifier_with_a_name_and_a_threshold(self, verifier):
        assert isinstance(verifier, CitationVerifier)
        assert verifier.name
        assert 0 < verifier.threshold <= 1

    def test_one_score_in_0_1_per_passage_and_none_for_no_passages(self, verifier):
        scores = verifier.support(
            "Employees receive a daily allowance for meals.", [TABLE, LEAD_IN, UNRELATED]
        )
        assert len(scores) == 3
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert verifier.support("Employees receive a daily allowance.", []) == []

    def test_a_passage_that_states_the_claim_supports_it(self, verifier):
        claim = "Employees on business travel receive a daily allowance for meals and incidentals"
        assert verifier.support(claim, [LEAD_IN])[0] >= verifier.threshold

    def test_a_passage_on_another_subject_does_not(self, verifier):
        claim = "Employees on business travel receive a daily allowance for meals"
        assert verifier.support(claim, [UNRELATED])[0] < verifier.threshold

    def test_the_supporting_passage_scores_above_an_unrelated_one(self, verifier):
        a, b = verifier.support(
            "During a SEV1 outage the incident commander owns communication.", [UNRELATED, LEAD_IN]
        )
        assert a > b

    def test_scores_are_deterministic(self, verifier):
        claim = "The per diem in Europe is 75 EUR."
        assert verifier.support(claim, [TABLE, LEAD_IN]) == verifier.support(claim, [TABLE, LEAD_IN])


class NumberVetoContract:
    """Verifiers that read words also refuse a figure the passage does not state."""

    def test_a_figure_missing_from_the_passage_is_not_supported(self, verifier):
        table, lead_in = verifier.support("The per diem in Europe is 75 EUR.", [TABLE, LEAD_IN])
        assert table >= verifier.threshold
        assert lead_in < verifier.threshold
        assert verifier.support("The per diem in Europe is 90 EUR.", [TABLE])[0] < verifier.threshold


class TestLexicalVerifier(VerifierContract, NumberVetoContract):
    @pytest.fixture
    def verifier(self, embedder):
        return LexicalVerifier()


class TestEmbeddingVerifier(VerifierContract):
    @pytest.fixture
    def verifier(self, embedder):
        return EmbeddingVerifier(embedder)


class TestCombinedVerifier(VerifierContract, NumberVetoContract):
    @pytest.fixture
    def verifier(self, embedder):
        return CombinedVerifier(LexicalVerifier(), EmbeddingVerifier(embedder))


def test_terms_keep_numbers_whole_and_drop_stopwords():
    content, numbers = terms("The limit is 1,000 requests per minute, and 2.5 seconds.")
    assert "1000" in numbers and "000" not in numbers
    assert "the" not in content and "limit" in content and "request" in content


@pytest.mark.parametrize(
    ("sentence", "claim"),
    [
        ("Here is what I found:", False),
        ("Sure.", False),
        ("The per diem is 75 EUR", True),
        ("Visitors park in the basement garage", True),
    ],
)
def test_what_counts_as_a_claim(sentence, claim):
    assert is_claim(sentence) is claim


def test_the_embedding_verifier_embeds_each_source_once_and_keeps_a_bounded_cache(embedder):
    cached = EmbeddingVerifier(embedder, cached_passages=2)
    claim = "Employees receive a daily allowance for meals."
    first = cached.support(claim, [TABLE, LEAD_IN])
    assert list(cached._vectors) == [TABLE, LEAD_IN]
    # Another sentence of the same answer against the same sources: the same scores as a fresh
    # verifier computes, from the sources' stored vectors.
    assert (
        cached.support(claim, [TABLE, LEAD_IN])
        == first
        == EmbeddingVerifier(embedder).support(claim, [TABLE, LEAD_IN])
    )
    cached.support(claim, [UNRELATED])
    assert list(cached._vectors) == [LEAD_IN, UNRELATED]  # the least recently used source left
