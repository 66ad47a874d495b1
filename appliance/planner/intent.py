"""A deployment intent from a conversation: the JSON schema the local model fills (constrained output),
the guard that drops every number the user never said (or said about something else), and the question
for what is still missing."""

from __future__ import annotations

import re
from typing import Any

TASKS = ("chat", "rag", "summarisation", "code")
PRIORITIES = ("latency", "cost", "accuracy")
# The numbers of an intent: field -> (JSON type, what it is, for the model and for the question).
NUMBERS: dict[str, tuple[str, str]] = {
    "users": ("integer", "concurrent users"),
    "rate": ("number", "requests per second"),
    "prompt_tokens": ("integer", "prompt length in tokens"),
    "output_tokens": ("integer", "answer length in tokens"),
    "p95_ttft_ms": ("number", "p95 time to first token in milliseconds"),
    "tokens_per_s_per_user": ("number", "tokens per second each user needs"),
    "budget_usd_month": ("number", "monthly budget in USD"),
}
# Asked for while missing, but a recommendation can go on without them (the task's defaults, said so).
OPTIONAL_ASKED = ("prompt_tokens", "output_tokens", "p95_ttft_ms")


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": _nullable({"enum": list(TASKS)}),
        **{name: _nullable({"type": kind}) for name, (kind, _) in NUMBERS.items()},
        "priority": _nullable({"enum": list(PRIORITIES)}),
    },
    "required": ["task", *NUMBERS, "priority"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    "You fill a deployment intent for an AI serving capacity planner from the user's messages. "
    "Answer with one JSON object. task: chat (an assistant), rag (answers from documents), "
    "summarisation or code. "
    + " ".join(f"{name}: {what}." for name, (_, what) in NUMBERS.items())
    + " priority: latency, cost or accuracy. Write null for everything the user did not state: "
    "never guess or assume a number. Convert seconds to milliseconds where a field is in milliseconds."
)

# A number as people write it: 1,200 / 2.5 / 40k / 1.5M.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s*([kKmM](?![a-zA-Z]))?")
# A stated number may reach a field in another unit: seconds as milliseconds, a per-minute or per-hour
# rate per second (and back); nothing else.
_UNIT_FACTORS = (1.0, 1000.0, 0.001, 60.0, 1 / 60, 3600.0, 1 / 3600)


# The words a clause uses when it states a field: a said number fills a field only from a clause
# about it ("30 people" is users, never a prompt length; "within 2 seconds" a latency).
CUES: dict[str, tuple[str, ...]] = {
    "users": ("user", "people", "person", "concurrent", "seat", "agent", "employee", "at once", "same time"),
    "rate": ("per second", "a second", "per minute", "a minute", "per hour", "an hour", "/s", "request",
             "rps", "qps", "queries"),
    "prompt_tokens": ("prompt", "input", "question", "context"),
    "output_tokens": ("answer", "output", "response", "reply", "generat"),
    "p95_ttft_ms": ("second", "ms", "millisecond", "latency", "first token", "first word", "within",
                    "wait", "start"),
    "tokens_per_s_per_user": ("tokens per second", "tokens a second", "tok/s", "tokens/s", "reading speed"),
    "budget_usd_month": ("$", "usd", "dollar", "budget", "month", "eur", "spend", "cost"),
}  # fmt: skip
_CLAUSE = re.compile(r",(?!\d)|[;!?]|\.(?!\d)|\band\b|\bbut\b")


def numbers_said(texts: list[str]) -> list[float]:
    """Every number in the texts, with k/M suffixes applied."""
    return [value for value, _ in _said(texts)]


def _said(texts: list[str]) -> list[tuple[float, str]]:
    """Each number of the texts with the clause it stands in (lowercase)."""
    out = []
    for text in texts:
        for clause in _CLAUSE.split(text):
            for digits, suffix in _NUMBER.findall(clause):
                value = float(digits.replace(",", ""))
                if suffix:
                    value *= 1000.0 if suffix in "kK" else 1_000_000.0
                out.append((value, clause.lower()))
    return out


def _matches(value: float, n: float) -> bool:
    """`value` is `n`, possibly in another unit (within 1%)."""
    return any(abs(value - n * f) <= 0.01 * abs(n * f) for f in _UNIT_FACTORS if n)


def was_said(value: float, said: list[float]) -> bool:
    """Whether `value` is a number of the conversation, possibly in another unit."""
    return any(_matches(value, n) for n in said)


def guard(raw: Any, user_texts: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The model's JSON checked: a field of a wrong type is dropped, and so is every number that the
    user never said, or said about something else (the model may not invent or move one). Returns
    (intent fields, what was dropped and why)."""
    intent: dict[str, Any] = {"task": None, **dict.fromkeys(NUMBERS), "priority": None}
    dropped: list[str] = []
    if not isinstance(raw, dict):
        return intent, ["the model's answer was not a JSON object"]
    said = _said(user_texts)
    for name, (kind, what) in NUMBERS.items():
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            dropped.append(f"{name}={value!r}: not a positive number")
            continue
        sources = [clause for n, clause in said if _matches(float(value), n)]
        if not sources:
            dropped.append(f"{name}={value!r}: not a number of the conversation")
        elif not any(cue in clause for clause in sources for cue in CUES[name]):
            dropped.append(f"{name}={value!r}: said, but not about the {what}")
        else:
            intent[name] = int(round(value)) if kind == "integer" else float(value)
    if raw.get("task") in TASKS:
        intent["task"] = raw["task"]
    if raw.get("priority") in PRIORITIES:
        intent["priority"] = raw["priority"]
    if intent["users"] is not None and intent["rate"] is not None:
        # Both given: the load is one or the other; users (said plainly more often) is kept.
        dropped.append(f"rate={intent['rate']!r}: users was given too; a load is one or the other")
        intent["rate"] = None
    return intent, dropped


def missing(intent: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(what a recommendation needs and the intent lacks, what is asked for but may stay a default)."""
    needed = []
    if intent.get("task") is None:
        needed.append("task")
    if intent.get("users") is None and intent.get("rate") is None:
        needed.append("users or rate")
    optional = [name for name in OPTIONAL_ASKED if intent.get(name) is None]
    return needed, optional


def question(needed: list[str], optional: list[str]) -> str | None:
    """What to ask next: the needed first; then, once, the optional ones (a blank answer keeps the
    task's defaults, which the recommendation names)."""
    asks = []
    if "task" in needed:
        asks.append("what is it for: chat, answers from your documents (rag), summarisation or code?")
    if "users or rate" in needed:
        asks.append("how many users at the same time, or how many requests per second?")
    if asks:
        return " ".join(a[0].upper() + a[1:] for a in asks)
    if optional:
        named = ", ".join(NUMBERS[name][1] for name in optional)
        return f"Anything to add on {named}? (Leave it and the task's defaults are used and said so.)"
    return None
