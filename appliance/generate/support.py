"""Whether a passage supports a claim: the CitationVerifier protocol and the scorers behind it."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from appliance.models.embedder import Embedder

# Words that carry no claim of their own; the rest of a sentence is what a source must state.
STOPWORDS = frozenset(
    """a an the and or but nor so yet of in on at to for from by with without about above below
    over under into onto out up down off as than then that this these those there here it its
    is are was were be been being am do does did done doing have has had having will would shall
    should can could may might must not no yes all any some each every both either neither more
    most much many few less least other such only own same very too also just even still again
    further once what which who whom whose when where why how i you he she we they me him her us
    them my your his our their mine yours ours theirs myself yourself itself themselves if while
    because although though unless until since whether per via etc according source sources
    document documents say says said stated states state mention mentions mentioned given""".split()
)

# "1,000" is one number; a digit group separator must not split it into "1" and "000".
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"\w+")


def _stem(word: str) -> str:
    """A light English suffix strip: enough for "allowances"/"allowance", "reimbursed"/"reimburse"."""
    if len(word) <= 4 or word.isdigit():
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: len(word) - len(suffix)] + repl
    return word


def terms(text: str) -> tuple[set[str], set[str]]:
    """(content terms, numbers) of a text: lowercased, stemmed, stopwords dropped."""
    words = _WORD.findall(_THOUSANDS.sub("", text.lower()))
    numbers = {w for w in words if any(c.isdigit() for c in w)}
    content = {_stem(w) for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}
    return content, numbers


def is_claim(sentence: str) -> bool:
    """A sentence states something a source could support: a number, or two content words."""
    content, numbers = terms(sentence)
    return bool(numbers) or len(content) >= 2


@runtime_checkable
class CitationVerifier(Protocol):
    """Scores how well each passage supports a claim, in [0, 1]; `threshold` and above supports."""

    name: str
    threshold: float

    def support(self, claim: str, passages: Sequence[str]) -> list[float]: ...


class LexicalVerifier:
    """Cheap and exact where it matters: every number of the claim must be in the passage, and
    the share of the claim's content terms the passage contains is the score."""

    name = "lexical"

    def __init__(self, threshold: float = 0.6, number_penalty: float = 0.25) -> None:
        self.threshold = threshold
        self.number_penalty = number_penalty

    def evidence(self, claim: str, passages: Sequence[str]) -> list[tuple[float, bool]]:
        """Per passage: the share of the claim's content terms it holds, and whether it states
        every number of the claim."""
        content, numbers = terms(claim)
        out = []
        for passage in passages:
            p_content, p_numbers = terms(passage)
            coverage = len(content & p_content) / len(content) if content else 0.0
            out.append((coverage, numbers <= p_numbers))
        return out

    def support(self, claim: str, passages: Sequence[str]) -> list[float]:
        # A figure the passage does not state is the commonest wrong citation ("75 EUR [2]"
        # against the lead-in of the table that holds it): it cannot support the claim.
        return [
            round(coverage if has_numbers else coverage * self.number_penalty, 4)
            for coverage, has_numbers in self.evidence(claim, passages)
        ]


def sentences_of(passage: str) -> list[str]:
    # Table rows and list items are lines; prose splits at sentence ends. Linear-time: one pass.
    out: list[str] = []
    for line in passage.splitlines():
        start = 0
        for i, ch in enumerate(line):
            if ch in ".!?" and (i + 1 == len(line) or line[i + 1] == " ") and i - start > 1:
                out.append(line[start : i + 1].strip())
                start = i + 1
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return [s for s in out if s] or [passage]


class EmbeddingVerifier:
    """Meaning rather than words: the claim's cosine similarity with the passage's closest
    sentence (or line), by the embedding model already loaded for search. An answer checks each
    of its sentences against the same sources, so the sources' sentence vectors are kept (the
    most recent `cached_passages`) and each passage is embedded once."""

    name = "embedding"

    def __init__(
        self, embedder: Embedder, threshold: float = 0.6, max_sentences: int = 64, cached_passages: int = 256
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.max_sentences = max_sentences
        self.cached_passages = cached_passages
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _passage_vectors(self, claim: str, passages: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        with self._lock:
            known = {p: self._vectors[p] for p in passages if p in self._vectors}
        missing = {p: sentences_of(p)[: self.max_sentences] for p in passages if p not in known}
        vectors = self.embedder.embed_documents([claim, *(s for split in missing.values() for s in split)])
        start = 1
        for passage, split in missing.items():
            known[passage] = vectors[start : start + len(split)]
            start += len(split)
        with self._lock:
            for passage in missing:
                self._vectors[passage] = known[passage]
            for passage in passages:
                self._vectors.move_to_end(passage)
            while len(self._vectors) > self.cached_passages:
                self._vectors.popitem(last=False)
        return vectors[0], [known[p] for p in passages]

    def support(self, claim: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        claim_vector, per_passage = self._passage_vectors(claim, passages)
        return [round(float(max(0.0, (m @ claim_vector).max())), 4) for m in per_passage]


class CombinedVerifier:
    """Lexical and embedding evidence together: the weighted mean of both scores, still vetoed by
    a number the passage does not state (the lexical score carries that penalty)."""

    name = "combined"

    def __init__(
        self,
        lexical: LexicalVerifier,
        embedding: EmbeddingVerifier,
        weight: float = 0.5,
        threshold: float = 0.6,
    ) -> None:
        self.lexical = lexical
        self.embedding = embedding
        self.weight = weight
        self.threshold = threshold

    def support(self, claim: str, passages: Sequence[str]) -> list[float]:
        semantic = self.embedding.support(claim, passages)
        out = []
        for (coverage, has_numbers), meaning in zip(
            self.lexical.evidence(claim, passages), semantic, strict=True
        ):
            lexical = round(coverage if has_numbers else coverage * self.lexical.number_penalty, 4)
            score = self.weight * lexical + (1 - self.weight) * meaning
            out.append(round(score if has_numbers else min(score, lexical), 4))
        return out


def citation_verifier(kind: str, embedder: Embedder) -> CitationVerifier | None:
    """The verifier the `answer.verify_citations` setting names (None: citations are only
    checked to point at a supplied source)."""
    if kind == "none":
        return None
    if kind == "lexical":
        return LexicalVerifier()
    if kind == "embedding":
        return EmbeddingVerifier(embedder)
    if kind == "combined":
        return CombinedVerifier(LexicalVerifier(), EmbeddingVerifier(embedder))
    raise ValueError(f"unknown citation verifier {kind!r}")
