"""The numbered context: fits its budget, skips near-duplicates, keeps a long chunk's relevant sentences."""

from __future__ import annotations

from appliance.generate.context import build_context, format_source
from appliance.records import ChunkLocation, Hit


def words(text: str) -> int:
    return len(text.split())


def hit(i: int, text: str) -> Hit:
    return Hit(
        chunk_id=i,
        document_id=f"d{i}",
        source_id=f"s{i}.md",
        title=f"Doc {i}",
        text=text,
        location=ChunkLocation(),
        metadata={},
        collection="c",
    )


TRAVEL = "Employees receive a daily allowance for meals. The allowance in Europe is 75 EUR a day."
PARKING = "Visitors park in the basement garage of the Singapore office after signing in at reception."


def test_hits_that_fit_are_numbered_in_rank_order_within_the_budget():
    sources = build_context([hit(1, TRAVEL), hit(2, PARKING)], 200, words)
    assert [(s.n, s.hit.chunk_id, s.text) for s in sources] == [(1, 1, TRAVEL), (2, 2, PARKING)]
    assert sum(words(format_source(s)) + 2 for s in sources) <= 200


def test_a_near_duplicate_of_a_kept_chunk_is_skipped_and_numbering_stays_dense():
    copy = TRAVEL + " Employees"  # the same paragraph, stored twice (an overlap window, a copied file)
    sources = build_context([hit(1, TRAVEL), hit(2, copy), hit(3, PARKING)], 200, words)
    assert [(s.n, s.hit.chunk_id) for s in sources] == [(1, 1), (2, 3)]


def test_a_long_chunk_keeps_its_sentences_most_relevant_to_the_question():
    filler = " ".join(f"Paragraph {i} describes office furniture and plants in detail." for i in range(30))
    long_text = f"{filler} The per diem in Europe is 75 EUR. {filler}"
    sources = build_context([hit(1, TRAVEL), hit(2, long_text)], 80, words, "What is the per diem in Europe?")
    assert len(sources) == 2
    assert "The per diem in Europe is 75 EUR." in sources[1].text
    assert sources[1].text.startswith("…")  # the reader sees that something was left out
    assert sum(words(format_source(s)) + 2 for s in sources) <= 80


def test_without_a_question_a_chunk_that_does_not_fit_is_cut_to_a_prefix_and_nothing_follows():
    long_text = " ".join(f"w{i}" for i in range(300))
    sources = build_context([hit(1, long_text), hit(2, PARKING)], 100, words)
    assert len(sources) == 1 and sources[0].text.endswith(" …")
    assert sources[0].text.startswith("w0 w1 w2")


def test_too_little_room_for_a_useful_part_adds_nothing():
    assert build_context([hit(1, " ".join(["word"] * 300))], 30, words) == []
