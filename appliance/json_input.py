"""JSON from outside (request bodies, JSON form fields): valid UTF-8, and nested within a bound.

Deep nesting is refused here, once, with a clear error, instead of breaking wherever the value goes
next: the decoders themselves (msgspec and json raise RecursionError near 1,000 levels), json.dumps
on the way into DuckDB, DuckDB's JSON functions, a chat template.
"""

from __future__ import annotations

from typing import Any

import msgspec

from appliance.errors import InvalidInput

_CONTAINERS = (dict, list)


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers in `value` nest more than `limit` deep (the value itself is level 1).
    Iterative, so an arbitrarily deep value cannot exhaust the stack here."""
    stack = [(value, 1)] if isinstance(value, _CONTAINERS) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))
    return False


def too_deep(what: str, limit: int) -> InvalidInput:
    return InvalidInput(f"{what} is nested more than {limit} levels deep (limits.max_json_depth)")


def not_utf8(what: str) -> InvalidInput:
    return InvalidInput(f"{what} is not valid UTF-8")


def check_depth(value: Any, limit: int, what: str) -> Any:
    if depth_exceeds(value, limit):
        raise too_deep(what, limit)
    return value


def decode(data: str | bytes, limit: int, what: str) -> Any:
    """`data` decoded as JSON; InvalidInput naming `what` when it is not JSON, not UTF-8 or too deep."""
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        raise too_deep(what, limit) from None
    except UnicodeDecodeError:
        raise not_utf8(what) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    return check_depth(value, limit, what)
