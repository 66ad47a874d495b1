"""Safe rollout's costs: production latency with a shadow mirroring every request vs none, and the
time from importing Gemma 3 270M to its first served tokens.

1. Shadow. An appliance in this process (real DuckDB, registry, pool, gateway) serves a family whose
   production is SmolLM2-135M (the packaged GGUF) and whose shadow is a second version of the same
   weights (a copy with one byte of its `general.name` changed: a distinct, valid file). Production
   requests are sent one after another through the gateway (routing, admission, generation,
   accounting: what /v1/chat/completions does, without HTTP), in alternating blocks with the shadow
   off and at 100%, so drift on a shared machine hits both alike. Prints p50/p95 of production's
   total latency each way, their ratio (target: p95 < 1.05x), and the mirror's counters (mirrored,
   dropped because the queue was full).
2. Import to serving. Gemma 3 270M (assembled from its packages) is imported (header, sha256, the
   probe in a child process), then asked for a completion by its registry name: the pool loads it
   and generates. Prints each part and the total.

    python scripts/bench/rollout.py [--requests 60] [--blocks 6] [--max-tokens 24] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.config import load_settings  # noqa: E402
from appliance.core import Appliance  # noqa: E402
from appliance.files import sha256_file  # noqa: E402
from appliance.models.builtin_models import assemble_gemma3_270m  # noqa: E402
from appliance.models.manifest import SMOLLM2, smollm2_path  # noqa: E402
from appliance.models.runtime import ChatMessage, GenerationParams  # noqa: E402

QUESTIONS = [
    "What is a good name for a cat?",
    "Explain what a database index is in one sentence.",
    "Give me two tips for writing clear emails.",
    "Why is the sky blue?",
    "What does an operating system do?",
    "Name three fruits that are red.",
]


def _variant(dest: Path) -> Path:
    """SmolLM2's GGUF with one character of its general.name changed (same length: still valid)."""
    data = bytearray(smollm2_path().read_bytes())
    at = data.find(b"Mix1 Ep2", 0, 4096)
    if at < 0:
        raise SystemExit("SmolLM2's header is not what this benchmark expects (general.name)")
    data[at + 7] = ord("3")
    dest.write_bytes(bytes(data))
    return dest


def _timed_chat(app, scope, text: str, params: GenerationParams) -> float:
    messages = [ChatMessage("user", text)]
    start = time.perf_counter()
    decision = app.gateway.route("bench", messages, None, scope)
    app.gateway.chat(scope, decision, messages, None, None, params)
    return time.perf_counter() - start


def shadow_cost(root: Path, requests: int, blocks: int, max_tokens: int) -> dict:
    settings = load_settings(
        overrides={
            "data_dir": str(root / "shadow"),
            "llm": {"load_at_start": False},
            "registry": {"watch_inbox": False, "shadow_queue": 16},
        },
        environ={},
    )
    app = Appliance(settings)
    app.start()
    try:
        admin = app.access.system_scope()
        reg = app.registry.registry
        reg.register_pinned(
            "bench", "chat", "llama.cpp", smollm2_path(), SMOLLM2.sha256, None, "bench", ["chat"]
        )
        variant = _variant(root / "smollm2-variant.gguf")
        reg.register_pinned(
            "bench", "chat", "llama.cpp", variant, sha256_file(variant), None, "bench", ["chat"]
        )
        app.registry.promote(admin, "bench", 1, "production", reason="benchmark")
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        # Both versions resident before anything is timed (the first request of each loads it).
        _timed_chat(app, admin, QUESTIONS[0], params)
        app.gateway.runtime_for("bench@2")
        for q in QUESTIONS:
            _timed_chat(app, admin, q, params)
        per_block = max(1, requests // blocks)
        off: list[float] = []
        on: list[float] = []
        for block in range(blocks * 2):
            shadow = block % 2 == 1
            if shadow:
                app.rollouts.shadows.set_shadow(admin, "bench", 2, 1.0)
            for i in range(per_block):
                (on if shadow else off).append(_timed_chat(app, admin, QUESTIONS[i % len(QUESTIONS)], params))
            if shadow:
                app.rollouts.shadows.mirror.drain(300)  # the next block without a shadow starts quiet
                app.rollouts.shadows.set_shadow(admin, "bench", None)
        mirror = app.rollouts.shadows.mirror.snapshot()
        report = app.rollouts.shadows.report(admin, "bench")
    finally:
        app.close()

    def p(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)) * 1000, 1)

    return {
        "requests_per_condition": len(off),
        "max_tokens": max_tokens,
        "off_p50_ms": p(off, 50),
        "off_p95_ms": p(off, 95),
        "shadow_p50_ms": p(on, 50),
        "shadow_p95_ms": p(on, 95),
        "p95_ratio": round(p(on, 95) / p(off, 95), 3),
        "p50_ratio": round(p(on, 50) / p(off, 50), 3),
        "mirrored": mirror["done"],
        "dropped_queue_full": mirror["dropped"],
        "pairs": report.pairs,
        "mean_similarity": report.mean_similarity,
    }


