"""Generated QA sets: the local LLM writes questions that sampled chunks answer, and some they do not, each checked.

The model writes each candidate as constrained JSON (a grammar from a JSON schema, greedy decoding), and
nothing it writes is trusted: an answerable item is kept only when its short answer is found in its
chunk (normalised as SQuAD does), its question does not copy a long run of the chunk's words and does
not give the answer away; an unanswerable item only when the answer the model expected appears nowhere
in the collection's chunks nor in what retrieval returns for the question. Every rejected candidate is
counted by its reason, so a user sees what the model could and could not do.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from appliance.errors import InvalidInput
from appliance.evaluate.normalize import (
    answer_tokens,
    contains_answer,
    content_tokens,
    longest_shared_ngram,
    normalize_answer,
    sentences,
    truncate_to_tokens,
)
from appliance.models.runtime import ChatMessage, GenerationParams
from appliance.records import QAItem

if TYPE_CHECKING:
    from appliance.db.catalog import Catalog
    from appliance.models.grammar import Grammar
    from appliance.models.runtime import LLMRuntime

# A question sharing a run of this many tokens with its chunk quotes it rather than asks about it.
VERBATIM_NGRAM = 8
MAX_QUESTION_WORDS = 40
MAX_ANSWER_WORDS = 12
MIN_CHUNK_WORDS = 25  # shorter chunks (a heading, a table row) rarely hold a fact worth a question
PROMPT_CHUNK_TOKENS = 600  # the chunk as the model sees it: chunks are smaller than this by default
MAX_N = 1000
DEFAULT_UNANSWERABLE_FRACTION = 0.2
GENERATION_TOKENS = 120  # the schema's bounds (80 + 200 characters) fit in fewer

REJECTION_REASONS = (
    "invalid_output",  # not the JSON the grammar asked for (cut short by the token limit)
    "empty_question",
    "question_too_long",
    "not_a_question",  # no question mark: a heading or a statement copied from the passage
    "empty_answer",
    "answer_too_long",
    "answer_not_in_chunk",
    "answer_is_heading",
    "answer_in_question",
    "verbatim_quote",
    "duplicate_question",
    "off_topic",  # unanswerable: shares no content word with its chunk
    "answer_in_collection",  # unanswerable: the expected answer is in some chunk
    "answer_retrieved",  # unanswerable: the expected answer is in what retrieval returns
)

ANSWERABLE_SYSTEM = (
    "You write exam questions about a passage. First copy a short answer, a few words, exactly as "
    "they appear in the passage. Then write one question, in your own words, whose answer is that "
    "text. Do not copy sentences from the passage into the question."
)
UNANSWERABLE_SYSTEM = (
    "You write tricky exam questions. Given a passage, write one question on the same topic that the "
    "passage does NOT answer: ask about a related detail the passage never mentions. Also give the "
    "short answer you would expect, which must not appear in the passage."
)
# One worked example before the real passage: small models follow an example far better than a rule.
EXAMPLE_PASSAGE = (
    "Opening hours\n\nThe city museum opens at 9 am on weekdays and at 10 am on Sundays. "
    "Tickets cost 12 euros for adults; children under 12 enter free."
)
EXAMPLES = {
    "answerable": {"answer": "12 euros", "question": "How much does an adult pay to visit the museum?"},
    "unanswerable": {
        "expected_answer": "Mondays",
        "question": "On which day of the week is the museum closed?",
    },
}


class GenerationReport(msgspec.Struct, frozen=True, kw_only=True):
    requested: int
    produced: int
    answerable: int
    unanswerable: int
    candidates: int  # what the model wrote, kept or not
    rejected_by_reason: dict[str, int]
    seconds: float
    model: str
    seed: int
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class SourceChunk:
    """A chunk of the collection as the generator reads it."""

    chunk_id: int | str
    source_id: str  # of the document holding it: what an item's `gold` lists
    text: str
    heading_path: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the model wrote for one chunk, before the checks."""

    question: str
    answer: str


