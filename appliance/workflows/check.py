"""Meaning checks of schema-valid documents: every fault named by its path (`steps[2].with.text: unknown
step 'x'`), so `appliance wf validate` can say where to look."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.workflows.builtins import BUILTINS
from appliance.workflows.documents import Doc, DocumentError
from appliance.workflows.refs import parts, references

ACTIONS = ("tool", "agent", "dispatch", "foreach", "parallel", "loop", "approval")
APPROVERS_SPECIAL = ("owner", "admin")
TEXT_OUTPUT = {"type": "object", "properties": {"text": {"type": "string"}}}


class Catalogue:
    """The documents a check can see: those being checked, then those already stored, then built-ins."""

    def __init__(self, docs: Mapping[str, Mapping[str, dict]]) -> None:
        self.docs = docs  # kind -> name -> body

    def tool(self, name: str) -> dict | None:
        """A tool as the engine sees it: a Tool document, or a built-in used directly."""
        body = self.docs.get("Tool", {}).get(name)
        if body is not None:
            impl = BUILTINS.get(body.get("builtin") or "")
            merged = {"side_effects": impl.side_effects if impl else "none"}
            if impl is not None:
                merged |= {"input_schema": impl.input_schema, "output_schema": impl.output_schema}
            merged |= body
            if body.get("type") == "sql":
                from appliance.workflows.sql import output_schema

                merged["output_schema"] = output_schema(body.get("output_schema"))
            return merged
        impl = BUILTINS.get(name)
        if impl is None:
            return None
        return {
            "kind": "Tool",
            "name": name,
            "type": "builtin",
            "builtin": name,
            "side_effects": impl.side_effects,
            "input_schema": impl.input_schema,
            "output_schema": impl.output_schema,
        }

    def agent(self, name: str) -> dict | None:
        return self.docs.get("Agent", {}).get(name)


def check(doc: Doc, catalogue: Catalogue) -> None:
    """Raise DocumentError at the first fault of a document's meaning."""
    try:
        {"Workflow": _workflow, "Agent": _agent, "Tool": _tool, "Policy": _policy}[doc.kind](
            doc.body, catalogue
        )
    except DocumentError as exc:
        raise DocumentError(exc.path, exc.message, doc.source) from None


def _fault(path: str, message: str) -> DocumentError:
    return DocumentError(path, message)


def _agent(body: dict, cat: Catalogue) -> None:
    for i, name in enumerate(body.get("tools", [])):
        if cat.tool(name) is None:
            raise _fault(f"tools[{i}]", f"unknown tool {name!r}")


def _tool(body: dict, cat: Catalogue) -> None:
    if body["type"] == "python":
        _python(body)
    elif "code" in body or "sandbox" in body:
        raise _fault(
            "code" if "code" in body else "sandbox", "only a python tool takes code and sandbox limits"
        )
    for block in ("http", "sql"):
        if block in body and body["type"] != block:
            raise _fault(block, f"only an {block} tool takes {block!r}")
    if body["type"] in ("http", "sql"):
        if "builtin" in body:
            raise _fault("builtin", f"an {body['type']} tool does not name a built-in")
        if body["type"] not in body:
            raise _fault(body["type"], f"an {body['type']} tool needs its `{body['type']}:` block")
        (_http if body["type"] == "http" else _sql)(body)
    if body["type"] == "builtin":
        impl = body.get("builtin")
        if impl is None:
            raise _fault("builtin", "a builtin tool names its implementation (e.g. builtin.echo)")
        if impl not in BUILTINS:
            raise _fault("builtin", f"unknown built-in {impl!r}; known: {', '.join(sorted(BUILTINS))}")
    fallback = body.get("fallback")
    if fallback is not None:
        if fallback == body["name"]:
            raise _fault("fallback", "a tool cannot be its own fallback")
        if cat.tool(fallback) is None:
            raise _fault("fallback", f"unknown tool {fallback!r}")


def _input_fields(body: dict, names: list[str], at: str, what: str) -> None:
    """Every field a tool's request or query takes from its input must be one its input schema names."""
    props = (body.get("input_schema") or {}).get("properties")
    for name in names:
        if props is None or name not in props:
            raise _fault(at, f"{what} {name!r} is not a property of input_schema")