def import_to_serving(root: Path) -> dict:
    t0 = time.perf_counter()
    gemma = assemble_gemma3_270m(root / "gemma")
    assembled_s = time.perf_counter() - t0
    settings = load_settings(
        overrides={
            "data_dir": str(root / "import"),
            "llm": {"load_at_start": False},
            "registry": {"watch_inbox": False},
        },
        environ={},
    )
    app = Appliance(settings)
    app.start()
    try:
        admin = app.access.system_scope()
        start = time.perf_counter()
        version = app.registry.import_model(admin, str(gemma), "gemma-bench")
        imported_s = time.perf_counter() - start
        if version.state != "ready":
            raise SystemExit(f"Gemma 3 270M was not registered ready: {version.state} ({version.reason})")
        served = app.gateway.runtime_for("gemma-bench")
        loaded_s = time.perf_counter() - start - imported_s
        done = app.gateway.generate(
            admin,
            served,
            "The capital of France is",
            GenerationParams(max_tokens=8, temperature=0.0),
            "completions",
        )
        total_s = time.perf_counter() - start
    finally:
        app.close()
    return {
        "assemble_s": round(assembled_s, 2),
        "import_s (header, sha256, probe)": round(imported_s, 2),
        "load_s": round(loaded_s, 2),
        "first_completion_s": round(total_s - imported_s - loaded_s, 2),
        "import_to_serving_s": round(total_s, 2),
        "completion_tokens": done.completion_tokens,
        "probe_tokens_per_s": (version.probe or {}).get("tokens_per_s"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="production requests per condition")
    parser.add_argument("--blocks", type=int, default=6, help="alternating blocks per condition")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    try:
        results = {"shadow": shadow_cost(tmp, args.requests, args.blocks, args.max_tokens)}
        if not args.skip_import:
            results["import_to_serving"] = import_to_serving(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    s = results["shadow"]
    print(f"production latency, {s['requests_per_condition']} requests each, max_tokens {s['max_tokens']}:")
    print(f"  shadow off      p50 {s['off_p50_ms']:8.1f} ms   p95 {s['off_p95_ms']:8.1f} ms")
    print(f"  shadow at 100%  p50 {s['shadow_p50_ms']:8.1f} ms   p95 {s['shadow_p95_ms']:8.1f} ms")
    print(
        f"  ratio           p50 {s['p50_ratio']:8.3f}x     p95 {s['p95_ratio']:8.3f}x   (target p95 < 1.05x)"
    )
    print(
        f"  mirrored {s['mirrored']}, dropped (queue full) {s['dropped_queue_full']}, pairs {s['pairs']}, "
        f"mean similarity {s['mean_similarity']}"
    )
    if "import_to_serving" in results:
        i = results["import_to_serving"]
        print("Gemma 3 270M, import to serving:")
        for k, v in i.items():
            print(f"  {k:<34} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