def collection_chunks(catalog: Catalog, collection: str) -> list[SourceChunk]:
    """Every chunk of a collection, in document then chunk order."""
    out: list[SourceChunk] = []
    page, offset = 200, 0
    while True:
        docs = catalog.list_documents([collection], limit=page, offset=offset)
        for doc in docs:
            for chunk in catalog.chunks_of(doc.id):
                heading = tuple(chunk.location.heading_path or ())
                out.append(SourceChunk(chunk.chunk_id, doc.source_id, chunk.text, heading, doc.title))
        if len(docs) < page:
            return out
        offset += page


# -- the checks ------------------------------------------------------------------------------------
def _question_problem(question: str) -> str | None:
    if not question.strip() or not answer_tokens(question):
        return "empty_question"
    if len(question.split()) > MAX_QUESTION_WORDS:
        return "question_too_long"
    if not question.rstrip().endswith("?"):
        return "not_a_question"
    return None


def check_answerable(candidate: Candidate, chunk_text: str, headings: Sequence[str] = ()) -> str | None:
    """The reason to reject an answerable candidate for this chunk, or None to keep it. `headings`
    (the document's title, the chunk's heading path) are no answer: they name a topic, not a fact."""
    problem = _question_problem(candidate.question)
    if problem:
        return problem
    if not answer_tokens(candidate.answer):
        return "empty_answer"
    if len(candidate.answer.split()) > MAX_ANSWER_WORDS:
        return "answer_too_long"
    if not contains_answer(chunk_text, candidate.answer):
        return "answer_not_in_chunk"
    if normalize_answer(candidate.answer) in {normalize_answer(h) for h in headings}:
        return "answer_is_heading"
    if contains_answer(candidate.question, candidate.answer):
        return "answer_in_question"
    if longest_shared_ngram(answer_tokens(candidate.question), answer_tokens(chunk_text)) >= VERBATIM_NGRAM:
        return "verbatim_quote"
    return None


def check_unanswerable(
    candidate: Candidate,
    chunk_text: str,
    corpus: Sequence[str],
    retrieved: Sequence[str] = (),
) -> str | None:
    """The reason to reject an unanswerable candidate, or None. Conservative: the answer the model
    expected must appear nowhere in the collection (`corpus`) nor in what retrieval found."""
    problem = _question_problem(candidate.question)
    if problem:
        return problem
    if not answer_tokens(candidate.answer):
        return "empty_answer"
    if len(candidate.answer.split()) > MAX_ANSWER_WORDS:
        return "answer_too_long"
    if longest_shared_ngram(answer_tokens(candidate.question), answer_tokens(chunk_text)) >= VERBATIM_NGRAM:
        return "verbatim_quote"
    if not set(content_tokens(candidate.question)) & set(content_tokens(chunk_text)):
        return "off_topic"
    if any(contains_answer(text, candidate.answer) for text in corpus):
        return "answer_in_collection"
    if any(contains_answer(text, candidate.answer) for text in retrieved):
        return "answer_retrieved"
    return None


def support_sentences(chunk_text: str, answer: str) -> list[str]:
    """The chunk's sentences that contain the answer; the whole chunk when it spans sentences."""
    found = [s for s in sentences(chunk_text) if contains_answer(s, answer)]
    return found or [" ".join(chunk_text.split())]


