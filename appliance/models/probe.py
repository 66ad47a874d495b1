"""A model's probe, run in a child process so a bad file cannot take the server down: it loads within a
memory budget, generates a few tokens, renders the chat template through the sandbox, tries JSON output,
and reports tokens/s and resident memory. `python -m appliance.models.probe PATH` is the child. A remote
model's probe (`probe_remote`) runs the same checks over the wire, in this process: nothing loads here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.models.remote import RemoteRuntime

# The child prints one line starting with this, then the JSON result: llama.cpp may print too.
_MARK = "PROBE-RESULT "
_JSON_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    memory_bytes: int  # resident memory the loaded model may use
    timeout_s: float
    context_length: int = 512
    max_tokens: int = 8


def _resident_bytes() -> tuple[int, int]:
    """(current, peak) resident set of this process, from /proc (Linux)."""
    now = peak = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return now, peak


def _timed(runtime: Any, prompt: str, params: Any) -> tuple[str, int, float]:
    start = time.monotonic()
    completion = runtime.generate(prompt, params)
    return completion.text, completion.completion_tokens, time.monotonic() - start


def probe_in_process(path: Path, limits: ProbeLimits) -> dict[str, Any]:
    """The probe itself (the child runs this): every check's outcome, never raising for a check that fails."""
    from appliance.errors import ApplianceError
    from appliance.models.grammar import json_grammar
    from appliance.models.llamacpp import LlamaCppRuntime
    from appliance.models.runtime import ChatMessage, GenerationParams

    result: dict[str, Any] = {"loaded": False}
    base_rss, _ = _resident_bytes()
    start = time.monotonic()
    try:
        runtime = LlamaCppRuntime(path, path.stem, context_length=limits.context_length, threads=1, slots=1)
    except (ApplianceError, OSError, ValueError) as exc:
        result["error"] = f"does not load: {getattr(exc, 'detail', None) or exc}"
        return result
    result.update(loaded=True, load_s=round(time.monotonic() - start, 3))
    rss, _ = _resident_bytes()
    result["resident_bytes"] = rss - base_rss
    if rss - base_rss > limits.memory_bytes:
        result["error"] = f"uses {rss - base_rss} bytes resident, over the budget of {limits.memory_bytes}"
        return result
    params = GenerationParams(max_tokens=limits.max_tokens, temperature=0.0, seed=1)
    try:
        text, tokens, seconds = _timed(runtime, "The capital of France is", params)
        result["completion"] = {"ok": tokens > 0, "tokens": tokens, "text": text[:200]}
        result["tokens_per_s"] = round(tokens / seconds, 2) if seconds > 0 else None
    except ApplianceError as exc:
        result["completion"] = {"ok": False, "error": exc.detail}
    messages = [ChatMessage("user", "Say hello.")]
    try:
        prompt = runtime.render_chat(messages)  # the sandboxed template: refuses unsafe templates
        text, tokens, _ = _timed(runtime, prompt, params)
        result["chat_template"] = {"renders": True}
        result["chat"] = {"ok": tokens > 0, "tokens": tokens, "text": text[:200]}
    except ApplianceError as exc:
        result["chat_template"] = {"renders": False, "error": exc.detail}
    result["native_tools"] = bool(getattr(runtime, "native_tools", False))
    if getattr(runtime, "constrained_decoding", False):
        grammar = json_grammar(_JSON_SCHEMA)
        json_params = GenerationParams(max_tokens=16, temperature=0.0, seed=1, grammar=grammar)
        source = prompt if result["chat_template"]["renders"] else 'Answer in JSON: {"ok": '
        try:
            text, _, _ = _timed(runtime, source, json_params)
            json.loads(text)
            result["json_output"] = {"ok": True}
        except (ApplianceError, ValueError) as exc:
            result["json_output"] = {"ok": False, "error": str(getattr(exc, "detail", exc))[:200]}
    _, peak = _resident_bytes()
    result["peak_resident_bytes"] = peak - base_rss
    result["context_length_probed"] = runtime.context_length
    runtime.close()
    return result


