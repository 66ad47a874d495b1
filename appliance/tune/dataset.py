"""A collection's training data in one call: pairs of every origin, the held-out split, mined negatives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.evaluate.generate import SourceChunk
from appliance.records import QAItem
from appliance.tune.negatives import EmbedTexts, NegativeMiner
from appliance.tune.pairs import (
    TrainingPair,
    heading_pairs,
    held_out_chunks,
    question_pairs,
    sentence_pairs,
    split,
    summary,
)

DEFAULT_HELD_OUT = 0.1
MAX_HELD_OUT_QUERIES = 500  # held-out scoring embeds these twice (before, after); enough for a mean


@dataclass(frozen=True, slots=True)
class TrainingData:
    texts: list[str]  # every chunk's text: what positives and negatives index
    train: list[TrainingPair]
    held_out: list[TrainingPair]
    vectors: np.ndarray | None  # the chunks embedded by the current embedder, when it mined

    def summary(self) -> dict:
        return {
            "chunks": len(self.texts),
            "train": summary(self.train),
            "held_out": summary(self.held_out),
        }


def build_training_data(
    chunks: Sequence[SourceChunk],
    embed: EmbedTexts | None,
    *,
    questions: Sequence[QAItem] = (),
    held_out_fraction: float = DEFAULT_HELD_OUT,
    sentence_pairs_max: int | None = None,
    seed: int = 0,
) -> TrainingData:
    """Pairs from headings, sentences (for chunks no heading names) and generated questions; the
    chunks of a seeded fraction held out with every pair on them; hard negatives for the training
    pairs mined by BM25 and `embed` among the other chunks (never a held-out one)."""
    texts = [c.text for c in chunks]
    by_heading = heading_pairs(chunks)
    named = {p.positive for p in by_heading}
    unnamed = [c if i not in named else None for i, c in enumerate(chunks)]
    by_sentence = [
        p
        for p in sentence_pairs([c or SourceChunk(-1, "", "") for c in unnamed], seed, sentence_pairs_max)
        if unnamed[p.positive] is not None
    ]
    pairs = by_heading + by_sentence + question_pairs(chunks, questions)
    held = held_out_chunks(len(chunks), held_out_fraction, seed)
    train, held_out = split(pairs, held)
    # Held-out generated questions are the best test queries: they keep their place first.
    held_out.sort(key=lambda p: p.origin != "generated")
    held_out = held_out[:MAX_HELD_OUT_QUERIES]
    miner = NegativeMiner(texts, embed)
    train = miner.mine(train, exclude=held, seed=seed)
    return TrainingData(texts, train, held_out, miner.vectors)
