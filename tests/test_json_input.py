"""JSON from outside: decoded within a nesting bound, as valid UTF-8, or refused with InvalidInput."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.json_input import check_depth, decode, depth_exceeds


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_counts_containers_from_one():
    assert not depth_exceeds("scalar", 1)
    assert not depth_exceeds({}, 1)
    assert depth_exceeds({"a": []}, 1)
    assert not depth_exceeds({"a": [{"b": 1}]}, 3)
    assert depth_exceeds({"a": [{"b": {}}]}, 3)
    assert depth_exceeds([1, 2, [3, [4, [5]]]], 3)


@pytest.mark.parametrize("depth", [64, 1])
def test_values_within_the_bound_decode(depth):
    assert decode(_nested(depth), 64, "x") is not None
    assert check_depth(decode(_nested(depth), 64, "x"), 64, "x") == decode(_nested(depth), 64, "x")


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deeper_values_are_refused_by_name(depth):
    # 1,000 and more: the decoder's own RecursionError, turned into the same error.
    with pytest.raises(InvalidInput, match=r"metadata is nested more than 64 levels deep"):
        decode(_nested(depth), 64, "metadata")


def test_a_deep_value_built_in_python_is_checked_without_recursion():
    value: list = []
    for _ in range(200_000):
        value = [value]
    assert depth_exceeds(value, 64)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b'{"a": "\xff"}', "not valid UTF-8"), (b'{"a": ', "not valid JSON"), ("{'a': 1}", "not valid JSON")],
)
def test_malformed_input_is_refused_by_name(raw, message):
    with pytest.raises(InvalidInput, match=message):
        decode(raw, 64, "metadata")
