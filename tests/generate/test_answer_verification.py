"""The answerer's last step: citations verified, and an answer no source supports refused when asked."""

from __future__ import annotations

from appliance.config import AnswerSettings
from appliance.generate.answer import Answerer, AnswerPlan
from appliance.generate.context import Source
from appliance.generate.prompts import NO_ANSWER
from appliance.generate.support import LexicalVerifier
from appliance.models.echo import EchoRuntime
from appliance.records import ChunkLocation, Hit, Usage

TABLE = "| Region | Per diem |\n|---|---|\n| Europe | 75 EUR |\n| Asia | 60 USD |"
LEAD_IN = "Employees on business travel receive a daily allowance (per diem) for meals and incidentals:"


def _plan() -> AnswerPlan:
    hits = [
        Hit(
            chunk_id=i,
            document_id="d",
            source_id="travel.md",
            title="Travel",
            text=text,
            location=ChunkLocation(),
            metadata={},
            collection="c",
        )
        for i, text in ((18, TABLE), (17, LEAD_IN))
    ]
    return AnswerPlan(
        "How much is the per diem in Europe?",
        [Source(1, hits[0], TABLE), Source(2, hits[1], LEAD_IN)],
        "p",
        64,
    )


def _finish(text: str, **settings) -> object:
    answerer = Answerer(AnswerSettings(**settings), LexicalVerifier())
    usage = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    return answerer.finish(_plan(), text, EchoRuntime(), usage, {})


def test_the_readme_example_comes_back_citing_the_table():
    answer = _finish("The per diem in Europe is 75 EUR. [2]")
    assert answer.answer == "The per diem in Europe is 75 EUR [1]."
    assert [c.chunk_id for c in answer.citations] == [18]
    assert answer.verifier == "lexical" and answer.unsupported_sentences == []
    assert answer.sentences[0].original_citations == [2]
    assert "verify_ms" in answer.timings


def test_an_unsupported_answer_is_flagged_or_refused_as_configured():
    text = "The per diem on Mars is 99 credits [1]."
    flagged = _finish(text)
    assert flagged.answer == "The per diem on Mars is 99 credits [1]."
    assert flagged.unsupported_sentences == [0]
    refused = _finish(text, refuse_unsupported=True)
    assert refused.answer == NO_ANSWER and refused.citations == []
    assert refused.sentences[0].supported is False  # why it was refused stays visible


def test_one_supported_claim_is_enough_not_to_refuse():
    answer = _finish(
        "The per diem in Europe is 75 EUR [1]. Mars pays 99 credits [2].", refuse_unsupported=True
    )
    assert answer.answer.startswith("The per diem in Europe is 75 EUR [1].")
    assert answer.unsupported_sentences == [1]


def test_without_a_verifier_citations_are_only_range_checked():
    answerer = Answerer(AnswerSettings())
    usage = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    answer = answerer.finish(_plan(), "The per diem in Europe is 75 EUR. [2] [7]", EchoRuntime(), usage, {})
    assert [c.n for c in answer.citations] == [2] and answer.invalid_citations == [7]
    assert answer.sentences == [] and answer.verifier == ""
