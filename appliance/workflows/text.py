"""Workflows as text for people: a workflow's graph (steps, what each calls, what it reads) and a run's
step tree (outcome, attempts, time, tokens), shared by `appliance wf show` and the console."""

from __future__ import annotations

from typing import Any

from appliance.workflows.refs import parts, references


def _call(call: dict) -> str:
    if "tool" in call:
        return f"tool {call['tool']}"
    if "agent" in call:
        narrowed = f" [{', '.join(call['tools'])}]" if call.get("tools") else ""
        return f"agent {call['agent']}{narrowed}"
    if "dispatch" in call:
        return f"dispatch {call['dispatch']['agent']} among {', '.join(call['dispatch']['among'])}"
    return "?"


def _reads(value: Any, ids: set[str]) -> list[str]:
    """The earlier steps (and `inputs`) a value refers to, in order of first use."""
    out: list[str] = []
    for _, expr in references(value):
        try:
            path = parts(expr)
        except ValueError:
            continue
        name = str(path[1]) if path[0] == "steps" and len(path) > 1 else str(path[0])
        if (name in ids or name == "inputs") and name not in out:
            out.append(name)
    return out


def _condition(cond: Any) -> str:
    if isinstance(cond, str | bool):
        return str(cond)
    op, args = next(iter(cond.items()))
    if op == "not":
        return f"not ({_condition(args)})"
    return f"{op} {' '.join(str(a) for a in args)}"


def graph_lines(body: dict) -> list[str]:
    """The workflow's steps top to bottom, each with what it does and the steps it reads from;
    fan-out, parallel branches and loops drawn as their inner calls, indented below."""
    steps = body.get("steps") or []
    ids = {s.get("id", "") for s in steps}
    schema = body.get("inputs") or {}
    required = set(schema.get("required") or [])
    fields = [f"{n}{'*' if n in required else ''}" for n in (schema.get("properties") or {})]
    lines = [f"inputs: {', '.join(fields) if fields else '-'}"]
    budget = body.get("budget")
    if budget:
        spent = ", ".join(f"{k} {v}" for k, v in budget.items())
        lines.append(f"budget: {spent} (on limit: {body.get('on_limit', 'fail')})")
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        branch, pad = ("└─", "   ") if last else ("├─", "│  ")
        sid = step.get("id", "?")
        inner: list[str] = []
        if "foreach" in step:
            width = step.get("max_concurrency", 1)
            what = f"foreach {step['foreach'] if isinstance(step['foreach'], str) else len(step['foreach'])}"
            what += f" as {step.get('as', 'item')} ×{width} → {step.get('reduce', 'list')}"
            inner = [_call(step.get("do") or {})]
        elif "parallel" in step:
            what = f"parallel ×{step.get('max_concurrency', len(step['parallel']))}"
            inner = [f"{b.get('id', '?')}: {_call(b)}" for b in step["parallel"]]
        elif "loop" in step:
            loop = step["loop"]
            what = f"loop ≤{loop.get('max_loops', '?')}"
            if "until" in loop:
                what += f" until {_condition(loop['until'])}"
            inner = [_call(loop.get("do") or {})]
        elif "approval" in step:
            spec = step["approval"]
            what = f"approval by {', '.join(spec.get('approvers', ['owner']))}"
            if spec.get("expires_in_s"):
                what += f", expires {spec['expires_in_s']:g} s → {spec.get('on_expiry', 'fail')}"
        else:
            what = _call(step)
        reads = _reads({k: v for k, v in step.items() if k != "id"}, ids - {sid})
        extra = f"  ← {', '.join(reads)}" if reads else ""
        if "when" in step:
            extra += f"  when {_condition(step['when'])}"
        if step.get("end"):
            extra += "  (ends the run)"
        lines.append(f"{branch} {sid}: {what}{extra}")
        for j, text in enumerate(inner):
            lines.append(f"{pad}{'└─' if j == len(inner) - 1 else '├─'} {text}")
    outputs = body.get("outputs") or {}
    if outputs:
        lines.append(f"outputs: {', '.join(outputs)}")
    return lines


def step_tree(steps: list[dict], indent: str = "  ") -> list[str]:
    """Each step under its parent, with outcome, attempts, duration and tokens."""
    children: dict[str | None, list[dict]] = {}
    for s in steps:
        children.setdefault(s["parent"], []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            took = f"{s['duration_ms']:.1f} ms" if s.get("duration_ms") is not None else "-"
            extra = f"  {s['tokens']} tokens" if s.get("tokens") else ""
            tries = f"  x{s['attempts']}" if s["attempts"] > 1 else ""
            err = f"  {s['error']}" if s.get("error") else ""
            lines.append(
                f"{indent}{'  ' * depth}{s['key']:<24} {s['kind']:<9} {s['state']:<9} {took:>10}{tries}{extra}{err}"
            )
            walk(s["key"], depth + 1)

    walk(None, 0)
    return lines
