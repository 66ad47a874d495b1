"""A form from a JSON Schema (a workflow's inputs, an approval's answer): the FormDialog's fields, and
the typed object back from what was typed, with a clear message for what does not fit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# A FormDialog field: (name, label, default text or choices).
Field = tuple[str, str, str | Sequence[str]]
UNSET = "(unset)"


def _label(name: str, spec: dict, required: bool) -> str:
    kind = spec.get("type", "any")
    kind = "/".join(kind) if isinstance(kind, list) else kind
    text = f"{name}{' *' if required else ''} ({kind})"
    if spec.get("description"):
        text += f": {spec['description']}"
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def fields(schema: dict | None, defaults: dict | None = None) -> list[Field]:
    """One field per property: a choice for an enum or a boolean, else a text (JSON for arrays and
    objects). `defaults` (or the schema's own `default`) fill them in."""
    schema = schema or {}
    required = set(schema.get("required") or [])
    out: list[Field] = []
    for name, spec in (schema.get("properties") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        given = (defaults or {}).get(name, spec.get("default"))
        label = _label(name, spec, name in required)
        if "enum" in spec or spec.get("type") == "boolean":
            choices = [_text(c) for c in spec.get("enum", [True, False])]
            if given is not None and _text(given) in choices:
                choices.remove(_text(given))
                choices.insert(0, _text(given))
            if name not in required:
                choices.append(UNSET)
            out.append((name, label, choices))
        else:
            out.append((name, label, _text(given)))
    return out


def values(schema: dict | None, typed: dict[str, str]) -> dict:
    """The object the form describes, each field converted to its schema's type; ValueError names
    the field that does not convert or is missing. The server checks the schema itself again."""
    schema = schema or {}
    required = set(schema.get("required") or [])
    out: dict[str, Any] = {}
    for name, spec in (schema.get("properties") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        raw = typed.get(name, "")
        if raw in ("", UNSET):
            if name in required:
                raise ValueError(f"{name} is required")
            continue
        out[name] = _convert(name, spec, raw)
    return out


def _convert(name: str, spec: dict, raw: str) -> Any:
    if "enum" in spec:
        for choice in spec["enum"]:
            if _text(choice) == raw:
                return choice
        raise ValueError(f"{name}: {raw!r} is not one of the choices")
    kind = spec.get("type")
    if kind == "string" or (kind is None and not raw.lstrip().startswith(("{", "[", '"'))):
        return raw
    if kind == "boolean":
        if raw.lower() in ("true", "yes", "1"):
            return True
        if raw.lower() in ("false", "no", "0"):
            return False
        raise ValueError(f"{name}: {raw!r} is not true or false")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not a whole number") from None
    if kind == "number":
        try:
            return float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise ValueError(f"{name}: {raw!r} is not a number") from None
    try:
        value = json.loads(raw)
    except ValueError:
        what = {"array": "a JSON list", "object": "a JSON object"}.get(str(kind), "JSON")
        raise ValueError(f"{name}: {raw!r} is not {what}") from None
    if kind == "array" and not isinstance(value, list):
        raise ValueError(f'{name}: give a JSON list, like ["a", "b"]')
    if kind == "object" and not isinstance(value, dict):
        raise ValueError(f'{name}: give a JSON object, like {{"a": 1}}')
    return value


def decision(schema: dict | None, approve: bool) -> dict | None:
    """The answer to an approval that approves (or rejects) it: every boolean field of its schema set
    to `approve`; None when the schema has no boolean, or requires more (the form asks for it)."""
    if not schema:
        return {"approved": approve}
    props = schema.get("properties") or {}
    flags = [n for n, s in props.items() if isinstance(s, dict) and s.get("type") == "boolean"]
    others = [n for n in schema.get("required") or [] if n not in flags]
    if schema.get("type") not in (None, "object") or not flags or others:
        return None
    return {n: approve for n in flags}
