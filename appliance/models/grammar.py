"""Grammars for constrained decoding: the enforced JSON Schema subset, its bounds, and GBNF built from it.

A JSON schema from a request is untrusted input. It is checked here against the subset that
llama-cpp-python 0.3.36's converter (`llama_cpp.llama_grammar.SchemaConverter`) really enforces,
and against size bounds, before anything is compiled: a keyword the converter would silently drop
(`minimum`, `uniqueItems`, `not`, ...) is refused with the keyword's name, so what is accepted is
what the output will obey. The GBNF text is what llama.cpp's grammar sampler and vLLM's
structured-output backends take.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput

# Bounds on an untrusted schema: far above real tool signatures and response schemas.
MAX_SCHEMA_CHARS = 64 * 1024
MAX_DEPTH = 16
MAX_NODES = 2000  # subschemas in one schema
MAX_ENUM = 256  # values of one enum
MAX_PROPERTIES = 128  # of one object
MAX_ALTERNATIVES = 64  # of one anyOf/oneOf
MAX_REPEAT = 256  # minItems/maxItems/minLength/maxLength: each unit of a bound is a grammar rule
MAX_PATTERN_CHARS = 512
MAX_GRAMMAR_CHARS = 512 * 1024

TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")
FORMATS = ("date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5")
# Keywords that describe and never constrain: dropped before conversion.
ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
    | {"readOnly", "writeOnly"}
)
SUPPORTED = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "prefixItems"}
    | {"minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions"}
    | {"pattern", "minLength", "maxLength", "format"}
)
_ANY_VALUE = {"type": ["string", "number", "boolean", "null", "object", "array"]}
_JSON_CHAR = r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# Pattern syntax whose characters could include a quote or a control character (which would end
# or break the JSON string): ".", negated classes, class escapes, groups of the (?...) kind.
_UNSAFE_PATTERN = re.compile(r"(?<!\\)\.|\[\^|\\[dDwWsSbBpP]|\(\?")
_REF = re.compile(r"^#/(\$defs|definitions)/([A-Za-z0-9_.-]{1,64})$")


@dataclass(frozen=True, slots=True)
class Grammar:
    """A constraint on generated text: GBNF, plus the JSON schema when the whole output is one JSON value."""

    gbnf: str
    kind: str  # "json_object" | "json_schema" | "tools"
    json_schema: dict | None = None  # for backends with a native JSON-schema mode (vLLM)
    # The same constraint as OpenAI request fields (tool_choice, parallel_tool_calls,
    # response_format), for a backend that takes those instead of GBNF (appliance/models/remote.py).
    native: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.gbnf, str) or "root ::=" not in self.gbnf:
            raise InvalidInput("a grammar needs a root rule")
        if len(self.gbnf) > MAX_GRAMMAR_CHARS:
            raise InvalidInput(
                f"the grammar is {len(self.gbnf)} characters, over the {MAX_GRAMMAR_CHARS} limit: "
                "use a smaller schema (fewer properties, enum values or repetitions)",
                param="response_format",
            )


class _Checker:
    """One schema's walk: refuses what is outside the subset or the bounds, returns a normalized copy."""

    def __init__(self, param: str, prefix: str) -> None:
        self.param = param
        self.prefix = prefix  # makes $defs names unique across the schemas of one grammar
        self.nodes = 0
        self.defs: dict[str, Any] = {}

    def refuse(self, path: str, message: str) -> InvalidInput:
        return InvalidInput(f"{self.param}: {message} (at {path or '/'})", param=self.param)

    def check(self, schema: Any) -> dict:
        try:
            size = len(json.dumps(schema))
        except (TypeError, ValueError):
            raise self.refuse("", "the schema is not JSON") from None
        if size > MAX_SCHEMA_CHARS:
            raise self.refuse("", f"the schema is {size} characters, over the {MAX_SCHEMA_CHARS} limit")
        if not isinstance(schema, dict):
            raise self.refuse("", "the schema must be a JSON object")
        for key in ("$defs", "definitions"):
            defs = schema.get(key)
            if defs is None:
                continue
            if not isinstance(defs, dict) or len(defs) > MAX_PROPERTIES:
                raise self.refuse(f"/{key}", f"{key} must be an object of at most {MAX_PROPERTIES} schemas")
            for name, sub in defs.items():
                if not _REF.fullmatch(f"#/{key}/{name}"):
                    raise self.refuse(f"/{key}/{name}", "definition names are letters, digits, _ . -")
                self.defs[f"#/{key}/{name}"] = sub
        self._check_refs_acyclic()
        out = self.visit(schema, "", 0, root=True)
        if self.defs:
            out["$defs"] = {
                self._def_name(ref): self.visit(sub, ref[1:], 1) for ref, sub in self.defs.items()
            }
        return out

    def _def_name(self, ref: str) -> str:
        return f"{self.prefix}{ref.rsplit('/', 1)[1]}"

    def _check_refs_acyclic(self) -> None:
        # A recursive schema (a tree, a linked list) has no bound on its output's nesting: refused.
        edges = {ref: set(_refs_in(sub)) for ref, sub in self.defs.items()}
        state: dict[str, int] = {}

        def walk(ref: str, trail: tuple[str, ...]) -> None:
            if state.get(ref) == 2:
                return
            if state.get(ref) == 1:
                raise self.refuse(ref[1:], f"recursive $ref ({' -> '.join((*trail, ref))}) is not supported")
            state[ref] = 1
            for nxt in edges.get(ref, ()):
                walk(nxt, (*trail, ref))
            state[ref] = 2

        for ref in edges:
            walk(ref, ())

    def visit(self, schema: Any, path: str, depth: int, root: bool = False) -> dict:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.refuse(path, f"the schema has more than {MAX_NODES} subschemas")
        if depth > MAX_DEPTH:
            raise self.refuse(path, f"the schema nests deeper than {MAX_DEPTH} levels")
        if schema is True:
            return dict(_ANY_VALUE)
        if not isinstance(schema, dict):
            raise self.refuse(path, "a subschema must be a JSON object or true")
        for key in schema:
            if key in ANNOTATIONS:
                continue
            if key not in SUPPORTED:
                raise self.refuse(
                    f"{path}/{key}",
                    f"JSON Schema keyword {key!r} is not supported (supported: {', '.join(sorted(SUPPORTED))})",
                )
            if key in ("$defs", "definitions") and not root:
                raise self.refuse(f"{path}/{key}", f"{key} is only supported at the root of the schema")
        s = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k not in ("$defs", "definitions")}
        if not s:
            return dict(_ANY_VALUE)
        if "$ref" in s:
            return self._ref(s, path)
        for key in ("anyOf", "oneOf"):
            if key in s:
                return self._union(s, key, path, depth)
        kind = s.get("type")
        if isinstance(kind, list):
            if len(s) > 1 or not kind or any(t not in TYPES for t in kind):
                raise self.refuse(
                    f"{path}/type", "a list of types is supported only alone, each one of " + ", ".join(TYPES)
                )
            return {"type": list(kind)}
        if kind is not None and kind not in TYPES:
            raise self.refuse(f"{path}/type", f"unknown type {kind!r} (one of {', '.join(TYPES)})")
        if "const" in s or "enum" in s:
            return self._constants(s, path)
        if kind in (None, "object") and ({"properties", "required", "additionalProperties"} & set(s)):
            return self._object(s, path, depth)
        if kind in (None, "array") and ({"items", "prefixItems", "minItems", "maxItems"} & set(s)):
            return self._array(s, path, depth)
        if {"pattern", "minLength", "maxLength", "format"} & set(s):
            return self._string(s, path)
        if kind is None:
            raise self.refuse(path, "a subschema needs a type (or properties, items, enum, ...)")
        return {"type": kind}

    def _ref(self, s: dict, path: str) -> dict:
        ref = s["$ref"]
        if len(s) > 1:
            raise self.refuse(path, "$ref alongside other keywords is not supported")
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise self.refuse(f"{path}/$ref", "only local references #/$defs/<name> are supported")
        if ref not in self.defs:
            raise self.refuse(f"{path}/$ref", f"{ref} is not defined")
        return {"$ref": f"#/$defs/{self._def_name(ref)}"}

    def _union(self, s: dict, key: str, path: str, depth: int) -> dict:
        alternatives = s[key]
        if len(s) > 1:
            # The converter would drop the siblings: refused rather than silently not enforced.
            others = sorted(k for k in s if k != key)
            raise self.refuse(path, f"{key} alongside {', '.join(others)} is not supported")
        if not isinstance(alternatives, list) or not 1 <= len(alternatives) <= MAX_ALTERNATIVES:
            raise self.refuse(f"{path}/{key}", f"{key} must list 1 to {MAX_ALTERNATIVES} schemas")
        # oneOf is enforced as anyOf: an output matching two alternatives is not excluded.
        return {"anyOf": [self.visit(a, f"{path}/{key}/{i}", depth + 1) for i, a in enumerate(alternatives)]}

    def _constants(self, s: dict, path: str) -> dict:
        extra = set(s) - {"type", "const", "enum"}
        if extra or ("const" in s and "enum" in s):
            raise self.refuse(
                path, f"enum/const alongside {', '.join(sorted(extra or {'enum'}))} is not supported"
            )
        if "const" in s:
            return {"const": s["const"]}
        values = s["enum"]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_ENUM:
            raise self.refuse(f"{path}/enum", f"enum must list 1 to {MAX_ENUM} values")
        return {"enum": list(values)}

    def _object(self, s: dict, path: str, depth: int) -> dict:
        extra = set(s) - {"type", "properties", "required", "additionalProperties"}
        if extra:
            raise self.refuse(path, f"{', '.join(sorted(extra))} on an object is not supported")
        props = s.get("properties", {})
        if not isinstance(props, dict) or len(props) > MAX_PROPERTIES:
            raise self.refuse(
                f"{path}/properties", f"properties must be an object of at most {MAX_PROPERTIES}"
            )
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.refuse(f"{path}/required", "required must be a list of property names")
        missing = [r for r in required if r not in props]
        if missing:
            raise self.refuse(
                f"{path}/required", f"required names undefined properties: {', '.join(missing)}"
            )
        out: dict = {
            "type": "object",
            "properties": {
                name: self.visit(sub, f"{path}/properties/{name}", depth + 1) for name, sub in props.items()
            },
            "required": list(dict.fromkeys(required)),
        }
        additional = s.get("additionalProperties", False)
        if isinstance(additional, dict):
            out["additionalProperties"] = self.visit(additional, f"{path}/additionalProperties", depth + 1)
        elif isinstance(additional, bool):
            # Absent: no properties beyond those named. That narrows JSON Schema's default (any extra
            # property) but every output stays valid, and models do not invent keys.
            out["additionalProperties"] = additional
        else:
            raise self.refuse(f"{path}/additionalProperties", "must be a boolean or a schema")
        return out

    def _array(self, s: dict, path: str, depth: int) -> dict:
        extra = set(s) - {"type", "items", "prefixItems", "minItems", "maxItems"}
        if extra:
            raise self.refuse(path, f"{', '.join(sorted(extra))} on an array is not supported")
        items = s.get("items", True)
        if "prefixItems" in s or isinstance(items, list):
            tuple_items = s.get("prefixItems", items)
            if "minItems" in s or "maxItems" in s or ("prefixItems" in s and "items" in s):
                raise self.refuse(
                    path, "a tuple (prefixItems) is supported without items, minItems or maxItems"
                )
            if not isinstance(tuple_items, list) or not 1 <= len(tuple_items) <= MAX_ALTERNATIVES:
                raise self.refuse(path, f"prefixItems must list 1 to {MAX_ALTERNATIVES} schemas")
            return {
                "type": "array",
                "prefixItems": [
                    self.visit(x, f"{path}/prefixItems/{i}", depth + 1) for i, x in enumerate(tuple_items)
                ],
            }
        low, high = self._bounds(s, "minItems", "maxItems", path)
        out: dict = {"type": "array", "items": self.visit(items, f"{path}/items", depth + 1)}
        if low:
            out["minItems"] = low
        if high is not None:
            out["maxItems"] = high
        return out

    def _string(self, s: dict, path: str) -> dict:
        if s.get("type", "string") != "string":
            raise self.refuse(path, "pattern, minLength, maxLength and format apply to strings only")
        extra = set(s) - {"type", "pattern", "minLength", "maxLength", "format"}
        if extra:
            raise self.refuse(path, f"{', '.join(sorted(extra))} on a string is not supported")
        given = [k for k in ("pattern", "format", "minLength") if k in s]
        if "maxLength" in s and "minLength" not in s:
            given.append("maxLength")
        if len(given) > 1 and not (set(given) <= {"minLength", "maxLength"}):
            raise self.refuse(path, f"{' and '.join(given)} together are not supported; use one")
        if "pattern" in s:
            pattern = s["pattern"]
            if (
                not isinstance(pattern, str)
                or len(pattern) > MAX_PATTERN_CHARS
                or not (pattern.startswith("^") and pattern.endswith("$"))
                or _UNSAFE_PATTERN.search(pattern)
            ):
                raise self.refuse(
                    f"{path}/pattern",
                    f"pattern must be anchored (^...$), at most {MAX_PATTERN_CHARS} characters, without "
                    "'.', negated classes [^...], class escapes (\\d \\w \\s: write [0-9] ...) or (?...) groups",
                )
            _check_quantifiers(pattern, lambda m: self.refuse(f"{path}/pattern", m))
            return {"type": "string", "pattern": pattern}
        if "format" in s:
            if s["format"] not in FORMATS:
                raise self.refuse(
                    f"{path}/format", f"format {s['format']!r} is not supported ({', '.join(FORMATS)})"
                )
            return {"type": "string", "format": s["format"]}
        low, high = self._bounds(s, "minLength", "maxLength", path)
        out: dict = {"type": "string", "minLength": low}
        if high is not None:
            out["maxLength"] = high
        return out

    def _bounds(self, s: dict, low_key: str, high_key: str, path: str) -> tuple[int, int | None]:
        low, high = s.get(low_key, 0), s.get(high_key)
        for key, value in ((low_key, low), (high_key, high)):
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPEAT:
                raise self.refuse(f"{path}/{key}", f"{key} must be an integer from 0 to {MAX_REPEAT}")
        if high is not None and low > high:
            raise self.refuse(path, f"{low_key} is above {high_key}")
        return low, high


