"""The enforced JSON Schema subset and its bounds (appliance.models.grammar): refused by keyword, never dropped."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.models.grammar import MAX_GRAMMAR_CHARS, Grammar, check_schema, json_grammar

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)")


def refused(schema, param: str = "response_format") -> str:
    with pytest.raises(InvalidInput) as info:
        json_grammar(schema, param)
    assert info.value.extra["param"] == param
    return str(info.value)


@pytest.mark.parametrize(
    "keyword, schema",
    [
        ("minimum", {"type": "integer", "minimum": 0}),
        ("multipleOf", {"type": "number", "multipleOf": 2}),
        ("uniqueItems", {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        ("not", {"not": {"type": "string"}}),
        ("if", {"if": {"type": "string"}, "then": {"type": "string"}}),
        ("patternProperties", {"type": "object", "patternProperties": {"^a$": {"type": "string"}}}),
        ("allOf", {"allOf": [{"type": "string"}]}),
    ],
)
def test_unsupported_keywords_are_named(keyword, schema):
    assert repr(keyword) in refused(schema)


@pytest.mark.parametrize(
    "schema, needle",
    [
        ({"anyOf": [{"type": "string"}], "properties": {}}, "anyOf alongside properties"),
        ({"type": ["object", "null"], "properties": {}}, "list of types"),
        ({"$ref": "#/$defs/a", "type": "string", "$defs": {"a": {"type": "string"}}}, "$ref alongside"),
        ({"$ref": "http://example.com/s.json"}, "only local references"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            "undefined properties: b",
        ),
        ({"type": "string", "pattern": "^a$", "maxLength": 3}, "together are not supported"),
        ({"type": "string", "pattern": "a+"}, "anchored"),
        ({"type": "string", "pattern": '^.*"$'}, "'.'"),
        ({"type": "string", "format": "email"}, "format 'email'"),
        ({"type": "array", "prefixItems": [{"type": "string"}], "minItems": 1}, "tuple"),
        ({"type": "color"}, "unknown type"),
        ({"properties": {"a": {"type": "integer", "maxLength": 2}}}, "strings only"),
    ],
)
def test_what_the_converter_would_drop_is_refused(schema, needle):
    assert needle in refused(schema)


def test_bounds_on_hostile_schemas():
    deep: dict = {"type": "string"}
    for _ in range(20):
        deep = {"type": "array", "items": deep}
    assert "deeper than 16" in refused(deep)
    assert "enum must list 1 to 256" in refused({"enum": list(range(300))})
    assert "recursive $ref" in refused(
        {
            "$defs": {
                "a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
                "b": {"anyOf": [{"$ref": "#/$defs/a"}]},
            },
            "$ref": "#/$defs/a",
        }
    )
    assert "over the 65536 limit" in refused({"enum": ["x" * 70_000]})
    assert "maxLength must be an integer from 0 to 256" in refused({"type": "string", "maxLength": 10**6})
    assert "repetitions are at most 256" in refused({"type": "string", "pattern": "^a{1,100000}$"})
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(129)}}
    assert "at most 128" in refused(wide)
    with pytest.raises(InvalidInput, match="over the"):
        Grammar("root ::= " + '"a" ' * MAX_GRAMMAR_CHARS, "json_schema")


def test_annotations_are_dropped_and_defs_renamed():
    schema = {
        "title": "T",
        "description": "d",
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/A", "description": "an a"}, "any": {}},
        "required": ["a"],
        "definitions": {"A": {"type": "string", "default": "x"}},
    }
    # A $ref with an annotation beside it is fine: annotations constrain nothing.
    normalized = check_schema(schema, prefix="s0-")
    assert normalized["properties"]["a"] == {"$ref": "#/$defs/s0-A"}
    assert normalized["$defs"] == {"s0-A": {"type": "string"}}
    assert "title" not in normalized and normalized["additionalProperties"] is False
    assert normalized["properties"]["any"]["type"] == [
        "string",
        "number",
        "boolean",
        "null",
        "object",
        "array",
    ]


def test_grammars_compile_for_the_subset():
    g = json_grammar(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
                "when": {"type": "string", "format": "date-time"},
                "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                "either": {"oneOf": [{"type": "string"}, {"type": "null"}]},
                "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "boolean"}]},
            },
            "required": ["n"],
        }
    )
    assert g.kind == "json_schema" and g.json_schema is not None and g.gbnf.startswith("array") is False
    assert "root ::= json" in g.gbnf
    # JSON strings may not hold raw control characters: the string rule excludes them.
    assert "\\x00-\\x1F" in g.gbnf
    assert json_grammar(None).kind == "json_object" and json_grammar(None).json_schema is None