def _http(body: dict) -> None:
    from appliance.workflows.http import RequestRefused, check_template, placeholders

    try:
        check_template(body["http"]["url"])
    except RequestRefused as exc:
        raise _fault("http.url", str(exc).removeprefix("url: ")) from None
    _input_fields(body, placeholders(body["http"]["url"]), "http.url", "url field")


def _sql(body: dict) -> None:
    """An sql tool's query must be one SELECT that reads no table function, names no schema and takes
    named parameters only; which views it reads is checked at each call, against the settings of then."""
    from appliance.workflows.sql import QueryRefused, parameters

    if body.get("side_effects", "none") != "none":
        raise _fault("side_effects", "an sql tool only reads: its side_effects are none")
    try:
        names = parameters(body["sql"]["query"])
    except QueryRefused as exc:
        raise _fault("sql.query", str(exc)) from None
    _input_fields(body, names, "sql.query", "parameter")


def _python(body: dict) -> None:
    """A python tool's code must compile and define `main(args)` at its top level."""
    import ast

    if "builtin" in body:
        raise _fault("builtin", "a python tool runs its own code, not a built-in")
    if "code" not in body:
        raise _fault("code", "a python tool needs code defining main(args)")
    try:
        tree = ast.parse(body["code"], "<tool>")
    except SyntaxError as exc:
        raise _fault("code", f"line {exc.lineno}: {exc.msg}") from None
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    if not mains:
        raise _fault("code", "defines no top-level function main(args)")
    if len(mains[0].args.args) != 1:
        raise _fault("code", "main takes one argument: the tool's input")


def _policy(body: dict, cat: Catalogue) -> None:
    for i, name in enumerate(body.get("tools", [])):
        if cat.tool(name) is None:
            raise _fault(f"tools[{i}]", f"unknown tool {name!r}")


# What `${memory}` holds in a workflow with memory: the recalled summaries, most relevant first.
MEMORY_ITEMS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "run_id": {"type": "string"},
            "score": {"type": "number"},
            "created_at": {"type": "string"},
        },
    },
}


class _Flow:
    """What the steps before a point produce: their ids and output schemas, and the loop variables."""

    def __init__(self, inputs: dict | None) -> None:
        self.inputs = inputs
        self.outputs: dict[str, dict | None] = {}
        self.later: set[str] = set()
        self.vars: dict[str, dict | None] = {}


def _workflow(body: dict, cat: Catalogue) -> None:
    steps = body["steps"]
    flow = _Flow(body.get("inputs"))
    if (body.get("memory") or {}).get("enabled"):
        flow.vars["memory"] = MEMORY_ITEMS
    ids: dict[str, str] = {}
    for i, step in enumerate(steps):
        for sid, where in [(step["id"], f"steps[{i}].id")] + [
            (b["id"], f"steps[{i}].parallel[{j}].id")
            for j, b in enumerate(step.get("parallel", []))
            if "id" in b
        ]:
            if sid in ids:
                raise _fault(where, f"duplicate step id {sid!r} (first at {ids[sid]})")
            ids[sid] = where
    flow.later = {s["id"] for s in steps}
    approved = False
    ended_by: str | None = None
    for i, step in enumerate(steps):
        at = f"steps[{i}]"
        if ended_by is not None:
            raise _fault(at, f"unreachable: step {ended_by!r} before it always ends the run")
        flow.later.discard(step["id"])
        if step.get("when") is False:
            raise _fault(f"{at}.when", "unreachable: the condition is always false")
        if "when" in step:
            _refs(step["when"], f"{at}.when", flow)
        _step(step, at, cat, flow, approved)
        approved = approved or "approval" in step
        if step.get("end") and "when" not in step:
            ended_by = step["id"]
    for where, expr in references(body.get("outputs") or {}):
        _ref(expr, f"outputs{where}", flow)