# -- the model -------------------------------------------------------------------------------------
def _schema(answer_key: str) -> dict:
    # The answer comes first: the model picks a span, then asks for it (fewer off-target questions).
    return {
        "type": "object",
        "properties": {
            answer_key: {"type": "string", "minLength": 1, "maxLength": 80},
            "question": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "required": [answer_key, "question"],
        "additionalProperties": False,
    }


def _grammars() -> dict[str, Grammar]:
    from appliance.models.grammar import json_grammar

    return {
        "answerable": json_grammar(_schema("answer")),
        "unanswerable": json_grammar(_schema("expected_answer")),
    }


def _passage(chunk: SourceChunk, runtime: LLMRuntime) -> str:
    text = truncate_to_tokens(chunk.text.strip(), runtime.count_tokens, PROMPT_CHUNK_TOKENS)
    heading = " > ".join(p for p in (chunk.title, *chunk.heading_path) if p)
    return f"{heading}\n\n{text}" if heading else text


def _request(passage: str) -> str:
    return f"Passage:\n{passage}\n\nReply with the JSON object."


def _ask(
    runtime: LLMRuntime,
    kind: str,
    chunk: SourceChunk,
    grammar: Grammar,
    seed: int,
    cancel: threading.Event | None,
) -> Candidate | None:
    system = ANSWERABLE_SYSTEM if kind == "answerable" else UNANSWERABLE_SYSTEM
    messages = [
        ChatMessage("system", system),
        ChatMessage("user", _request(EXAMPLE_PASSAGE)),
        ChatMessage("assistant", json.dumps(EXAMPLES[kind])),
        ChatMessage("user", _request(_passage(chunk, runtime))),
    ]
    prompt = runtime.render_chat(messages)
    params = GenerationParams(max_tokens=GENERATION_TOKENS, temperature=0.0, seed=seed, grammar=grammar)
    done = runtime.generate(prompt, params, cancel)
    try:
        value = json.loads(done.text)
    except ValueError:
        return None
    key = "answer" if kind == "answerable" else "expected_answer"
    if not isinstance(value, dict) or not isinstance(value.get("question"), str):
        return None
    if not isinstance(value.get(key), str):
        return None
    return Candidate(" ".join(value["question"].split()), " ".join(value[key].split()))


def sample_order(chunks: Sequence[SourceChunk], seed: int) -> list[SourceChunk]:
    """Eligible chunks in a seeded order that visits documents in turn, so a set spans the collection
    rather than the longest document."""
    rng = random.Random(seed)
    by_source: dict[str, list[SourceChunk]] = defaultdict(list)
    for chunk in chunks:
        if len(chunk.text.split()) >= MIN_CHUNK_WORDS:
            by_source[chunk.source_id].append(chunk)
    sources = sorted(by_source)
    rng.shuffle(sources)
    for source in sources:
        rng.shuffle(by_source[source])
    order: list[SourceChunk] = []
    for depth in range(max((len(v) for v in by_source.values()), default=0)):
        order.extend(by_source[s][depth] for s in sources if depth < len(by_source[s]))
    return order


def _item_id(kind: str, chunk: SourceChunk, question: str) -> str:
    digest = hashlib.sha256(f"{kind}\x00{chunk.source_id}\x00{chunk.chunk_id}\x00{question}".encode())
    return f"gen-{digest.hexdigest()[:16]}"


def _cycle(order: Sequence[SourceChunk], start: int) -> Iterator[SourceChunk]:
    """The sampled chunks from `start` on, then from the beginning: unanswerables use other chunks
    than answerables first, and the same ones again only when the collection is small."""
    for i in range(len(order)):
        yield order[(start + i) % len(order)]


def generate_qa_items(
    chunks: Sequence[SourceChunk],
    runtime: LLMRuntime,
    n: int,
    seed: int = 0,
    *,
    unanswerable_fraction: float = DEFAULT_UNANSWERABLE_FRACTION,
    search: Callable[[str], Sequence[str]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    attempts_per_item: int = 3,
) -> tuple[list[QAItem], GenerationReport]:
    """Up to `n` checked QA items written by `runtime` from `chunks` (a collection's chunks: all of
    them, for the unanswerable check), and the report of what was kept and rejected.

    `search(question)` returns the texts retrieval finds for a question (the collection's top-k);
    given, an unanswerable item whose expected answer is in them is rejected too. `progress(produced,
    n)` is called after every candidate. Deterministic for a seed: chunks are sampled with it and
    decoding is greedy. Each chunk is asked at most once per kind, so a small collection may yield
    fewer than `n` items; `attempts_per_item` bounds the model calls (per kind, times the items wanted).
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise InvalidInput(f"n must be between 1 and {MAX_N}", param="n")
    if not 0.0 <= unanswerable_fraction <= 1.0:
        raise InvalidInput("unanswerable_fraction must be between 0 and 1", param="unanswerable_fraction")
    if not runtime.constrained_decoding:
        raise InvalidInput(
            f"{runtime.name} cannot constrain its output; generating a QA set needs llama.cpp or vLLM",
            param="model",
        )
    started = time.monotonic()
    order = sample_order(chunks, seed)
    if not order:
        raise InvalidInput(
            f"no chunk has {MIN_CHUNK_WORDS} words or more to write a question from: ingest documents first",
            param="collection",
        )
    want = {"unanswerable": round(n * unanswerable_fraction)}
    want["answerable"] = n - want["unanswerable"]
    if isinstance(attempts_per_item, bool) or not isinstance(attempts_per_item, int) or attempts_per_item < 1:
        raise InvalidInput("attempts_per_item must be at least 1", param="attempts_per_item")
    grammars = _grammars()
    corpus = [c.text for c in chunks]
    rejected: dict[str, int] = defaultdict(int)
    items: list[QAItem] = []
    seen: set[str] = set()
    candidates = 0
    cancelled = False
    plans = [("answerable", _cycle(order, 0)), ("unanswerable", _cycle(order, want["answerable"]))]
    for kind, pool in plans:
        kept, asked = 0, 0
        for chunk in pool:
            if kept >= want[kind] or asked >= attempts_per_item * want[kind]:
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            candidate = _ask(runtime, kind, chunk, grammars[kind], seed, cancel)
            if cancel is not None and cancel.is_set():
                cancelled = True  # the model was stopped mid-candidate: neither kept nor rejected
                break
            candidates += 1
            asked += 1
            reason = _judge_candidate(kind, candidate, chunk, corpus, search, seen)
            if reason is None:
                assert candidate is not None
                items.append(_item(kind, candidate, chunk))
                seen.add(normalize_answer(candidate.question))
                kept += 1
            else:
                rejected[reason] += 1
            if progress is not None:
                progress(len(items), n)
    report = GenerationReport(
        requested=n,
        produced=len(items),
        answerable=sum(i.kind == "answerable" for i in items),
        unanswerable=sum(i.kind == "unanswerable" for i in items),
        candidates=candidates,
        rejected_by_reason={r: rejected[r] for r in REJECTION_REASONS if rejected.get(r)},
        seconds=round(time.monotonic() - started, 3),
        model=runtime.name,
        seed=seed,
        cancelled=cancelled,
    )
    return items, report


def _judge_candidate(
    kind: str,
    candidate: Candidate | None,
    chunk: SourceChunk,
    corpus: Sequence[str],
    search: Callable[[str], Sequence[str]] | None,
    seen: set[str],
) -> str | None:
    if candidate is None:
        return "invalid_output"
    if kind == "answerable":
        reason = check_answerable(candidate, chunk.text, (chunk.title, *chunk.heading_path))
    else:
        reason = check_unanswerable(candidate, chunk.text, corpus)
        if reason is None and search is not None:
            reason = check_unanswerable(candidate, chunk.text, (), search(candidate.question))
    if reason is None and normalize_answer(candidate.question) in seen:
        return "duplicate_question"
    return reason


def _item(kind: str, candidate: Candidate, chunk: SourceChunk) -> QAItem:
    if kind == "answerable":
        return QAItem(
            id=_item_id(kind, chunk, candidate.question),
            question=candidate.question,
            answers=[candidate.answer],
            kind=kind,
            gold=[chunk.source_id],
            support=support_sentences(chunk.text, candidate.answer),
        )
    return QAItem(
        id=_item_id(kind, chunk, candidate.question),
        question=candidate.question,
        answers=[],
        kind=kind,
        gold=[],
        support=[],
    )
