"""Citation markers: check that every [n] in an answer points at a supplied source."""

from __future__ import annotations

import re
from dataclasses import dataclass

# [1], [2, 3], [1][2]; not [a] or [10.5]
MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@dataclass(slots=True)
class CheckedAnswer:
    text: str
    cited: list[int]  # valid source numbers, in order of first use
    invalid: list[int]  # numbers the model made up; removed from the text


def check_citations(answer: str, n_sources: int) -> CheckedAnswer:
    """Keep markers that refer to a supplied source (1..n_sources); drop the others from the text
    so a reader never follows a citation to nothing."""
    cited: list[int] = []
    invalid: list[int] = []

    def repl(match: re.Match) -> str:
        numbers = [int(x) for x in re.split(r"\s*,\s*", match.group(1))]
        good = [n for n in numbers if 1 <= n <= n_sources]
        for n in numbers:
            target = cited if n in good else invalid
            if n not in target:
                target.append(n)
        return "[" + ", ".join(map(str, good)) + "]" if good else ""

    text = MARKER.sub(repl, answer)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "claim [9]." minus the marker leaves "claim ."
    return CheckedAnswer(text=text.strip(), cited=cited, invalid=invalid)


def markers_in(text: str) -> list[int]:
    found: list[int] = []
    for match in MARKER.finditer(text):
        for n in re.split(r"\s*,\s*", match.group(1)):
            if int(n) not in found:
                found.append(int(n))
    return found