def _step(step: dict, at: str, cat: Catalogue, flow: _Flow, approved: bool) -> None:
    actions = [a for a in ACTIONS if a in step]
    if len(actions) != 1:
        what = "one of " + ", ".join(ACTIONS) if not actions else "only one of " + ", ".join(actions)
        raise _fault(at, f"a step needs {what}")
    action = actions[0]
    for extra, needs in (
        ("do", "foreach"),
        ("as", "foreach"),
        ("reduce", "foreach"),
        ("with", "tool/agent/dispatch"),
    ):
        if extra in step and action not in needs.split("/"):
            raise _fault(f"{at}.{extra}", f"only a {needs} step takes {extra!r}")
    if "max_concurrency" in step and action not in ("foreach", "parallel"):
        raise _fault(f"{at}.max_concurrency", "only foreach and parallel steps take max_concurrency")
    if "tools" in step and action not in ("agent", "dispatch"):
        raise _fault(f"{at}.tools", "only agent steps narrow their tools")
    sid = step["id"]
    if action in ("tool", "agent", "dispatch"):
        flow.outputs[sid] = _call(step, at, cat, flow, approved)
    elif action == "foreach":
        if "do" not in step:
            raise _fault(f"{at}.do", "a foreach step needs `do`: the call made for each item")
        over = step["foreach"]
        item_schema = None
        if isinstance(over, str):
            found = [expr for _, expr in references(over)]
            if not found:
                raise _fault(f"{at}.foreach", "foreach takes a list or a reference to one")
            source = _ref(found[0], f"{at}.foreach", flow)
            if source is not None and source.get("type") not in (None, "array"):
                raise _fault(f"{at}.foreach", f"${{{found[0]}}} is a {source.get('type')}, not a list")
            item_schema = (source or {}).get("items")
        name = step.get("as", "item")
        flow.vars[name] = item_schema
        out = _call(step["do"], f"{at}.do", cat, flow, approved)
        del flow.vars[name]
        reduce = step.get("reduce", "list")
        flow.outputs[sid] = {"type": "array", "items": out or {}} if reduce == "list" else None
    elif action == "parallel":
        props = {}
        for j, branch in enumerate(step["parallel"]):
            if "id" not in branch:
                raise _fault(f"{at}.parallel[{j}].id", "each parallel branch needs an id")
            props[branch["id"]] = _call(branch, f"{at}.parallel[{j}]", cat, flow, approved) or {}
        flow.outputs[sid] = {"type": "object", "properties": props}
    elif action == "loop":
        loop = step["loop"]
        if "max_loops" not in loop:
            raise _fault(f"{at}.loop.max_loops", "a loop needs max_loops (its bound)")
        # Inside a loop: ${loop.index}, ${loop.previous} (the last iteration's output, null at first)
        # and, in `until`, ${loop.output} (this iteration's).
        flow.vars["loop"] = {"type": "object", "properties": {"index": {"type": "integer"}, "previous": {}}}
        out = _call(loop["do"], f"{at}.loop.do", cat, flow, approved)
        flow.vars["loop"]["properties"]["output"] = out or {}
        if "until" in loop:
            _refs(loop["until"], f"{at}.loop.until", flow)
        del flow.vars["loop"]
        flow.outputs[sid] = out
    else:
        approval = step["approval"]
        for j, who in enumerate(approval.get("approvers", [])):
            if who not in APPROVERS_SPECIAL and not who.startswith("key_"):
                raise _fault(f"{at}.approval.approvers[{j}]", f"{who!r}: expected owner, admin or a key id")
        if approval.get("on_expiry") == "continue" and "default" not in approval:
            raise _fault(f"{at}.approval.default", "on_expiry: continue needs the default answer")
        flow.outputs[sid] = approval.get("schema")


def _call(call: dict, at: str, cat: Catalogue, flow: _Flow, approved: bool) -> dict | None:
    args = call.get("with") or {}
    _refs(args, f"{at}.with", flow)
    if "tool" in call:
        tool = cat.tool(call["tool"])
        if tool is None:
            raise _fault(f"{at}.tool", f"unknown tool {call['tool']!r}")
        schema = tool.get("input_schema") or {}
        for field in schema.get("required", []):
            if field not in args:
                raise _fault(f"{at}.with", f"missing {field!r}, which {call['tool']} requires")
        if schema.get("additionalProperties") is False:
            for field in args:
                if field not in schema.get("properties", {}):
                    raise _fault(f"{at}.with.{field}", f"{call['tool']} takes no {field!r}")
        retried = max(
            (call.get("retry") or {}).get("attempts", 1), (tool.get("retry") or {}).get("attempts", 1)
        )
        if tool.get("side_effects") == "non_idempotent" and retried > 1 and not approved:
            raise _fault(
                f"{at}.tool",
                f"non-idempotent tool {call['tool']!r} is retried ({retried} attempts) without an approval before it",
            )
        return tool.get("output_schema")
    if "dispatch" in call:
        return _dispatch(call, at, cat, flow)
    agent = cat.agent(call["agent"])
    if agent is None:
        raise _fault(f"{at}.agent", f"unknown agent {call['agent']!r}")
    _narrowed(call, at, agent, call["agent"])
    return agent.get("output_schema") or TEXT_OUTPUT