_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def probe_remote(runtime: RemoteRuntime, max_tokens: int = 8) -> dict[str, Any]:
    """The probe of a remote version, the same checks as a local file's where they apply: the
    server lists the model (and its context), a short completion and chat, JSON output, a tool
    call, tokens/s. Every check's outcome is recorded; nothing here raises for a check that fails."""
    from appliance.errors import ApplianceError
    from appliance.models.grammar import json_grammar
    from appliance.models.remote import where
    from appliance.models.runtime import ChatMessage, GenerationParams

    result: dict[str, Any] = {
        "loaded": False,
        "remote": where(runtime.endpoint),
        "remote_model": runtime.endpoint.model,
    }
    start = time.monotonic()
    try:
        listed = runtime.remote_models()
    except ApplianceError as exc:
        result["error"] = f"the remote cannot be reached: {exc.detail}"
        return result
    entry = next((m for m in listed if m.get("id") == runtime.endpoint.model), None)
    # A server may list only what it has loaded (an appliance, Ollama) and load the rest on demand:
    # an unlisted model is tried all the same, and the generations decide.
    result["listed"] = entry is not None
    result["list_s"] = round(time.monotonic() - start, 3)
    for key in ("context_length", "max_model_len"):  # an appliance's; vLLM's
        if entry is not None and isinstance(entry.get(key), int) and entry[key] > 0:
            result["context_length_reported"] = entry[key]
            break
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, seed=1)
    try:
        t0 = time.monotonic()
        done = runtime.generate("The capital of France is", params)
        seconds = time.monotonic() - t0
        result["completion"] = {
            "ok": done.completion_tokens > 0,
            "tokens": done.completion_tokens,
            "text": done.text[:200],
        }
        result["tokens_per_s"] = round(done.completion_tokens / seconds, 2) if seconds > 0 else None
    except ApplianceError as exc:
        result["completion"] = {"ok": False, "error": exc.detail}
    prompt = runtime.render_chat([ChatMessage("user", "Say hello.")])
    try:
        t0 = time.monotonic()
        done = runtime.generate(prompt, params)
        seconds = time.monotonic() - t0
        result["chat_template"] = {"renders": True, "where": "remote"}
        result["chat"] = {
            "ok": done.completion_tokens > 0,
            "tokens": done.completion_tokens,
            "text": done.text[:200],
        }
        if result.get("tokens_per_s") is None and seconds > 0:
            result["tokens_per_s"] = round(done.completion_tokens / seconds, 2)
    except ApplianceError as exc:
        result["chat_template"] = {"renders": False, "error": exc.detail}
        result["chat"] = {"ok": False, "error": exc.detail}
    try:
        json_params = GenerationParams(
            max_tokens=16, temperature=0.0, seed=1, grammar=json_grammar(_JSON_SCHEMA)
        )
        json.loads(runtime.generate(prompt, json_params).text)
        result["json_output"] = {"ok": True}
    except (ApplianceError, ValueError) as exc:
        result["json_output"] = {"ok": False, "error": str(getattr(exc, "detail", exc))[:200]}
    try:
        answer = runtime.chat_once(
            {
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "tools": [_PROBE_TOOL],
                "tool_choice": "required",
                "parallel_tool_calls": False,  # one call, then the turn ends: a short probe
                "max_tokens": 64,
                "temperature": 0.0,
            }
        )
        calls = ((answer.get("choices") or [{}])[0].get("message") or {}).get("tool_calls") or []
        named = [c for c in calls if (c.get("function") or {}).get("name") == "get_weather"]
        result["tool_call"] = (
            {"ok": bool(named)} if named else {"ok": False, "error": "no call of the offered tool"}
        )
    except (ApplianceError, AttributeError, IndexError, TypeError) as exc:
        result["tool_call"] = {"ok": False, "error": str(getattr(exc, "detail", exc))[:200]}
    # What the tags read: tools are rendered by the remote's own template.
    result["native_tools"] = bool(result["tool_call"].get("ok"))
    result["loaded"] = bool(result["completion"].get("ok") or result["chat"].get("ok"))
    if not result["loaded"]:
        ids = ", ".join(str(m.get("id")) for m in listed[:20]) or "none"
        served = (
            "" if entry is not None else f"; it lists no model {runtime.endpoint.model!r} (it lists: {ids})"
        )
        result["error"] = f"the remote generated nothing: {result['chat'].get('error', 'no tokens')}{served}"
    result["context_length_probed"] = result.get("context_length_reported") or runtime.context_length
    return result


def run_probe(path: Path, limits: ProbeLimits) -> dict[str, Any]:
    """Run the probe in a child process; a crash, a hang past the timeout or garbage output is a
    failed probe with its reason (`error`), never an exception here."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parents[2]), env.get("PYTHONPATH")) if p
    )
    command = [
        sys.executable,
        "-m",
        "appliance.models.probe",
        str(path),
        "--memory-bytes",
        str(limits.memory_bytes),
        "--context-length",
        str(limits.context_length),
        "--max-tokens",
        str(limits.max_tokens),
    ]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=limits.timeout_s, env=env, errors="replace"
        )
    except subprocess.TimeoutExpired:
        return {"loaded": False, "error": f"the probe ran past its {limits.timeout_s:g} s limit"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARK):
            try:
                result = json.loads(line[len(_MARK) :])
            except ValueError:
                break
            result["probe_s"] = round(time.monotonic() - start, 3)
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {
        "loaded": False,
        "error": f"the probe process exited with status {done.returncode}: " + " | ".join(tail)[:500],
    }


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m appliance.models.probe")
    parser.add_argument("path", type=Path)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    limits = ProbeLimits(args.memory_bytes, 0.0, args.context_length, args.max_tokens)
    result = probe_in_process(args.path, limits)
    print(_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
