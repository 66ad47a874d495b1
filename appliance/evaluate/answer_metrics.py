"""Answer metrics: short-answer containment and token F1 (SQuAD normalisation), refusals, and
citation precision and recall under a support check (lexical for now, behind `SupportCheck`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Protocol

from appliance.evaluate.normalize import normalize_answer
from appliance.generate.citations import markers_in
from appliance.generate.prompts import NO_ANSWER


def contains_answer(reply: str, answers: Sequence[str]) -> bool:
    """The reply contains one of the short answers (both normalised), on word boundaries."""
    padded = f" {normalize_answer(reply)} "
    return any(f" {a} " in padded for a in map(normalize_answer, answers) if a)


def token_f1(reply: str, reference: str) -> float:
    """SQuAD's token F1 between a reply and a (long) reference answer."""
    got, want = normalize_answer(reply).split(), normalize_answer(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


# -- refusals: the one definition -----------------------------------------------------------------
_NO_ANSWER = normalize_answer(NO_ANSWER)
_REFUSAL = re.compile(
    r"\b(?:(?:do|does|did)(?: not|n[’']?t) (?:say|mention|state|specify|contain|provide|cover)"
    r"|no (?:relevant )?information|not (?:mentioned|provided|stated|specified)"
    r"|(?:cannot|can[’']?t|unable to) (?:answer|find|determine)"
    r"|(?:i )?do(?: not|n[’']?t) know|not enough information)\b",
    re.IGNORECASE,
)


def is_refusal(reply: str, cited: int) -> bool:
    """A refusal is the answer path's NO_ANSWER (appliance/generate/prompts.py), or a reply that
    cites nothing and says the documents do not answer."""
    if normalize_answer(reply) == _NO_ANSWER:
        return True
    return cited == 0 and (_NO_ANSWER in normalize_answer(reply) or bool(_REFUSAL.search(reply)))


# -- citations -------------------------------------------------------------------------------------
class SupportCheck(Protocol):
    """Does `passage` support `claim`? The lexical check stands in until a verifier model does."""

    def supports(self, claim: str, passage: str) -> bool: ...


_STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its "
    "this that these those there their they he she his her them which who whom whose what when where "
    "why how not no do does did so than then also can could would should may might will shall has "
    "have had into over under about after before between during such each other any all some more "
    "most very".split()
)


def content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in _STOPWORDS]


class LexicalSupport:
    """A claim is supported when at least `threshold` of its content words occur in the passage."""

    def __init__(self, threshold: float = 0.6) -> None:
        self.threshold = threshold

    def supports(self, claim: str, passage: str) -> bool:
        words = content_words(claim)
        if not words:
            return True
        found = set(content_words(passage))
        return sum(1 for w in words if w in found) / len(words) >= self.threshold


# A sentence ends at . ! or ? with the citation markers that follow it (up to the next space, or
# the end of the answer: "... Forces. [1]" keeps its [1]), or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[\d[\d,\s]*\])*(?:\s+|$)|\n+")
_MARKERS = re.compile(r"\[\d[\d,\s]*\]")


def sentences(text: str) -> list[str]:
    """The answer's sentences, each keeping the citation markers that follow it."""
    parts, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        # The markers after a full stop belong to the sentence before it: "... per diem. [1] Next".
        end = match.end() - (len(match.group()) - len(match.group().rstrip()))
        parts.append(text[start:end])
        start = match.end()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def citation_scores(
    answer: str, passages: Mapping[int, str], check: SupportCheck
) -> tuple[float | None, float | None]:
    """(precision, recall) of an answer's citations, ALCE-style: recall is the share of its
    sentences (with content words) supported by what they cite together; precision the share of
    citations whose passage alone supports its sentence. None where nothing was there to count."""
    claims = pairs = supported_claims = precise = 0
    for sentence in sentences(answer):
        cited = [n for n in markers_in(sentence) if n in passages]
        claim = _MARKERS.sub(" ", sentence)
        if not content_words(claim):
            continue
        claims += 1
        if cited and check.supports(claim, "\n".join(passages[n] for n in cited)):
            supported_claims += 1
        for n in cited:
            pairs += 1
            precise += check.supports(claim, passages[n])
    return (precise / pairs if pairs else None, supported_claims / claims if claims else None)
