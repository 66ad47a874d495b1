"""Training pairs from a collection's structure and generated questions; the held-out split; hard
negatives that are never the positive nor a near-duplicate of it."""

from __future__ import annotations

import numpy as np

from appliance.evaluate.generate import SourceChunk
from appliance.records import QAItem
from appliance.tune.dataset import build_training_data
from appliance.tune.negatives import NegativeMiner
from appliance.tune.pairs import (
    TrainingPair,
    heading_pairs,
    held_out_chunks,
    question_pairs,
    sentence_pairs,
    split,
)

FACTS = {
    "volcano": "Lava flows reached the village road twice. Ash clouds closed the airport for days. Geologists measure sulphur gas near the crater rim.",
    "glacier": "Meltwater carves blue tunnels under the ice. The snout retreats forty metres each summer. Crevasses open wide after warm weeks.",
    "lighthouse": "Keepers trimmed the lamp wick every evening. A foghorn sounds when visibility drops. The tower has one hundred spiral steps.",
    "orchard": "Apple trees blossom early in April. Pickers fill wooden crates by hand. Frost nets protect the young pears overnight.",
    "windmill": "Sails turn the great oak shaft slowly. Millers ground barley into coarse flour. A fantail keeps the cap facing wind.",
    "harbour": "Fishing boats unload their catch at dawn. Cranes lift containers onto waiting trucks. Tides rise four metres along the quay.",
    "quarry": "Blasting loosens granite blocks from the face. Dump trucks haul gravel to crushers. Rainwater floods the lowest bench every winter.",
    "bakery": "Bakers knead sourdough before sunrise daily. Ovens reach two hundred degrees quickly. Croissants sell out by mid morning.",
}
TOPICS = list(FACTS)
MORE = "Inspectors returned in autumn with a second team and new instruments for checking everything."


def _chunks() -> list[SourceChunk]:
    out = []
    for n, (t, facts) in enumerate(FACTS.items()):
        out.append(SourceChunk(2 * n + 1, f"{t}.md", facts, ("Survey",), f"{t.title()} handbook"))
        out.append(SourceChunk(2 * n + 2, f"{t}.md", facts + " " + MORE, (), ""))
    return out


def test_heading_pairs_name_the_text_under_each_heading_once():
    chunks = _chunks()
    pairs = heading_pairs(chunks)
    assert [(p.query, p.positive) for p in pairs[:2]] == [
        ("Volcano handbook Survey", 0),
        ("Glacier handbook Survey", 2),
    ]
    assert len(pairs) == len(TOPICS)  # the unnamed chunks give no heading pair
    assert all(p.origin == "heading" and p.positive_text == chunks[p.positive].text for p in pairs)
    twice = chunks[:1] + [SourceChunk(99, "volcano.md", FACTS["glacier"], ("Survey",), "Volcano handbook")]
    assert [p.positive for p in heading_pairs(twice)] == [0]  # one positive per query


def test_sentence_pairs_take_a_sentence_out_of_its_passage():
    chunks = _chunks()
    pairs = sentence_pairs(chunks, seed=3)
    assert pairs
    for p in pairs:
        assert p.origin == "sentence"
        assert p.query not in p.positive_text
        assert p.query in chunks[p.positive].text


def test_generated_questions_pair_with_the_chunk_holding_their_answer():
    chunks = _chunks()
    items = [
        QAItem(
            id="gen-1",
            question="When did the inspectors of the lighthouse come back?",
            answers=["in autumn"],
            kind="answerable",
            gold=["lighthouse.md"],
            support=[MORE],
        ),
        QAItem(id="gen-2", question="Who built it?", answers=[], kind="unanswerable", gold=[], support=[]),
    ]
    pairs = question_pairs(chunks, items)
    assert [(p.query, p.positive, p.origin) for p in pairs] == [
        ("When did the inspectors of the lighthouse come back?", 5, "generated")
    ]


def test_held_out_chunks_are_stable_and_their_pairs_never_train():
    held = held_out_chunks(1000, 0.1, seed=1)
    assert held == held_out_chunks(1000, 0.1, seed=1)
    assert 60 < len(held) < 140
    pairs = [TrainingPair(f"q{i}", i, "t", "heading") for i in range(1000)]
    train, test = split(pairs, held)
    assert {p.positive for p in test} == held
    assert not {p.positive for p in train} & held


def test_negatives_are_never_the_positive_nor_a_near_duplicate_nor_held_out():
    chunks = _chunks()
    texts = [c.text for c in chunks]
    # A bag-of-words embedder: real vectors, so the dense ranker takes part.
    vocab = sorted({w for t in texts for w in t.lower().split()})

    def embed(batch):
        rows = np.array([[t.lower().split().count(w) for w in vocab] for t in batch], dtype=np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-9)

    miner = NegativeMiner(texts, embed, skip_top=0)
    pairs = heading_pairs(chunks) + sentence_pairs(chunks, seed=1)
    mined = miner.mine(pairs, per_pair=3, exclude={6, 7})
    assert all(p.negatives for p in mined)
    for p in mined:
        for n in p.negatives:
            assert n != p.positive
            assert n not in (6, 7)
            # The same document's other chunk differs by one word: a near-duplicate, never a negative.
            assert chunks[n].source_id != chunks[p.positive].source_id
    # Mining looks at what ranks high: a query about the volcano gets another survey as negative.
    assert mined[0].negatives


def test_training_data_keeps_held_out_chunks_out_of_training_entirely():
    chunks = _chunks() * 1  # 16 chunks
    data = build_training_data(chunks, None, held_out_fraction=0.3, seed=2)
    held = {p.positive for p in data.held_out}
    assert data.held_out and data.train
    for p in data.train:
        assert p.positive not in held
        assert not set(p.negatives) & held
    assert data.summary()["train"]["heading"] + data.summary()["held_out"]["heading"] == len(TOPICS)
