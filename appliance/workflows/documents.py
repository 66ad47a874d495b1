"""Reading workflow documents: YAML or JSON in, each checked against its JSON Schema, named by the hash
of its canonical form."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidInput
from appliance.workflows.schemas import SCHEMAS

MAX_DOCUMENT_BYTES = 1 << 20


class DocumentError(InvalidInput):
    """A document fault, named by where it is: `<file>: <path>: <what>`."""

    def __init__(self, path: str, message: str, source: str = "") -> None:
        self.path = path
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path}: {message}" if path else f"{where}{message}")


@dataclass(frozen=True, slots=True)
class Doc:
    """One parsed, schema-checked document and its version (the hash of its canonical JSON)."""

    kind: str
    name: str
    body: dict
    source: str = ""

    @property
    def version(self) -> str:
        return version_of(self.body)


def canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def version_of(body: dict) -> str:
    return hashlib.sha256(canonical(body).encode()).hexdigest()[:16]


def path_text(parts) -> str:
    """`["steps", 2, "with", "text"]` -> `steps[2].with.text`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse(text: str | bytes, source: str = "") -> list[Doc]:
    """Every document of a YAML (or JSON) stream, each checked against the schema of its kind."""
    import yaml

    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise DocumentError("", f"over {MAX_DOCUMENT_BYTES} bytes", source)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DocumentError("", "not UTF-8 text", source) from None
    try:
        raw = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise DocumentError(where, f"not valid YAML: {getattr(exc, 'problem', exc)}", source) from None
    except RecursionError:
        raise DocumentError("", "nested too deeply", source) from None
    if not raw:
        raise DocumentError("", "no document", source)
    docs = []
    for i, body in enumerate(raw):
        label = source if len(raw) == 1 else f"{source}#{i + 1}"
        docs.append(check_schema(body, label))
    return docs


def check_schema(body: Any, source: str = "") -> Doc:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(body, dict):
        raise DocumentError("", "a document is a mapping with `kind` and `name`", source)
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        # YAML dates, sets or binary: not representable in the canonical JSON form.
        raise DocumentError("", "holds values JSON cannot represent (dates, binary)", source) from None
    kind = body.get("kind")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise DocumentError("kind", f"must be one of {', '.join(SCHEMAS)}", source)
    errors = sorted(
        Draft202012Validator(schema).iter_errors(body), key=lambda e: (len(e.path), list(map(str, e.path)))
    )
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))  # the deepest fault says most
        raise DocumentError(path_text(err.absolute_path) or "(document)", _message(err), source)
    for path, nested in _embedded_schemas(body):
        try:
            Draft202012Validator.check_schema(nested)
        except SchemaError as exc:
            raise DocumentError(path, f"not a valid JSON Schema: {exc.message}", source) from None
    return Doc(kind, body["name"], body, source)


def _message(err) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown field(s)")
    if (
        err.validator == "oneOf"
        and isinstance(err.instance, dict)
        and "tool" in err.instance
        and "agent" in err.instance
    ):
        return "a call names either a tool or an agent, not both"
    return err.message


def _embedded_schemas(body: dict):
    for key in ("inputs", "output_schema", "input_schema"):
        if isinstance(body.get(key), dict):
            yield key, body[key]
    for i, step in enumerate(body.get("steps") or []):
        approval = step.get("approval") if isinstance(step, dict) else None
        if isinstance(approval, dict) and isinstance(approval.get("schema"), dict):
            yield f"steps[{i}].approval.schema", approval["schema"]
