"""Generate a QA set from a folder with the local LLM: ingests the folder in-process, prints the items and the report.

The folder goes into a throwaway appliance in a temp dir (real DuckDB, Tantivy, USearch, the
packaged embedder), its chunks are read back, and `appliance.evaluate.generate.generate_qa_items`
asks the model for checked answerable and unanswerable questions; retrieval over the collection is
the evidence that an unanswerable question's expected answer is absent. No server, no job.

    python scripts/bench/evalgen.py [--collection-folder data/sample] [--n 10] [--seed 0]
        [--model SmolLM2-135M-Instruct | Qwen2.5-Coder-1.5B-Instruct | PATH.gguf] [--models-dir ./var/models]
        [--unanswerable-fraction 0.2] [--out items.jsonl] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402

from appliance.config import load_settings  # noqa: E402
from appliance.core import Appliance  # noqa: E402
from appliance.evaluate.generate import collection_chunks, generate_qa_items  # noqa: E402
from appliance.models.manifest import SMOLLM2, load_runtime, resolve_model  # noqa: E402

COLLECTION = "evalgen"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collection-folder", default="data/sample", type=Path)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=SMOLLM2.name, help="a model name, or the path of a .gguf file")
    ap.add_argument("--models-dir", default="./var/models", type=Path)
    ap.add_argument("--unanswerable-fraction", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, help="also write the items here as JSONL")
    ap.add_argument("--json", action="store_true", help="one JSON object: items and report")
    args = ap.parse_args()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    spec, path = resolve_model(args.model, args.models_dir)
    runtime = load_runtime(spec, path, threads=args.threads, backend="llama.cpp")
    with tempfile.TemporaryDirectory(prefix="appliance-evalgen-") as tmp:
        settings = load_settings(
            overrides={"data_dir": str(Path(tmp) / "data"), "llm": {"load_at_start": False}}, environ={}
        )
        app = Appliance(settings)
        app.start()
        try:
            admin = app.access.system_scope()
            started = time.monotonic()
            job_id = app.knowledge.ingest_folder(admin, args.collection_folder, COLLECTION)
            if job_id is None:
                raise SystemExit(f"nothing to ingest in {args.collection_folder}")
            job = app.jobs.wait(job_id)
            chunks = collection_chunks(app.catalog, COLLECTION)
            say(
                f"ingested {args.collection_folder}: job {job.state}, {len(chunks)} chunks "
                f"in {time.monotonic() - started:.1f}s; generating {args.n} items with {runtime.name}"
            )

            def search(question: str) -> list[str]:
                hits = app.knowledge.search(admin, question, [COLLECTION], top_k=10).hits
                return [h.text for h in hits]

            def progress(produced: int, requested: int) -> None:
                print(f"\r  {produced}/{requested} items", end="", file=sys.stderr, flush=True)

            items, report = generate_qa_items(
                chunks,
                runtime,
                args.n,
                args.seed,
                unanswerable_fraction=args.unanswerable_fraction,
                search=search,
                progress=progress,
            )
            print(file=sys.stderr)
        finally:
            app.close()
            runtime.close()
    rows = msgspec.to_builtins(items)
    if args.out:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if args.json:
        print(
            json.dumps({"items": rows, "report": msgspec.to_builtins(report)}, indent=2, ensure_ascii=False)
        )
        return
    for row in rows:
        answers = " | ".join(row["answers"]) or "(unanswerable)"
        print(f"- [{row['kind']}] {row['question']}\n    answer: {answers}   gold: {', '.join(row['gold'])}")
    print("report:", json.dumps(msgspec.to_builtins(report), indent=2))


if __name__ == "__main__":
    main()
