"""Generated QA sets: the checks on hand-written candidates, the seeded sampling, and a real run of
SmolLM2 over data/sample ingested in-process, whose every item is checked against its gold chunk."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.evaluate.generate import (
    VERBATIM_NGRAM,
    Candidate,
    SourceChunk,
    check_answerable,
    check_unanswerable,
    collection_chunks,
    generate_qa_items,
    sample_order,
    support_sentences,
)
from appliance.evaluate.normalize import answer_tokens, contains_answer, longest_shared_ngram
from appliance.models.echo import EchoRuntime

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
CHUNK = (
    "Employees travelling within Europe receive a per diem of 45 EUR for meals. "
    "Hotel costs are reimbursed up to 140 EUR a night in capitals and 110 EUR elsewhere."
)
CORPUS = [CHUNK, "Expense claims are submitted within 30 days of returning."]


@pytest.mark.parametrize(
    ("question", "answer", "reason"),
    [
        ("How much is the daily meal allowance for trips inside Europe?", "45 EUR", None),
        ("What is the nightly hotel cap in a capital city?", "140 eur.", None),  # normalised as SQuAD
        (
            "Employees travelling within Europe receive a per diem of what for meals?",
            "45 EUR",
            "verbatim_quote",
        ),
        ("What is the nightly hotel cap in a capital city?", "150 EUR", "answer_not_in_chunk"),
        ("What is the nightly hotel cap?", "40 EUR", "answer_not_in_chunk"),  # not a part of "140"
        ("   ", "45 EUR", "empty_question"),
        ("?!", "45 EUR", "empty_question"),
        ("What is the daily meal allowance?", "the", "empty_answer"),
        ("The meal allowance inside Europe", "45 EUR", "not_a_question"),
        ("Is the per diem for meals 45 EUR?", "45 EUR", "answer_in_question"),
        ("Why " + "really " * 40 + "?", "45 EUR", "question_too_long"),
        (
            "What is the allowance?",
            "45 EUR for meals and hotel costs are reimbursed up to 140 EUR",
            "answer_too_long",
        ),
    ],
)
def test_answerable_candidates_are_checked_against_their_chunk(question, answer, reason):
    assert check_answerable(Candidate(question, answer), CHUNK) == reason


def test_a_heading_is_no_answer():
    chunk = "Travel policy\n\nBooking\n\nBook economy class for flights under six hours."
    candidate = Candidate("What does the policy cover first?", "booking")
    assert check_answerable(candidate, chunk, ("Travel policy", "Booking")) == "answer_is_heading"
    assert check_answerable(candidate, chunk) is None


@pytest.mark.parametrize(
    ("question", "answer", "retrieved", "reason"),
    [
        ("What is the per diem for meals in Asia?", "60 USD", (), None),
        ("What is the per diem for meals in Europe?", "45 EUR", (), "answer_in_collection"),
        ("Who painted the Mona Lisa?", "Leonardo", (), "off_topic"),
        (
            "What is the per diem for meals in Asia?",
            "60 USD",
            ("Asia: a per diem of 60 USD.",),
            "answer_retrieved",
        ),
        ("", "60 USD", (), "empty_question"),
    ],
)
def test_unanswerable_candidates_keep_only_answers_the_collection_lacks(question, answer, retrieved, reason):
    assert check_unanswerable(Candidate(question, answer), CHUNK, CORPUS, retrieved) == reason


def test_support_is_the_sentence_holding_the_answer():
    assert support_sentences(CHUNK, "110 EUR") == [
        "Hotel costs are reimbursed up to 140 EUR a night in capitals and 110 EUR elsewhere."
    ]


def test_the_verbatim_threshold_is_a_run_of_tokens():
    chunk = answer_tokens(CHUNK)
    assert longest_shared_ngram(chunk[:VERBATIM_NGRAM], chunk) == VERBATIM_NGRAM
    assert longest_shared_ngram(["hotel", "costs", "x", "are"], chunk) == 2


def test_sampling_is_seeded_skips_short_chunks_and_visits_documents_in_turn():
    words = " ".join(["word"] * 30)
    chunks = [SourceChunk(i, f"doc{i % 3}", f"{words} {i}") for i in range(9)] + [
        SourceChunk(99, "doc9", "too short")
    ]
    order = sample_order(chunks, seed=7)
    assert order == sample_order(chunks, seed=7) and order != sample_order(chunks, seed=8)
    assert sorted(c.chunk_id for c in order) == list(range(9))
    assert len({c.source_id for c in order[:3]}) == 3  # every document before any twice


def test_bad_requests_are_refused_before_any_model_call():
    chunks = [SourceChunk(1, "a", CHUNK * 2)]
    with pytest.raises(InvalidInput, match="cannot constrain"):
        generate_qa_items(chunks, EchoRuntime(), 3)
    for bad in (0, -1, 10_000, True):
        with pytest.raises(InvalidInput, match="n must be"):
            generate_qa_items(chunks, EchoRuntime(), bad)


# -- a real run ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_collection(tmp_path_factory):
    """data/sample ingested in-process (real DuckDB, Tantivy, USearch, MiniLM), and a search over it."""
    from appliance.config import load_settings
    from appliance.core import Appliance

    data = tmp_path_factory.mktemp("evalgen") / "data"
    settings = load_settings(overrides={"data_dir": str(data), "llm": {"load_at_start": False}}, environ={})
    app = Appliance(settings)
    app.start()
    try:
        admin = app.access.system_scope()
        job_id = app.knowledge.ingest_folder(admin, SAMPLE, "sample")
        assert app.jobs.wait(job_id).state == "succeeded"
        chunks = collection_chunks(app.catalog, "sample")

        def search(question: str) -> list[str]:
            return [h.text for h in app.knowledge.search(admin, question, ["sample"], top_k=10).hits]

        yield chunks, search
    finally:
        app.close()


def test_smollm2_writes_items_whose_gold_chunks_hold_their_answers(sample_collection, smollm2):
    chunks, search = sample_collection
    assert {c.source_id for c in chunks} == {p.name for p in SAMPLE.iterdir()}
    heard: list[tuple[int, int]] = []
    # Two answerable and one unanswerable item wanted, three candidates each at most: SmolLM2 gets
    # some right (how many is the model's business; each kept one is checked below).
    items, report = generate_qa_items(
        chunks,
        smollm2,
        3,
        seed=3,
        unanswerable_fraction=1 / 3,
        search=search,
        progress=lambda done, n: heard.append((done, n)),
    )
    print(report)  # what the small model managed, for the log
    assert report.produced == len(items) >= 1
    assert report.requested == 3 and report.answerable + report.unanswerable == report.produced
    assert report.candidates == report.produced + sum(report.rejected_by_reason.values())
    assert len(heard) == report.candidates and heard[-1] == (report.produced, 3)
    assert [d for d, _ in heard] == sorted(d for d, _ in heard)
    assert len({i.id for i in items}) == len(items)
    for item in items:
        if item.kind == "answerable":
            (answer,) = item.answers
            (source,) = item.gold
            holding = [
                c
                for c in chunks
                if c.source_id == source
                and contains_answer(c.text, answer)
                and all(" ".join(s.split()) in " ".join(c.text.split()) for s in item.support)
            ]
            assert holding, f"{item.id}: no chunk of {source} holds {answer!r} and its support"
            assert all(contains_answer(s, answer) for s in item.support) or len(item.support) == 1
            assert not any(
                longest_shared_ngram(answer_tokens(item.question), answer_tokens(c.text)) >= VERBATIM_NGRAM
                for c in holding
            )
        else:
            assert item.kind == "unanswerable" and item.answers == [] and item.gold == []

    # Deterministic: the same seed asks the same chunks in the same order, greedily, so a request
    # for one answerable item yields the first answerable item of the larger run.
    answerable = [i for i in items if i.kind == "answerable"]
    if answerable:
        one, _ = generate_qa_items(chunks, smollm2, 1, seed=3, unanswerable_fraction=0.0, attempts_per_item=6)
        assert one == answerable[:1]


def test_a_cancelled_request_stops_before_the_next_candidate(smollm2):
    cancel = threading.Event()
    cancel.set()
    items, report = generate_qa_items([SourceChunk(1, "a", CHUNK * 2)], smollm2, 3, cancel=cancel)
    assert items == [] and report.cancelled and report.candidates == 0 and report.produced == 0
