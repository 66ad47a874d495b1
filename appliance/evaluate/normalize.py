"""SQuAD's answer normalisation and the token helpers the generator and the judges share."""

from __future__ import annotations

import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Function words that carry no topic: left out when the judges and the generator compare content.
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its
    this that these those there here what which who whom whose when where why how do does did not no
    yes can could would should will shall may might must has have had than then so such into about
    over under between per each any all some i you he she we they them his her our your their my me
    us""".split()
)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles dropped, whitespace collapsed (SQuAD's official script)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def contains_answer(text: str, answer: str) -> bool:
    """True when the normalised `answer` occurs in the normalised `text` on whole tokens."""
    wanted = normalize_answer(answer)
    return bool(wanted) and f" {wanted} " in f" {normalize_answer(text)} "


def content_tokens(text: str) -> list[str]:
    """Normalised tokens without stop words: what a sentence says, for overlap measures."""
    return [t for t in answer_tokens(text) if t not in STOPWORDS]


def longest_shared_ngram(a: list[str], b: list[str]) -> int:
    """Length of the longest run of tokens that `a` and `b` share (dynamic programming, O(len a * len b))."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The sentences (or lines) of a passage, stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def truncate_to_tokens(text: str, count_tokens, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` tokens of the model's tokenizer."""
    words = text.split()
    if count_tokens(text) <= limit:
        return text
    while words and count_tokens(" ".join(words)) > limit:
        words = words[: int(len(words) * 0.8)]
    return " ".join(words)
