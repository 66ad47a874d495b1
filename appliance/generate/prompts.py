"""The prompts that ask for cited answers, and that rewrite follow-up questions."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from appliance.generate.context import Source, format_source

NO_ANSWER = "The documents do not say."

# Small models over-refuse when told when to refuse before being told how to answer, so the
# refusal comes last and only for sources that are unrelated (measured with scripts/bench/rag.py).
ANSWER_SYSTEM = (
    "Answer the question from the numbered sources provided. "
    "After each sentence, cite the sources that support it with their numbers in square brackets, like [1] or [2]. "
    "Use only numbers that appear in the sources, and only facts stated in them; do not guess. "
    f'Only if no source is about the question, reply exactly: "{NO_ANSWER}" '
    "Be concise."
)

REWRITE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood without "
    "the conversation. Keep names and details from the conversation. Reply with the question only."
)


# The answer prompt's version: a name a person bumps on purpose, and a hash of the text that
# catches an edit nobody named. Recorded with every answer trace and evaluation run, so a change
# of prompt is a change evaluation can compare.
ANSWER_PROMPT_NAME = "cited-answer-v1"
ANSWER_PROMPT_VERSION = (
    f"{ANSWER_PROMPT_NAME}+{hashlib.sha256((ANSWER_SYSTEM + REWRITE_SYSTEM).encode()).hexdigest()[:12]}"
)


def answer_messages(question: str, sources: Sequence[Source]) -> list[tuple[str, str]]:
    context = "\n\n".join(format_source(s) for s in sources)
    user = f"Sources:\n\n{context}\n\nQuestion: {question}\n\nAnswer with citations:"
    return [("system", ANSWER_SYSTEM), ("user", user)]


def rewrite_messages(history: Sequence[tuple[str, str]], question: str) -> list[tuple[str, str]]:
    transcript = "\n".join(f"{role}: {content}" for role, content in history[-6:])
    return [("system", REWRITE_SYSTEM), ("user", f"Conversation:\n{transcript}\n\nLast question: {question}")]
