"""A model's probe, run in a child process so a bad file cannot take the server down: it loads within a
memory budget, generates a few tokens, renders the chat template through the sandbox, tries JSON output,
and reports tokens/s and resident memory. `python -m appliance.models.probe PATH` is the child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