def _narrowed(call: dict, at: str, agent: dict, name: str) -> None:
    allowed = set(agent.get("tools", []))
    for j, tool in enumerate(call.get("tools", [])):
        if tool not in allowed:
            raise _fault(f"{at}.tools[{j}]", f"tool {tool!r} is outside agent {name!r}'s allowed tools")


def _dispatch(call: dict, at: str, cat: Catalogue, flow: _Flow) -> dict | None:
    """An agent chosen at run time: every candidate must exist, and a plan whose schema enumerates
    the agents may name only candidates."""
    spec = call["dispatch"]
    among = spec["among"]
    outputs = []
    for j, name in enumerate(among):
        agent = cat.agent(name)
        if agent is None:
            raise _fault(f"{at}.dispatch.among[{j}]", f"unknown agent {name!r}")
        _narrowed(call, at, agent, name)
        outputs.append(agent.get("output_schema") or TEXT_OUTPUT)
    found = [expr for _, expr in references(spec["agent"])]
    if not found:
        raise _fault(f"{at}.dispatch.agent", "dispatch takes a reference to the chosen agent's name")
    chosen = _ref(found[0], f"{at}.dispatch.agent", flow)
    for value in (chosen or {}).get("enum", []):
        if value not in among:
            raise _fault(f"{at}.dispatch.agent", f"the plan may choose {value!r}, which is not among {among}")
    return outputs[0] if all(o == outputs[0] for o in outputs) else None


def _refs(value: Any, at: str, flow: _Flow) -> None:
    for where, expr in references(value):
        _ref(expr, f"{at}{where}", flow)


def _ref(expr: str, at: str, flow: _Flow) -> dict | None:
    """Check one reference; return the schema of what it points to, when known."""
    try:
        path = parts(expr)
    except ValueError as exc:
        raise _fault(at, str(exc)) from None
    root = path[0]
    if root == "inputs":
        schema = flow.inputs or {}
        return _walk(schema, path[1:], at, "the workflow's inputs", strict=bool(flow.inputs))
    if root == "steps":
        if len(path) < 2 or not isinstance(path[1], str):
            raise _fault(at, f"${{{expr}}}: name a step (steps.<id>.output)")
        sid = path[1]
        if sid not in flow.outputs:
            if sid in flow.later:
                raise _fault(at, f"step {sid!r} runs later; a step can only use earlier outputs")
            raise _fault(at, f"unknown step {sid!r}")
        if len(path) > 2 and path[2] != "output":
            raise _fault(at, f"${{{expr}}}: a step offers only its `output`")
        return _walk(flow.outputs[sid], path[3:], at, f"step {sid!r}'s output", strict=True)
    if root in flow.vars:
        return _walk(flow.vars[root], path[1:], at, f"${{{root}}}", strict=root == "loop")
    if root == "memory":
        raise _fault(at, f"${{{expr}}}: the workflow keeps no memory (declare `memory: {{enabled: true}}`)")
    raise _fault(
        at, f"${{{expr}}}: unknown name {root!r} (expected inputs, steps, or a foreach/loop variable)"
    )


def _walk(schema: dict | None, rest: list, at: str, what: str, strict: bool) -> dict | None:
    for part in rest:
        if schema is None:
            return None
        if isinstance(part, int):
            if schema.get("type") not in (None, "array"):
                raise _fault(at, f"{what}: item [{part}] of a {schema.get('type')}")
            schema = schema.get("items")
            continue
        props = schema.get("properties")
        if schema.get("type") not in (None, "object"):
            raise _fault(at, f"{what}: field {part!r} of a {schema.get('type')}")
        if props is None:
            return None
        if part not in props:
            if strict:
                raise _fault(at, f"{what} has no field {part!r}")
            return None
        schema = props[part]
        what = f"{what}.{part}"
    return schema
