"""Eval set files: both formats read into items, and every malformed file named with its line."""

from __future__ import annotations

import json

import pytest

from appliance.errors import InvalidInput
from appliance.evaluate.sets import check_qa_items, parse_set, read_dir
from appliance.records import QAItem
from tests.conftest import REPO


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


CORPUS = _jsonl(
    {"_id": "d1", "title": "One", "text": "first"},
    {"_id": "d2", "text": "second"},
    {"_id": 3, "text": "third"},
)
QUERIES = _jsonl(
    {"_id": "q1", "text": "find one"}, {"_id": "q2", "text": "find two"}, {"_id": "q3", "text": "unjudged"}
)
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t0\nq2\td2\t1\n"


def test_a_beir_set_reads_graded_judgments_and_skips_unjudged_queries():
    parsed = parse_set({"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS})
    assert parsed.kind == "retrieval"
    assert [d.id for d in parsed.corpus] == ["d1", "d2", "3"] and parsed.corpus[0].title == "One"
    assert [(i.id, i.kind, i.relevance, i.gold) for i in parsed.items] == [
        ("q1", "query", {"d1": 2, "3": 0}, ["d1"]),
        ("q2", "query", {"d2": 1}, ["d2"]),
    ]
    again = parse_set({"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS})
    assert again.content_hash == parsed.content_hash


def test_a_qa_set_with_a_corpus_and_defaults():
    questions = _jsonl(
        {"id": "a", "question": "Who?", "answers": ["Eiffel"], "gold": ["d1"], "topic": "towers"},
        {"question": "Why?", "kind": "unanswerable", "gold": "d2", "answer": ""},
    )
    parsed = parse_set({"questions.jsonl": questions, "corpus.jsonl": CORPUS})
    first, second = parsed.items
    assert parsed.kind == "qa"
    assert (first.id, first.kind, first.answers, first.relevance, first.metadata) == (
        "a",
        "answerable",
        ["Eiffel"],
        {"d1": 1},
        {"topic": "towers"},
    )
    # No id: numbered by position; unanswerable: its gold passages are not "relevant".
    assert (second.id, second.kind, second.gold, second.relevance) == ("q2", "unanswerable", ["d2"], {})


def test_the_shipped_sets_parse():
    clapnq = parse_set(read_dir(REPO / "data" / "evalsets" / "clapnq-dev"))
    assert clapnq.kind == "qa" and len(clapnq.items) == 300 and len(clapnq.corpus) == 300
    assert sum(i.kind == "unanswerable" for i in clapnq.items) == 150
    msmarco = parse_set(read_dir(REPO / "data" / "evalsets" / "msmarco-subset"))
    assert (
        msmarco.kind == "retrieval" and len(msmarco.items) == 43 and len(msmarco.corpus) == 5000
    )  # 43 of 50 queries are judged


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"questions.jsonl": '{"question": "ok"}\n\n{"id": "x"}\n'},
            "questions.jsonl:3: missing field 'question'",
        ),
        ({"questions.jsonl": '{"question": "ok"}\nnot json\n'}, "questions.jsonl:2: not valid JSON"),
        (
            {"questions.jsonl": _jsonl({"id": "a", "question": "x"}, {"id": "a", "question": "y"})},
            "questions.jsonl:2: duplicate id 'a' (first at questions.jsonl:1)",
        ),
        (
            {"questions.jsonl": _jsonl({"question": "x", "kind": "maybe"})},
            "questions.jsonl:1: kind 'maybe' is not one of",
        ),
        (
            {"questions.jsonl": _jsonl({"question": "x", "answers": [1.5]})},
            "questions.jsonl:1: 'answers' must be a list",
        ),
        ({"questions.jsonl": _jsonl({"question": "   "})}, "questions.jsonl:1: question is empty"),
        (
            {"questions.jsonl": _jsonl({"question": "x", "gold": ["nope"]}), "corpus.jsonl": CORPUS},
            "questions.jsonl:1: gold ['nope'] names no document of corpus.jsonl",
        ),
        (
            {
                "corpus.jsonl": CORPUS + _jsonl({"_id": "d1", "text": "again"}),
                "queries.jsonl": QUERIES,
                "qrels/test.tsv": QRELS,
            },
            "corpus.jsonl:4: duplicate _id 'd1' (first at line 1)",
        ),
        (
            {"corpus.jsonl": _jsonl({"_id": "d1"}), "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS},
            "corpus.jsonl:1: missing field 'text'",
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS + "q2\tghost\t1\n"},
            "qrels/test.tsv:5: document 'ghost' names no document of corpus.jsonl",
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": "q9\td1\t1\n"},
            "qrels/test.tsv:1: query 'q9' is not in queries.jsonl",
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": "q1\td1\t1\nq1\td1\t2\n"},
            "qrels/test.tsv:2: query 'q1' and document 'd1' judged twice",
        ),
        (
            {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": "q1\td1\tvery\n"},
            "qrels/test.tsv:1: grade 'very' is not an integer",
        ),
        ({"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES}, "needs qrels/test.tsv"),
        ({"corpus.jsonl": CORPUS}, "no eval set here"),
        ({"questions.jsonl": "", "corpus.jsonl": CORPUS}, "questions.jsonl: no items"),
        ({"notes.txt": "hi"}, "unknown files ['notes.txt']"),
    ],
)
def test_malformed_files_are_named_with_their_line(files, message):
    with pytest.raises(InvalidInput) as caught:
        parse_set(files)
    assert message in caught.value.detail


def test_in_memory_qa_items_are_checked_like_a_file():
    items = check_qa_items([QAItem(question="What?", gold=["d1"]), {"question": "Else?", "id": "x"}])
    assert [i.id for i in items] == ["q1", "x"] and items[0].relevance == {"d1": 1}
    with pytest.raises(InvalidInput, match=r"items\[1\]: duplicate id 'q1'"):
        check_qa_items([QAItem(question="a"), QAItem(question="b", id="q1")])
    with pytest.raises(InvalidInput, match=r"items\[0\]: missing field 'question'"):
        check_qa_items([{"answer": "no question"}])
    with pytest.raises(InvalidInput, match="at least one item"):
        check_qa_items([])
