"""Training pairs from a collection alone: a heading path and the text under it, a sentence and its
passage, a generated question and its chunk; and the held-out split that training never sees."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from appliance.evaluate.generate import SourceChunk
from appliance.evaluate.normalize import contains_answer, sentences
from appliance.records import QAItem

MIN_PASSAGE_WORDS = 12  # a positive shorter than this (a bare heading, a table row) teaches little
SPAN_MIN_WORDS = 5
SPAN_MAX_WORDS = 12  # a sentence cut to the length of a typed query
ORIGINS = ("heading", "sentence", "generated")


@dataclass(frozen=True, slots=True)
class TrainingPair:
    """A query and the chunk that answers it (`positive`, an index into the chunk list), with the
    text training uses for that chunk (a sentence pair's passage lacks the sentence) and the mined
    hard negatives (indexes too)."""

    query: str
    positive: int
    positive_text: str
    origin: str  # heading | sentence | generated
    negatives: tuple[int, ...] = field(default=())

    def with_negatives(self, negatives: Sequence[int]) -> TrainingPair:
        return replace(self, negatives=tuple(negatives))


def _words(text: str) -> int:
    return len(text.split())


def heading_pairs(chunks: Sequence[SourceChunk]) -> list[TrainingPair]:
    """(title > heading path, the first chunk under it): one pair per distinct path, since two
    positives for one query would be each other's in-batch negatives."""
    pairs: list[TrainingPair] = []
    seen: set[str] = set()
    for i, chunk in enumerate(chunks):
        path = [p.strip() for p in (chunk.title, *chunk.heading_path) if p and p.strip()]
        if not path or _words(chunk.text) < MIN_PASSAGE_WORDS:
            continue
        query = " ".join(path)
        key = query.casefold()
        if key in seen:
            continue
        seen.add(key)
        pairs.append(TrainingPair(query, i, chunk.text, "heading"))
    return pairs


def sentence_pairs(
    chunks: Sequence[SourceChunk], seed: int = 0, limit: int | None = None
) -> list[TrainingPair]:
    """Inverse-cloze pairs (Lee et al., 2019) for chunks with no structure to name them: a sentence
    of the chunk, cut to query length, and the chunk without that sentence (so the pair is not
    matched by copying words)."""
    rng = random.Random(seed)
    pairs: list[TrainingPair] = []
    for i, chunk in enumerate(chunks):
        if limit is not None and len(pairs) >= limit:
            break
        found = [s for s in sentences(chunk.text) if _words(s) >= SPAN_MIN_WORDS]
        if len(found) < 2:
            continue
        chosen = rng.choice(found)
        words = chosen.split()
        start = rng.randrange(0, max(1, len(words) - SPAN_MAX_WORDS + 1))
        query = " ".join(words[start : start + SPAN_MAX_WORDS]).strip(" .,;:")
        rest = " ".join(s for s in sentences(chunk.text) if s != chosen)
        if _words(rest) < MIN_PASSAGE_WORDS:
            continue
        pairs.append(TrainingPair(query, i, rest, "sentence"))
    return pairs


def question_pairs(chunks: Sequence[SourceChunk], items: Sequence[QAItem]) -> list[TrainingPair]:
    """Generated answerable questions (appliance/evaluate/generate.py, each already checked to be
    answered by its chunk) paired with that chunk: of the gold document's chunks, the one holding
    the item's support and answer."""
    by_source: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        by_source.setdefault(chunk.source_id, []).append(i)
    pairs: list[TrainingPair] = []
    for item in items:
        if item.kind != "answerable" or not item.answers:
            continue
        for source in item.gold:
            match = next(
                (
                    i
                    for i in by_source.get(source, ())
                    if contains_answer(chunks[i].text, item.answers[0])
                    and all(contains_answer(chunks[i].text, s) for s in item.support)
                ),
                None,
            )
            if match is not None:
                pairs.append(TrainingPair(item.question, match, chunks[match].text, "generated"))
                break
    return pairs


def held_out_chunks(count: int, fraction: float, seed: int = 0) -> frozenset[int]:
    """The chunk indexes set aside for evaluation, chosen by a seeded hash (stable across runs)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be between 0 and 1, got {fraction}")
    cut = int(fraction * 2**32)
    return frozenset(
        i
        for i in range(count)
        if int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big") < cut
    )


def split(
    pairs: Sequence[TrainingPair], held_out: frozenset[int]
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """(training, held-out): every pair whose positive is a held-out chunk is held out, so training
    sees neither those queries nor those chunks as positives."""
    train = [p for p in pairs if p.positive not in held_out]
    test = [p for p in pairs if p.positive in held_out]
    return train, test


def summary(pairs: Sequence[TrainingPair]) -> dict[str, int]:
    """How many pairs of each origin, and how many carry mined negatives."""
    out = {origin: sum(p.origin == origin for p in pairs) for origin in ORIGINS}
    out["with_negatives"] = sum(bool(p.negatives) for p in pairs)
    return out