def _check_quantifiers(pattern: str, refuse) -> None:
    for m in re.finditer(r"\{(\d*)(?:,(\d*))?\}", pattern):
        if any(g and int(g) > MAX_REPEAT for g in m.groups()):
            raise refuse(f"pattern repetitions are at most {MAX_REPEAT}")


def _refs_in(node: Any):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs_in(value)


def check_schema(schema: Any, param: str = "response_format", prefix: str = "") -> dict:
    """The schema normalized to the enforced subset (annotations dropped), or InvalidInput naming the keyword."""
    return _Checker(param, prefix).check(copy.deepcopy(schema) if isinstance(schema, dict) else schema)


class GrammarBuilder:
    """Builds one GBNF grammar from checked JSON schemas and literal rules (tool calls wrap schemas)."""

    def __init__(self) -> None:
        from llama_cpp.llama_grammar import SchemaConverter  # pure Python, pinned with llama-cpp-python

        self._converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self._schemas = 0

    def schema(self, schema: Any, name: str, param: str) -> str:
        """A rule (named after `name`) matching exactly the JSON values `schema` accepts."""
        prefix = f"s{self._schemas}-"
        self._schemas += 1
        checked = check_schema(schema, param, prefix)
        try:
            resolved = self._converter.resolve_refs(checked, f"{prefix}schema")
            return self._converter.visit(resolved, name)
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InvalidInput(
                f"{param}: the schema cannot be compiled to a grammar: {exc}", param=param
            ) from None

    def rule(self, name: str, body: str) -> str:
        return self._converter._add_rule(name, body)  # noqa: SLF001 - the pinned converter's own rule table

    @staticmethod
    def literal(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    def build(
        self, root_body: str, kind: str, json_schema: dict | None = None, native: dict | None = None
    ) -> Grammar:
        from llama_cpp.llama_grammar import PRIMITIVE_RULES

        self.rule("root", root_body)
        rules = self._converter._rules  # noqa: SLF001
        for name, body in rules.items():
            # The converter's string character admits raw control characters, which JSON (and
            # json.loads) refuses inside strings: a model emitting a raw newline would break the output.
            if body == PRIMITIVE_RULES["char"].content:
                rules[name] = _JSON_CHAR
        return Grammar(self._converter.format_grammar(), kind, json_schema, native)


def json_grammar(schema: dict | None, param: str = "response_format") -> Grammar:
    """Output that is one JSON value of `schema`; None: any JSON object (response_format json_object)."""
    builder = GrammarBuilder()
    if schema is None:
        return builder.build(builder.schema({"type": "object"}, "json", param), "json_object")
    normalized = check_schema(schema, param)
    return builder.build(builder.schema(schema, "json", param), "json_schema", normalized)
