"""LLM speed: llama-cpp-python called directly vs through LlamaCppRuntime vs through our HTTP API.

Same model, prompt and threads on every path. Prints prompt-processing and generation tokens/s
and time to first token for each, and the ratios to the direct call: what our in-process layer
(slot queue, sandboxed template, own decode loop, stop handling) and the whole server (auth,
rate limits, SSE, the official `openai` SDK as client) cost. Each run puts a fresh nonce at the
start of the prompt so no path gets llama.cpp's prefix cache; runs alternate between the paths
so background load hits all of them alike. The server runs in its own process; it is started
after the in-process models are loaded and only generates while the others are idle.

    python scripts/bench/llm.py [--model NAME_OR_GGUF] [--models-dir DIR] [--runs 3] [--max-tokens 64] [--no-api]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import bench_server  # noqa: E402

from appliance.models.llamacpp import LlamaCppRuntime, _import_llama  # noqa: E402
from appliance.models.manifest import SMOLLM2, resolve_model  # noqa: E402
from appliance.models.runtime import ChatMessage, GenerationParams  # noqa: E402

CONTEXT = """[1] Travel policy, section 4: Employees travelling within Europe receive a per diem of 45 EUR
for meals; hotel costs are reimbursed up to 140 EUR a night in capitals and 110 EUR elsewhere.
[2] Travel policy, section 5: Trips outside Europe follow the government rate table; the per diem
covers meals and local transport. Receipts are required for every expense above 25 EUR.
[3] Expense tool guide: submit claims within 30 days of returning; the approver is your line manager.
"""


def messages(nonce: int) -> list[ChatMessage]:
    return [
        ChatMessage("system", f"Run {nonce}. Answer only from the numbered context and cite it like [1]."),
        ChatMessage(
            "user",
            f"Context:\n{CONTEXT * 2}\nQuestion: what per diem applies in Europe, and what are "
            "the hotel limits? Explain in detail.",
        ),
    ]


def bench_direct(llm, prompts: list[str], max_tokens: int) -> list[dict]:
    rows = []
    for prompt in prompts:
        n_prompt = len(llm.tokenize(prompt.encode(), add_bos=True, special=True))
        start = time.perf_counter()
        first = None
        chunks = 0
        for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
            if chunk["choices"][0]["text"]:
                first = first or time.perf_counter()
                chunks += 1
        total = time.perf_counter() - start
        rows.append(row(n_prompt, chunks, (first or start) - start, total))
    return rows


def bench_runtime(rt: LlamaCppRuntime, nonces: list[int], max_tokens: int) -> list[dict]:
    rows = []
    for nonce in nonces:
        start = time.perf_counter()
        prompt = rt.render_chat(messages(nonce))  # rendering is part of what we add, so it is timed
        stream = rt.stream(prompt, GenerationParams(max_tokens=max_tokens, temperature=0.0))
        first = None
        for delta in stream:
            if delta.text:
                first = first or time.perf_counter()
        total = time.perf_counter() - start
        stats = stream.stats
        rows.append(row(stats.prompt_tokens, stats.completion_tokens, (first or start) - start, total))
    return rows


def bench_api(client, nonces: list[int], max_tokens: int) -> list[dict]:
    rows = []
    for nonce in nonces:
        start = time.perf_counter()
        first = None
        usage = None
        for chunk in client.chat.completions.create(
            model="default",
            messages=[{"role": m.role, "content": m.content} for m in messages(nonce)],
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
            if chunk.usage:
                usage = chunk.usage
        total = time.perf_counter() - start
        rows.append(row(usage.prompt_tokens, usage.completion_tokens, (first or start) - start, total))
    return rows


def wait_for_chat_model(http) -> None:
    while True:
        state = http.get("/readyz").json()["chat_model"]
        if state["state"] == "loaded":
            return
        if state["state"] == "failed":
            raise SystemExit(f"server could not load the model: {state['error']}")
        time.sleep(0.3)


def row(prompt_tokens: int, completion_tokens: int, ttft: float, total: float) -> dict:
    gen_s = max(total - ttft, 1e-9)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "ttft_s": ttft,
        "pp_tps": prompt_tokens / ttft if ttft else 0.0,
        # The first token comes with the prompt pass; the rest are the decode steps.
        "gen_tps": max(completion_tokens - 1, 0) / gen_s,
    }


def summary(rows: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=SMOLLM2.name, help="model name (built-in or manifest) or a .gguf path")
    ap.add_argument("--models-dir", default="./var/models")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="0: all available cores")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--no-api", dest="api", action="store_false", help="skip the HTTP path")
    args = ap.parse_args()

    spec, path = resolve_model(args.model, Path(args.models_dir))
    t = time.perf_counter()
    rt = LlamaCppRuntime(path, spec.name, context_length=args.ctx, threads=args.threads or None)
    rt_load = time.perf_counter() - t
    threads = rt.threads
    llama_cpp = _import_llama()
    t = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=args.ctx,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    direct_load = time.perf_counter() - t

    nonces = list(range(args.runs + 1))  # the first run of each path warms caches and is dropped
    prompts = [rt.render_chat(messages(n)) for n in nonces]  # separate Llama objects: no shared cache
    print(
        f"model {spec.name} ({path.stat().st_size / 1e6:.0f} MB), threads {threads}, ctx {args.ctx}, "
        f"max_tokens {args.max_tokens}, runs {args.runs} (+1 warm-up), greedy"
    )
    print(f"load: direct {direct_load:.2f} s, runtime {rt_load:.2f} s (runtime also loads a vocab-only copy)")
    env = {
        "APPLIANCE_LLM__MODEL": args.model,
        "APPLIANCE_LLM__MODELS_DIR": str(Path(args.models_dir).absolute()),
        "APPLIANCE_LLM__CONTEXT_LENGTH": str(args.ctx),
        "APPLIANCE_LLM__THREADS": str(threads),
    }
    with bench_server(env=env) if args.api else _no_server() as http:
        client = None
        if http is not None:
            import openai

            wait_for_chat_model(http)
            client = openai.OpenAI(
                base_url=str(http.base_url).rstrip("/") + "/v1",
                api_key=http.headers["authorization"][7:],
                max_retries=0,
                timeout=600,
            )
        # Interleaved run by run, so that load from other processes hits every path alike.
        rows: dict[str, list[dict]] = {"direct": [], "LlamaCppRuntime": [], "HTTP API": []}
        for nonce, prompt in zip(nonces, prompts, strict=True):
            rows["direct"] += bench_direct(llm, [prompt], args.max_tokens)
            rows["LlamaCppRuntime"] += bench_runtime(rt, [nonce], args.max_tokens)
            if client is not None:
                rows["HTTP API"] += bench_api(client, [nonce], args.max_tokens)
    llm.close()
    rt.close()
    results = {label: summary(r[1:]) for label, r in rows.items() if r}
    direct = results["direct"]

    print(f"\n{'':16}{'prompt tok':>11}{'gen tok':>9}{'TTFT ms':>9}{'prompt tok/s':>14}{'gen tok/s':>11}")
    for label, s in results.items():
        print(
            f"{label:<16}{s['prompt_tokens']:>11.0f}{s['completion_tokens']:>9.0f}{s['ttft_s'] * 1000:>9.0f}"
            f"{s['pp_tps']:>14.1f}{s['gen_tps']:>11.1f}"
        )
    print("\nratios to direct (1.00 = no overhead; TTFT: lower is better)")
    for label, s in results.items():
        if label != "direct":
            print(
                f"  {label:<16} prompt tok/s {s['pp_tps'] / direct['pp_tps']:.3f}   "
                f"gen tok/s {s['gen_tps'] / direct['gen_tps']:.3f}   TTFT {s['ttft_s'] / direct['ttft_s']:.3f}"
            )


@contextmanager
def _no_server():
    yield None


if __name__ == "__main__":
    main()
