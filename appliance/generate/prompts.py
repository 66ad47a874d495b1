"""The prompts that ask for cited answers, and that rewrite follow-up questions."""

from __future__ import annotations

from collections.abc import Sequence

from appliance.generate.context import Source, format_source

NO_ANSWER = "The documents do not say."

ANSWER_SYSTEM = (
    "You answer questions using only the numbered sources provided. "
    "Cite the sources that support each claim with their numbers in square brackets, like [1] or [2]. "
    "Use only numbers that appear in the sources. Do not use outside knowledge and do not guess. "
    f'If the sources do not contain the answer, reply exactly: "{NO_ANSWER}" '
    "Be concise."
)

REWRITE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood without "
    "the conversation. Keep names and details from the conversation. Reply with the question only."
)


def answer_messages(question: str, sources: Sequence[Source]) -> list[tuple[str, str]]:
    context = "\n\n".join(format_source(s) for s in sources)
    user = f"Sources:\n\n{context}\n\nQuestion: {question}\n\nAnswer with citations:"
    return [("system", ANSWER_SYSTEM), ("user", user)]


def rewrite_messages(history: Sequence[tuple[str, str]], question: str) -> list[tuple[str, str]]:
    transcript = "\n".join(f"{role}: {content}" for role, content in history[-6:])
    return [("system", REWRITE_SYSTEM), ("user", f"Conversation:\n{transcript}\n\nLast question: {question}")]
