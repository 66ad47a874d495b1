"""Query routing: how much a query leans on keywords or on meaning, from its surface form alone."""

from __future__ import annotations

import re
from typing import Literal

QueryKind = Literal["lookup", "question", "mixed"]

_QUOTED = re.compile(r"\"[^\"]+\"|'[^'\s][^']*[^'\s]'|`[^`]+`")
# Error codes and numbers that only match verbatim: E1234, ORA-00942, HTTP 404, 0x80070005, ENOENT.
_CODE = re.compile(r"\b(?:[A-Z]{1,6}-?\d{2,}|0x[0-9a-fA-F]{3,}|E[A-Z]{3,}|\d{3,})\b")
# File names and paths: config.yaml, /etc/fstab, src/main.rs.
_FILE = re.compile(r"(?:^|\s)(?:[\w.-]*/[\w./-]+|[\w-]+\.[A-Za-z][A-Za-z0-9]{0,5})(?=\s|$|[,;:])")
# Identifiers: snake_case, camelCase, dotted.names(), Class::method, --long-options.
_IDENT = re.compile(r"\b\w+_\w+\b|\b[a-z]+[A-Z]\w*\b|\w\.\w+\(|::|(?:^|\s)--?[a-z][\w-]*|\w\(\)")
_QUESTION_START = re.compile(
    r"^(?:how|what|why|when|where|which|who|whom|whose|can|could|should|would|is|are|does|do|did|"
    r"will|explain|describe|tell me|show me)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")


def classify(query: str) -> QueryKind:
    """ "lookup" for what only matches verbatim (quoted phrases, error codes, file names,
    identifiers) and for one- or two-word keyword queries; "question" for natural-language
    questions of four words or more; "mixed" for the rest."""
    text = query.strip()
    words = _WORD.findall(text)
    if _QUOTED.search(text) or _CODE.search(text) or _FILE.search(text) or _IDENT.search(text):
        return "lookup"
    if len(words) <= 2:
        return "lookup"
    if len(words) >= 4 and (text.endswith("?") or _QUESTION_START.match(text)):
        return "question"
    return "mixed"


def routed_weight(query: str, semantic_weight: float, lookup_weight: float, question_weight: float) -> float:
    """The semantic weight for this query: the lookup or question weight where the rules say so."""
    kind = classify(query)
    if kind == "lookup":
        return lookup_weight
    if kind == "question":
        return question_weight
    return semantic_weight
