"""The JSON Schemas of the four workflow documents (Workflow, Agent, Tool, Policy), checked before meaning."""

from __future__ import annotations

NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"}
STEP_ID = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"}
ANY_SCHEMA = {"type": "object"}  # a JSON Schema of its own, checked with check_schema()

LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tokens": {"type": "integer", "minimum": 1},
        "tool_calls": {"type": "integer", "minimum": 0},
        "steps": {"type": "integer", "minimum": 1},
        "wall_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}
ON_LIMIT = {"enum": ["degrade", "fail", "escalate"]}
RETRY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "attempts": {"type": "integer", "minimum": 1, "maximum": 20},
        "backoff_s": {"type": "number", "minimum": 0, "maximum": 600},
        "max_backoff_s": {"type": "number", "minimum": 0, "maximum": 3600},
        "jitter": {"type": "number", "minimum": 0, "maximum": 1},
        "on": {"type": "array", "items": {"enum": ["error", "timeout"]}, "uniqueItems": True},
    },
}
CONDITION = {
    "oneOf": [
        {"type": ["string", "boolean"]},
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
            "properties": {
                op: {"type": "array", "minItems": 2, "maxItems": 2}
                for op in ("eq", "ne", "gt", "ge", "lt", "le", "in")
            }
            | {"not": {"$ref": "#/$defs/condition"}},
        },
    ]
}
# Hierarchical work: the agent is chosen at run time (`agent`: a reference, typically to an item of a
# coordinator's plan whose schema lists the agents as an enum) among those named in `among`.
DISPATCH = {
    "type": "object",
    "required": ["agent", "among"],
    "additionalProperties": False,
    "properties": {"agent": {"type": "string"}, "among": {"type": "array", "items": NAME, "minItems": 1}},
}
CALL = {
    "type": "object",
    "properties": {
        "id": STEP_ID,
        "tool": NAME,
        "agent": NAME,
        "dispatch": DISPATCH,
        "with": {"type": "object"},
        "retry": RETRY,
        "tools": {"type": "array", "items": NAME, "uniqueItems": True},
    },
    "oneOf": [{"required": ["tool"]}, {"required": ["agent"]}, {"required": ["dispatch"]}],
    "additionalProperties": False,
}
APPROVAL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "prompt": {"type": "string"},
        "approvers": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "schema": ANY_SCHEMA,
        "expires_in_s": {"type": "number", "exclusiveMinimum": 0},
        "on_expiry": {"enum": ["fail", "continue"]},
        "default": {},
    },
}
STEP = {
    "type": "object",
    "required": ["id"],
    "additionalProperties": False,
    "properties": {
        "id": STEP_ID,
        "tool": NAME,
        "agent": NAME,
        "dispatch": DISPATCH,
        "with": {"type": "object"},
        "retry": RETRY,
        "tools": {"type": "array", "items": NAME, "uniqueItems": True},
        "when": {"$ref": "#/$defs/condition"},
        "end": {"type": "boolean"},
        "foreach": {"type": ["string", "array"]},
        "as": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "do": CALL,
        "reduce": {"enum": ["list", "concat", "merge"]},
        "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
        "parallel": {"type": "array", "minItems": 1, "items": CALL},
        "loop": {
            "type": "object",
            "additionalProperties": False,
            "required": ["do"],
            "properties": {
                "max_loops": {"type": "integer", "minimum": 1, "maximum": 1000},
                "until": {"$ref": "#/$defs/condition"},
                "do": CALL,
            },
        },
        "approval": APPROVAL,
    },
}

# Long-term memory per API key (workflows/memory.py): off unless `enabled: true`; `top_k` past runs'
# summaries, the most relevant to the inputs, are given to the run as `${memory}`.
MEMORY = {
    "type": "object",
    "required": ["enabled"],
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 20},
        # With an embedder: the least cosine similarity that recalls a memory sharing no word.
        "min_similarity": {"type": "number", "minimum": -1, "maximum": 1},
    },
}

WORKFLOW = {
    "type": "object",
    "required": ["kind", "name", "steps"],
    "additionalProperties": False,
    "$defs": {"condition": CONDITION},
    "properties": {
        "kind": {"const": "Workflow"},
        "name": NAME,
        "description": {"type": "string"},
        "inputs": ANY_SCHEMA,
        "budget": LIMITS,
        "on_limit": ON_LIMIT,
        "steps": {"type": "array", "minItems": 1, "items": STEP},
        "outputs": {"type": "object"},
        "memory": MEMORY,
    },
}
AGENT = {
    "type": "object",
    "required": ["kind", "name", "instructions"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "Agent"},
        "name": NAME,
        "description": {"type": "string"},
        "role": {"enum": ["planner", "tool_executor", "validator", "coordinator", "custom"]},
        "model": {"type": "string", "minLength": 1},
        "instructions": {"type": "string", "minLength": 1},
        "tools": {"type": "array", "items": NAME, "uniqueItems": True},
        "collections": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "output_schema": ANY_SCHEMA,
        "limits": LIMITS,
        "on_limit": ON_LIMIT,
        # The agent's own memory per key: its relevant past calls are added to its task.
        "memory": MEMORY,
    },
}
TOOL = {
    "type": "object",
    "required": ["kind", "name", "type"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "Tool"},
        "name": NAME,
        "description": {"type": "string"},
        # builtin: an implementation in the appliance; python: `code` (defining `main(args)`) run in
        # the sandbox; http: a request to a host of settings network.allow (or loopback); sql: a
        # parameterised SELECT over the views of settings workflows.sql_views.
        "type": {"enum": ["builtin", "python", "http", "sql"]},
        "builtin": NAME,
        "code": {"type": "string", "minLength": 1, "maxLength": 100000},
        "sandbox": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cpu_seconds": {"type": "integer", "minimum": 1, "maximum": 600},
                "memory_mb": {"type": "integer", "minimum": 32, "maximum": 8192},
                "file_mb": {"type": "integer", "minimum": 0, "maximum": 4096},
                "processes": {"type": "integer", "minimum": 0, "maximum": 64},
            },
        },
        "http": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                # Only the path and query take {fields} of the input; the host is fixed.
                "url": {"type": "string", "minLength": 8, "maxLength": 2000},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                # A header carrying the call's invocation id, for a server that drops repeats.
                "idempotency_header": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
            },
        },
        "sql": {
            "type": "object",
            "required": ["query"],
            "additionalProperties": False,
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 20000},
                "max_rows": {"type": "integer", "minimum": 1, "maximum": 10000},
            },
        },
        "input_schema": ANY_SCHEMA,
        "output_schema": ANY_SCHEMA,
        "side_effects": {"enum": ["none", "idempotent", "non_idempotent"]},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "retry": RETRY,
        "breaker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "failures": {"type": "integer", "minimum": 1},
                "window_s": {"type": "number", "exclusiveMinimum": 0},
                "cooldown_s": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "fallback": NAME,
    },
}
POLICY = {
    "type": "object",
    "required": ["kind", "name"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "Policy"},
        "name": NAME,
        "description": {"type": "string"},
        "applies_to": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "roles": {"type": "array", "items": {"enum": ["admin", "user"]}},
                "keys": {"type": "array", "items": {"type": "string"}},
            },
        },
        # Default-deny scopes: when given, only these tools and collections are reachable.
        "tools": {"type": "array", "items": NAME},
        "collections": {"type": "array", "items": {"type": "string"}},
        "max_budget": LIMITS,
    },
}

SCHEMAS = {"Workflow": WORKFLOW, "Agent": AGENT, "Tool": TOOL, "Policy": POLICY}
