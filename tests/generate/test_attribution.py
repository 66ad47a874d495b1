"""Verified citations: wrong citations re-attributed, uncited claims given their source, the rest flagged."""

from __future__ import annotations

from appliance.generate.attribution import attribute, split_answer
from appliance.generate.support import LexicalVerifier

TABLE = "| Region | Per diem |\n|---|---|\n| Europe | 75 EUR |\n| Asia | 60 USD |"
LEAD_IN = "Employees on business travel receive a daily allowance (per diem) for meals and incidentals:"
SOURCES = {1: TABLE, 2: LEAD_IN}


def test_markers_after_the_full_stop_belong_to_the_sentence_before_it():
    pieces = split_answer("The per diem in Europe is 75 EUR. [2] Asia pays 60 USD [1].")
    assert [(p.body, p.cited, p.end) for p in pieces] == [
        ("The per diem in Europe is 75 EUR", [2], "."),
        ("Asia pays 60 USD", [1], "."),
    ]


def test_decimals_and_list_lines_split_where_a_reader_would():
    pieces = split_answer("The rate is 10.5 percent [1].\n- Europe: 75 EUR [1]\n- Asia: 60 USD")
    assert [p.body for p in pieces] == ["The rate is 10.5 percent", "- Europe: 75 EUR", "- Asia: 60 USD"]
    assert [p.sep for p in pieces][:2] == ["\n", "\n"]


def test_a_wrong_citation_is_reattributed_to_the_source_that_supports_it():
    # The README's example: the figure is in the table [1], the model cited the lead-in [2].
    out = attribute("The per diem in Europe is 75 EUR. [2]", SOURCES, LexicalVerifier())
    assert out.text == "The per diem in Europe is 75 EUR [1]."
    [sentence] = out.sentences
    assert sentence.citations == [1] and sentence.original_citations == [2]
    assert sentence.supported and sentence.claim
    assert out.cited == [1]


def test_an_uncited_claim_gets_the_source_that_supports_it():
    out = attribute("Asia pays 60 USD a day.", SOURCES, LexicalVerifier())
    assert out.sentences[0].citations == [1] and out.sentences[0].supported
    assert out.text == "Asia pays 60 USD a day [1]."


def test_a_claim_no_source_supports_is_flagged_and_kept_or_removed():
    text = "The per diem in Europe is 75 EUR [1]. Mars pays 99 credits a day [2]."
    flagged = attribute(text, SOURCES, LexicalVerifier())
    assert [s.supported for s in flagged.sentences] == [True, False]
    assert flagged.sentences[1].citations == [2]  # what the model said, kept visible but flagged
    assert "Mars" in flagged.text
    removed = attribute(text, SOURCES, LexicalVerifier(), unsupported="remove")
    assert removed.text == "The per diem in Europe is 75 EUR [1]."
    assert removed.cited == [1]


def test_a_correct_citation_is_left_alone_and_sentences_without_claims_need_none():
    out = attribute(
        "Here is what I found:\nThe per diem in Europe is 75 EUR [1].", SOURCES, LexicalVerifier()
    )
    assert [s.claim for s in out.sentences] == [False, True]
    assert out.sentences[1].original_citations is None
    assert out.text == "Here is what I found:\nThe per diem in Europe is 75 EUR [1]."
