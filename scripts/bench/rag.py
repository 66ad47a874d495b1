"""End-to-end latency of cited answers (/api/v1/knowledge/query), split by stage, p50 and p95.

Starts a server with the chosen chat model, ingests a folder (default: the sample corpus), asks a
fixed set of questions (non-streamed, then streamed) and prints each stage's latency: retrieval,
rerank (when configured), first token, generation, total; plus how many answers carried citations.

    python scripts/bench/rag.py [--model NAME] [--folder data/sample] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import bench_server, chat_model_ready, ingest_folder, percentile  # noqa: E402

QUESTIONS = [
    "What is the per diem for travel in Europe?",
    "How do I rotate an API key?",
    "What should I do in the first week of engineering onboarding?",
    "Who owns communication during an incident?",
    "When must expense claims be submitted?",
    "Where do visitors park at the Singapore office?",
    "What does a SEV1 incident require?",
    "How long is the retry backoff capped?",
    "Is alcohol reimbursed on business trips?",
    "What is the capital of Australia?",  # not in the documents: expect an honest no-answer
]
STAGES = ("retrieval_ms", "rerank_ms", "first_token_ms", "generation_ms", "total_ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="chat model name (default: the server's embedded default)")
    ap.add_argument("--models-dir", default="./var/models")
    ap.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[2] / "data" / "sample")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    env = {"APPLIANCE_LLM__MODELS_DIR": str(Path(args.models_dir).absolute())}
    if args.model:
        env["APPLIANCE_LLM__MODEL"] = args.model

    with bench_server(env=env) as http:
        state = chat_model_ready(http)
        files = ingest_folder(http, args.folder, "bench")
        print(
            f"model {state['name']} ({state['backend']}), {files} documents, {len(QUESTIONS)} questions x {args.rounds} rounds"
        )

        samples: dict[str, dict[str, list[float]]] = {
            "plain": {s: [] for s in STAGES},
            "stream": {s: [] for s in STAGES},
        }
        cited = no_answer = answers = 0
        for _ in range(args.rounds):
            for question in QUESTIONS:
                body = http.post(
                    "/api/v1/knowledge/query",
                    json={"query": question, "collections": ["bench"], "cache": False},
                ).json()
                answers += 1
                cited += bool(body["citations"])
                no_answer += body["answer"].startswith("The documents do not say")
                for stage in STAGES:
                    if body["timings"].get(stage) is not None:
                        samples["plain"][stage].append(body["timings"][stage])
                final = None
                with http.stream(
                    "POST",
                    "/api/v1/knowledge/query",
                    json={"query": question, "collections": ["bench"], "stream": True, "cache": False},
                ) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            event = json.loads(line[6:])
                            if event["type"] == "answer":
                                final = event
                for stage in STAGES:
                    if final and final["timings"].get(stage) is not None:
                        samples["stream"][stage].append(final["timings"][stage])

        print(f"\n{'stage':<16}{'plain p50':>11}{'plain p95':>11}{'stream p50':>12}{'stream p95':>12}  (ms)")
        for stage in STAGES:
            p, s = samples["plain"][stage], samples["stream"][stage]
            if not p and not s:
                continue
            print(
                f"{stage:<16}{percentile(p, 50):>11.0f}{percentile(p, 95):>11.0f}"
                f"{percentile(s, 50):>12.0f}{percentile(s, 95):>12.0f}"
            )
        print(f"\nanswers with citations: {cited}/{answers}; honest no-answers: {no_answer}/{answers}")


if __name__ == "__main__":
    main()
