"""Function-calling benchmark on BFCL v4's live categories: AST accuracy, irrelevance, unparseable calls, time.

Reads the Berkeley Function Calling Leaderboard's own data (the `bfcl-eval` package's
`bfcl_eval/data/`, unzipped from its wheel: nothing is installed) and runs each item in-process
through the same path as /v1/chat/completions with tools (appliance.generate.tools + the parser),
with tool_choice auto, constrained by the grammar or not, in the model's native template format
or the generic one.

    python scripts/bench/tools.py --data /tmp/bfcl/unpacked/bfcl_eval/data --model SmolLM2-135M-Instruct \
        --limit 20 --mode constrained --mode unconstrained [--format generic]

AST accuracy follows BFCL's checker, simplified: the right functions (as many calls as expected,
in any order for parallel items), no unknown arguments, the required ones present, each value
among the possible answers (strings compared lowercased without spaces and ,./-_*^ as BFCL's
do; an int accepted for a float). Irrelevance: no call made. BFCL's schema dialect ("dict",
"float", "tuple", "any") is mapped to JSON Schema, and keywords outside the enforced subset are
dropped (counted as `schemas_stripped`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from appliance.generate.toolcalls import parse_output
from appliance.generate.tools import Tool, ToolChoice, ToolRequest, plan_chat
from appliance.models.grammar import SUPPORTED
from appliance.models.runtime import ChatMessage, GenerationParams

CATEGORIES = ("live_simple", "live_multiple", "live_parallel", "live_irrelevance")
_TYPES = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "list": "array",
    "int": "integer",
    "bool": "boolean",
}
_KEEP = SUPPORTED - {"$ref", "$defs", "definitions", "pattern", "format", "minLength", "maxLength"}


def to_json_schema(node, stripped: list[int]):
    """BFCL's parameter dialect as a schema inside the enforced subset (bench-only conversion)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "type":
            kind = _TYPES.get(value, value)
            if kind == "any":
                continue
            out["type"] = kind
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: to_json_schema(v, stripped) for k, v in value.items()}
        elif key == "items":
            out["items"] = to_json_schema(value, stripped)
        elif key in ("description", "title", "default"):
            continue
        elif key in _KEEP:
            out[key] = value
        else:
            stripped[0] += 1
    if "required" in out and "properties" in out:
        out["required"] = [r for r in out["required"] if r in out["properties"]]
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {}
    if "enum" in out and isinstance(out["enum"], list):
        out.pop("type", None)  # BFCL's enums sometimes disagree with their type ("integer" enums of strings)
    return out


def load(data: Path, category: str, limit: int) -> list[tuple[dict, list | None]]:
    items = [
        json.loads(line) for line in (data / f"BFCL_v4_{category}.json").read_text().splitlines() if line
    ]
    answers_file = data / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {}
    if answers_file.exists():
        for line in answers_file.read_text().splitlines():
            if line:
                entry = json.loads(line)
                answers[entry["id"]] = entry["ground_truth"]
    return [(item, answers.get(item["id"])) for item in items[:limit]]


def _norm(value):
    if isinstance(value, str):
        return re.sub(r"[ ,./\-_*^]", "", value).lower()
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _call_matches(name: str, args: dict, expected: dict, functions: dict) -> bool:
    if name not in expected:
        return False
    possible = expected[name]
    params = functions.get(name, {}).get("parameters", {})
    required = set(params.get("required", []))
    if set(args) - set(possible) or required - set(args):
        return False
    for key, values in possible.items():
        if key not in args:
            if "" not in values:
                return False
            continue
        if _norm(args[key]) not in [_norm(v) for v in values]:
            return False
    return True


def ast_correct(calls: list[tuple[str, dict]], truth: list[dict], functions: dict) -> bool:
    if len(calls) != len(truth):
        return False
    left = list(truth)
    for name, args in calls:
        match = next((t for t in left if _call_matches(name, args, t, functions)), None)
        if match is None:
            return False
        left.remove(match)
    return True


def run(
    runtime, data: Path, category: str, limit: int, constrained: bool, native: bool, max_tokens: int
) -> dict:
    stats = {"items": 0, "correct": 0, "unparseable": 0, "calls": 0, "seconds": 0.0, "schemas_stripped": 0}
    for item, truth in load(data, category, limit):
        stripped = [0]
        functions = {f["name"]: f for f in item["function"]}
        tools = tuple(
            Tool(f["name"], f.get("description", ""), to_json_schema(f.get("parameters", {}), stripped))
            for f in item["function"]
        )
        stats["schemas_stripped"] += stripped[0]
        messages = [ChatMessage(m["role"], m["content"]) for m in item["question"][0]]
        plan = plan_chat(
            messages, ToolRequest(tools, ToolChoice("auto")), None, native=native, constrained=constrained
        )
        prompt = runtime.render_chat(plan.messages, plan.tools)
        start = time.monotonic()
        done = runtime.generate(
            prompt, GenerationParams(max_tokens=max_tokens, temperature=0.0, grammar=plan.grammar)
        )
        stats["seconds"] += time.monotonic() - start
        _, calls, bad = parse_output(done.text, plan.tool_names)
        parsed = [(c.name, json.loads(c.arguments)) for c in calls]
        stats["items"] += 1
        stats["unparseable"] += bad
        stats["calls"] += len(calls) + bad
        if category == "live_irrelevance":
            stats["correct"] += not calls
        elif truth is not None:
            stats["correct"] += ast_correct(parsed, truth, functions)
    n = max(1, stats["items"])
    return {
        "category": category,
        "items": stats["items"],
        "accuracy": round(stats["correct"] / n, 3),
        "unparseable_rate": round(stats["unparseable"] / max(1, stats["calls"]), 3),
        "s_per_item": round(stats["seconds"] / n, 2),
        "schemas_stripped": stats["schemas_stripped"],
    }


def main() -> None:
    from appliance.models.llamacpp import LlamaCppRuntime
    from appliance.models.manifest import resolve_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="bfcl_eval/data of the unzipped bfcl-eval wheel")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=20, help="items per category")
    ap.add_argument("--category", action="append", choices=CATEGORIES)
    ap.add_argument("--mode", action="append", choices=("constrained", "unconstrained"))
    ap.add_argument("--format", choices=("native", "generic"), default=None, help="default: the model's")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    spec, path = resolve_model(args.model, args.models_dir)
    runtime = LlamaCppRuntime(path, spec.name, context_length=4096, threads=args.threads)
    native = runtime.native_tools if args.format is None else args.format == "native"
    if native and not runtime.native_tools:
        raise SystemExit(f"{spec.name}'s template does not render tools: use --format generic")
    for mode in args.mode or ["constrained"]:
        for category in args.category or CATEGORIES:
            result = run(
                runtime, args.data, category, args.limit, mode == "constrained", native, args.max_tokens
            )
            print(
                json.dumps(
                    {"model": spec.name, "mode": mode, "format": "native" if native else "generic", **result}
                )
            )
    runtime.close()


if __name__ == "__main__":
    main()
