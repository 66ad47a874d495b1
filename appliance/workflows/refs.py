"""References (`${inputs.x}`, `${steps.plan.output.items[0]}`, `${item}`) and conditions, resolved
against a run's state."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

_REF = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")


class RefError(Exception):
    """A reference that does not resolve in this run's state."""


def parts(expr: str) -> list[str | int]:
    """`steps.plan.output.items[0]` -> ["steps", "plan", "output", "items", 0]; ValueError if malformed."""
    out: list[str | int] = []
    pos = 0
    while pos < len(expr):
        if expr[pos] == "." and out:
            pos += 1
        m = _PART.match(expr, pos)
        if m is None:
            raise ValueError(f"malformed reference ${{{expr}}}")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not out:
        raise ValueError("empty reference ${}")
    return out


def references(value: Any) -> Iterator[tuple[str, str]]:
    """Every reference in a value: (where inside the value, expression)."""
    if isinstance(value, str):
        for m in _REF.finditer(value):
            yield "", m.group(1)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            for where, expr in references(v):
                yield f".{k}{where}", expr
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for where, expr in references(v):
                yield f"[{i}]{where}", expr


def lookup(state: Mapping[str, Any], expr: str) -> Any:
    node: Any = state
    for part in parts(expr):
        if node is None:
            return None  # through null is null: a skipped step's fields, a loop's first `previous`
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise RefError(f"${{{expr}}}: no item {part}")
            node = node[part]
        else:
            if not isinstance(node, Mapping) or part not in node:
                raise RefError(f"${{{expr}}}: no {part!r}")
            node = node[part]
    return node


def resolve(value: Any, state: Mapping[str, Any]) -> Any:
    """A value with its references replaced: a string that is one whole reference keeps the
    referenced value's type; references inside longer text are written as text (JSON if not a string)."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value.strip())
        if whole:
            return lookup(state, whole.group(1))

        def text(m: re.Match) -> str:
            found = lookup(state, m.group(1))
            return found if isinstance(found, str) else json.dumps(found)

        return _REF.sub(text, value)
    if isinstance(value, Mapping):
        return {k: resolve(v, state) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, state) for v in value]
    return value


_COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
}


def holds(condition: Any, state: Mapping[str, Any]) -> bool:
    """A condition: a reference or literal taken for its truth, or one `{op: [left, right]}`."""
    if isinstance(condition, Mapping):
        (op, arg), *_ = condition.items()
        if op == "not":
            return not holds(arg, state)
        left, right = resolve(arg[0], state), resolve(arg[1], state)
        try:
            return bool(_COMPARE[op](left, right))
        except TypeError as exc:
            raise RefError(f"condition {op}: {exc}") from None
    return bool(resolve(condition, state))
